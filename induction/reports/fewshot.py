"""`induction fewshot`'s report: accuracy by number of demonstrations under label manipulations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from induction.measures.fewshot.ablation import FewShotAblation, HeadAttribution
from induction.measures.fewshot.evaluate import ShotResult
from induction.measures.fewshot.vectors import FunctionVectors
from induction.reports import columns as cols
from induction.reports.base import _fmt_ci, _heads, display_name, to_dataframe


@dataclass
class FewShotReport:
    """`induction fewshot`: accuracy vs number of shots per label variant, and optionally the head
    ablation, the per-label-variant head attribution and the function vectors.

    JSON (CONTRACT): ``{"model", "task", "labels", "shots": [{"labels", "k", "accuracy", "accuracy_ci",
    "accuracy_gold", "mean_logprob", ...}], "provenance"}``. With one label variant ``labels`` is its
    name; with several it is their list and every shot entry names its variant in ``"labels"``.
    Optional parts: ``"bayes_flipped"`` (``--task prior`` on a prior-stream model: per k, the
    Bayes-optimal predictor's ``p_answer`` / ``p_gold`` on flipped labels, to set beside the shots'
    ``mean_prob`` / ``mean_prob_gold``), ``"ablation"`` (`FewShotAblation.to_dict`), ``"attribution"``
    (`HeadAttribution.to_dict`) and ``"function_vectors"`` (`FunctionVectors.to_json`: per task,
    ``{"task", "heads": [{"layer", "head", "indirect_effect", "in_vector"}], "zero_shot_accuracy",
    "fv_zero_shot_accuracy", ...}``).
    """

    model: str
    task: str
    labels: list[str]
    shots: list[ShotResult]
    ablation: FewShotAblation | None = None
    attribution: HeadAttribution | None = None
    function_vectors: FunctionVectors | None = None
    bayes_flipped: list[dict[str, Any]] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    title = "Few-shot accuracy"
    base_columns = cols.FEWSHOT
    default_columns = cols.DEFAULT_COLUMNS["fewshot"]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.base_columns + (cols.FEWSHOT_TASKS if any(s.task_probs for s in self.shots) else ())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model, "task": self.task,
            "labels": self.labels[0] if len(self.labels) == 1 else list(self.labels),
            "shots": [s.to_dict() for s in self.shots],
        }
        if self.bayes_flipped is not None:
            out["bayes_flipped"] = self.bayes_flipped
        if self.ablation is not None:
            out["ablation"] = self.ablation.to_dict()
        if self.attribution is not None:
            out["attribution"] = self.attribution.to_dict()
        if self.function_vectors is not None:
            out["function_vectors"] = self.function_vectors.to_json()
        out["provenance"] = self.provenance
        return out

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"labels": s.labels, "k": s.k, "accuracy": s.accuracy,
             "ci_low": None if s.accuracy_ci is None else s.accuracy_ci[0],
             "ci_high": None if s.accuracy_ci is None else s.accuracy_ci[1],
             "accuracy_gold": s.accuracy_gold, "mean_logprob": s.mean_logprob,
             "mean_logprob_gold": s.mean_logprob_gold, "n_prompts": s.n_prompts,
             "task_probs": None if not s.task_probs else " ".join(f"{t} {p:.2f}" for t, p in s.task_probs.items())}
            for s in self.shots
        ]

    def summary(self) -> list[str]:
        lines = [
            f"model: {self.model}; task: {self.task}; labels: {', '.join(self.labels)}",
            "accuracy: top-1 match with the answer the demonstrations imply; accuracy_gold: with the task's gold label",
        ]
        if any(s.task_probs for s in self.shots):
            lines.append("task_probs: mean probability of each task's answer for the query (which task the model infers)")
        if self.bayes_flipped is not None:
            model = {s.k: s for s in self.shots if s.labels == "flipped"}
            lines.append("flipped labels, P(in-context answer) / P(prior answer): model vs the Bayes-optimal predictor of "
                         "the prior stream: " + "; ".join(
                             f"k={b['k']} {model[b['k']].mean_prob:.2f}/{model[b['k']].mean_prob_gold:.2f} vs "
                             f"{b['p_answer']:.2f}/{b['p_gold']:.2f}" for b in self.bayes_flipped))
        if self.ablation is not None:
            a, d = self.ablation.ablation, self.ablation.to_dict()
            heads = ", ".join(f"L{layer}H{h}" for layer, h in a.target.heads)
            lines.append(f"head ablation ({a.method}, k={d['k']}, {d['n_prompts']} prompts, labels {d['labels']}):")
            lines.append(f"  unablated accuracy {d['baseline']['accuracy']:.3f}{_fmt_ci(d['baseline']['accuracy_ci'])}")
            lines.append(f"  heads {heads} ablated: {d['top']['accuracy']:.3f}{_fmt_ci(d['top']['accuracy_ci'])}")
            lines.append(
                f"  {len(a.random)} layer-matched random sets ({a.n_distinct_random_sets} distinct) ablated: "
                f"mean {d['random_accuracy']:.3f}{_fmt_ci(d['random_accuracy_ci'])} (over draws)"
            )
            lines.append(f"  random minus ablated: {d['drop_difference']:.3f}{_fmt_ci(d['drop_difference_ci'])}")
        if self.attribution is not None:
            lines += _attribution_summary(self.attribution)
        if self.function_vectors is not None:
            lines += _vectors_summary(self.function_vectors)
        return lines

    def to_dataframe(self):
        return to_dataframe(self)

    def plot(self, kind: str = "shots", style=None):
        """``shots``: accuracy vs k per label variant; ``ablation``: the head-ablation comparison;
        ``attribution``: heads per label variant; ``vectors``: the function vectors; ``tasks``: the
        probability of each task's answer vs k (tasks-stream models)."""
        from induction import plots

        name = display_name(self.model)
        if kind == "shots":
            return plots.apply_style(plots.plot_fewshot(self.shots, self.labels, title=f"Few-shot {self.task} — {name}"), style)
        if kind == "tasks":
            return plots.apply_style(plots.plot_task_probs(self.shots, self.task, title=f"Task inference on {self.task} prompts — {name}"), style)
        parts = {"ablation": (self.ablation, "ablate > 0"), "attribution": (self.attribution, "attribute > 0"),
                 "vectors": (self.function_vectors, "function_vectors")}
        if kind not in parts:
            raise ValueError(f"unknown few-shot plot {kind!r}; choose shots, tasks, {', '.join(parts)}")
        part, option = parts[kind]
        if part is None:
            raise ValueError(f"this report has no {kind} (run with {option})")
        if kind == "ablation":
            return plots.apply_style(plots.plot_fewshot_ablation(part), style)
        if kind == "attribution":
            return plots.apply_style(plots.plot_head_attribution(part, title=f"Heads per label variant: {self.task} — {name}"), style)
        return plots.apply_style(plots.plot_function_vectors(part, title=f"Function vectors — {name}"), style)


def _attribution_summary(attr: HeadAttribution) -> list[str]:
    lines = [f"head attribution ({attr.method} ablation, k={attr.k}); set: {_heads(attr.heads)} "
             "(largest in-context accuracy lost when ablated alone, summed over label variants)"]
    for v in attr.variants:
        d = v.set_ablation.to_dict()
        worst = sorted(((float(v.head_accuracy[lh]), lh) for lh in
                        ((layer, h) for layer in range(v.head_accuracy.shape[0]) for h in range(v.head_accuracy.shape[1]))))[:3]
        lines.append(
            f"  {v.labels}: accuracy {v.accuracy:.3f} (vs gold {v.accuracy_gold:.3f}); alone, "
            + ", ".join(f"L{lh[0]}H{lh[1]} -> {acc:.2f}" for acc, lh in worst)
            + f"; set -> {d['top']['accuracy']:.3f} (vs gold {d['top']['accuracy_gold']:.3f}), "
            f"layer-matched random -> {d['random_accuracy']:.3f} (vs gold {d['random_accuracy_gold']:.3f}; "
            f"{d['n_distinct_random_sets']} distinct sets)"
        )
    return lines


def _vectors_summary(fv: FunctionVectors) -> list[str]:
    c = fv.config
    lines = [f"function vectors: heads {_heads(fv.heads)} (largest mean indirect effect; {c.k}-shot prompts, "
             f"labels shuffled for the effect), added at blocks.{fv.layer}.hook_attn_out at the query"]
    for t in fv.tasks:
        bare, fmt = t.zero_shot["bare"], t.zero_shot["format"]
        top = max(((float(t.indirect_effects[lh]), lh) for lh in fv.heads))
        lines.append(f"  {t.task}: zero-shot {bare.accuracy:.3f} -> {bare.fv_accuracy:.3f} with the vector "
                     f"(after {c.n_filler} uninformative demonstrations: {fmt.accuracy:.3f} -> {fmt.fv_accuracy:.3f}); "
                     f"largest indirect effect L{top[1][0]}H{top[1][1]} {top[0]:.3f}")
    n = len(fv.tasks)
    lines.append(f"  mean lift: {sum(t.zero_shot['bare'].lift for t in fv.tasks) / n:+.3f} zero-shot, "
                 f"{sum(t.zero_shot['format'].lift for t in fv.tasks) / n:+.3f} after uninformative demonstrations")
    return lines
