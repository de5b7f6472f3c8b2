"""Reports: the objects that the CLI prints, notebooks display and figures read; and their provenance.

Every report is a plain dataclass with
- `to_json()`: the CONTRACT's JSON dict (with "provenance"),
- `rows()`: the table rows (list of flat dicts), `columns`, `title`, `summary()`,
- `to_dataframe()`: `rows()` as a pandas DataFrame,
- `plot()`: its figure (plotly), drawn by `induction.plots` from the report's contents.
`format_report(report, fmt)` renders any of them as table | json | csv | markdown, so every number
has one source. The jobs (`induction.jobs`) build reports; compute modules return plain results and
never import this module, except `induction.train`, which records `package_versions()` in its runs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol, Sequence, runtime_checkable

from torch import Tensor

from induction.bench import ModelBench
from induction.effects import HeadSetAblation
from induction.fewshot.ablation import FewShotAblation, HeadAttribution
from induction.fewshot.evaluate import ShotResult
from induction.fewshot.vectors import FunctionVectors
from induction.fileio import json_default
from induction.formation import CheckpointScores, PhaseChange
from induction.icl import ICLScore
from induction.offsets import MIN_SHIFT, ImpliedCircuit
from induction.scores import SCORE_NAMES, HeadScores

FORMATS = ("table", "json", "csv", "markdown")


@runtime_checkable
class Report(Protocol):
    title: str
    columns: tuple[str, ...]

    def to_json(self) -> dict[str, Any]: ...
    def rows(self) -> list[dict[str, Any]]: ...
    def summary(self) -> list[str]: ...


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("induction-toolkit", "torch", "transformer-lens", "transformers", "numpy", "einops", "plotly"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(
    model_spec: str | None,
    checkpoint: Any = None,
    seed: int | None = None,
    settings: dict[str, Any] | None = None,
    runtime_s: float | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """What every report records about how it was made (device and dtype: where the model ran)."""
    return {
        "versions": package_versions(),
        "model": model_spec,
        "checkpoint": checkpoint,
        "seed": seed,
        "device": device,
        "dtype": dtype,
        "settings": settings or {},
        "runtime_s": None if runtime_s is None else round(runtime_s, 3),
        "command": " ".join(["induction", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("induction") else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
    }


def head_sort_key(rec: dict[str, Any]) -> tuple:
    """Induction heads first, then by prefix-matching score, strongest first."""
    return (not rec.get("is_induction", False), -rec.get("prefix_matching", 0.0), rec["layer"], rec["head"])


@dataclass
class ScanReport:
    """`induction scan`: every head's scores and the model's ICL score.

    `circuits`: for each shifted induction head with a layer below it, the layer-below heads its
    offset implies (`induction.offsets.implied_circuit`).
    """

    model: str
    checkpoint: Any
    scores: HeadScores
    icl: ICLScore | None
    provenance: dict[str, Any] = field(default_factory=dict)
    circuits: list[ImpliedCircuit] = field(default_factory=list)

    title = "Head scores"
    columns = ("layer", "head", *SCORE_NAMES, "is_induction", "induction_offset", "offset_prefix_matching",
               "offset_copying", "is_shifted_induction")

    def heads(self) -> list[dict[str, Any]]:
        return self.scores.to_records()

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "checkpoint": self.checkpoint,
            "icl_score": None if self.icl is None else self.icl.score,
            "icl": None if self.icl is None else self.icl.to_dict(),
            "induction_heads": [list(lh) for lh in self.scores.induction_heads()],
            "shifted_induction_heads": [list(lh) for lh in self.scores.shifted_induction_heads()],
            "offsets": {"scored": list(self.scores.scored_offsets()),
                        "requested": [self.scores.config.min_offset, self.scores.config.max_offset],
                        "min_support": self.scores.config.offset_support},
            "implied_circuits": [c.to_dict() for c in self.circuits],
            "thresholds": {
                "prefix_matching": self.scores.config.prefix_threshold,
                "copying": self.scores.config.copying_threshold,
            },
            "copying_estimate": self.scores.copying_method,
            "heads": self.heads(),
            "provenance": self.provenance,
        }

    def rows(self) -> list[dict[str, Any]]:
        return sorted((_flat(rec, self.columns) for rec in self.heads()), key=head_sort_key)

    def summary(self) -> list[str]:
        heads = self.scores.induction_heads()
        names = ", ".join(f"L{lh[0]}H{lh[1]}" for lh in heads) or "none"
        lines = [f"model: {self.model}" + (f" (checkpoint {self.checkpoint})" if self.checkpoint is not None else "")]
        lines.append(
            f"induction heads: {names}  (prefix_matching >= {self.scores.config.prefix_threshold}, "
            f"copying >= {self.scores.config.copying_threshold})"
        )
        lines += self.shifted_lines()
        lines.append(copying_method_line(self.scores.copying_method, float(self.scores.copying_se.max())))
        if self.icl is not None:
            ci = f" [95% CI {self.icl.ci[0]:.3f}, {self.icl.ci[1]:.3f}]" if self.icl.ci else ""
            lines.append(
                f"ICL score: {self.icl.score:.3f}{ci}  (loss at token {self.icl.late_pos} minus token "
                f"{self.icl.early_pos}; {self.icl.data})"
            )
        return lines

    def shifted_lines(self) -> list[str]:
        """The shifted induction heads with their offsets, each one's implied circuit, and the offsets
        the prompts could not score (when they cut the requested range short)."""
        s = self.scores
        heads = s.shifted_induction_heads()
        names = ", ".join(f"L{lh[0]}H{lh[1]} (d={int(s.induction_offset[lh])}, {float(s.offset_prefix_matching[lh]):.2f})"
                          for lh in heads) or "none"
        lines = [f"shifted induction heads (d >= {MIN_SHIFT}): {names}  (offset_prefix_matching >= "
                 f"{s.config.prefix_threshold}, offset_copying >= {s.config.copying_threshold})"]
        circuits = {(c.layer, c.head): c for c in self.circuits}
        for lh in heads:
            c = circuits.get(lh)
            if c is None:
                lines.append(f"  L{lh[0]}H{lh[1]}: no layer below it, so no implied circuit")
                continue
            lines.append(f"  L{lh[0]}H{lh[1]} d={c.offset}: implies " + circuit_text(c))
        scored, cfg = s.scored_offsets(), s.config
        if scored and (scored[0] > cfg.min_offset or scored[-1] < cfg.max_offset):
            lines.append(f"offsets scored: {scored[0]}..{scored[-1]} of {cfg.min_offset}..{cfg.max_offset} (an offset "
                         f"needs a period longer than it in {cfg.offset_support:.0%} of the prompts: --max-period, --seq-len)")
        return lines

    def to_dataframe(self):
        return to_dataframe(self)

    def plot(self, kind: str = "heatmap"):
        """``heatmap`` (prefix-matching and copying), ``scatter`` (Olsson et al.), or one score's name."""
        from induction import plots

        return plots.plot_scan(self.scores, name=display_name(self.model), kind=kind)


def circuit_text(c: ImpliedCircuit) -> str:
    """One line: the heads an offset-d head's key, query and value read, by attention lag and by composition."""
    def heads(hs) -> str:
        return ", ".join(f"L{layer}H{h}" for layer, h in hs)

    lags = {(b.layer, b.head): b.lag for b in c.below}

    def by_lag(hs, none: str) -> str:
        return ", ".join(f"L{layer}H{h} (lag {lags[(layer, h)]})" for layer, h in hs) or none

    def comp(h) -> str:
        return "-" if h is None else heads([h])

    return (f"key {by_lag(c.key_by_lag, '?')}, query {by_lag(c.query_by_lag, 'the token itself')}, value "
            f"{by_lag(c.value_by_lag, 'the token itself')} (by attention lag: c_K - c_Q = {c.offset}, c_V = "
            f"{c.offset - 1}); by composition K {comp(c.key_by_composition)}, Q {comp(c.query_by_composition)}, "
            f"V {comp(c.value_by_composition)}")


def copying_method_line(method: dict[str, Any], max_se: float | None = None) -> str:
    """One line saying how the copying score was computed (`ScoreConfig.copying_method`)."""
    if method.get("method") != "sampled":
        return "copying: exhaustive (every source scored)"
    line = (f"copying: estimated from {method['sources_per_prompt']} sources per prompt and head, drawn by attention "
            f"(seed {method['seed']}); copying_se = its sampling standard error")
    return line + (f" (largest {max_se:.3f})" if max_se is not None else "")


# ---- formatting ------------------------------------------------------------------------------

def _flat(rec: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    return {c: rec.get(c) for c in columns}


def to_dataframe(report: Report):
    import pandas as pd

    return pd.DataFrame(report.rows(), columns=list(report.columns))


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if value is None:
        return ""
    return str(value)


def format_report(report: Report, fmt: str = "table", width: int | None = None) -> str:
    """Render a report as table (rich), json, csv or markdown."""
    if fmt == "json":  # strict JSON: a number that is not finite (unmeasured, diverged) is null
        return json.dumps(_finite_json(report.to_json()), indent=2, default=json_default, allow_nan=False) + "\n"
    rows = report.rows()
    cols = list(report.columns)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in cols})
        return buf.getvalue()
    if fmt == "markdown":
        lines = [f"## {report.title}", ""] + [f"- {line}" for line in report.summary()] + [""]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    if fmt == "table":
        return _rich_table(report, rows, cols, width)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _finite_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite float (tensor and numpy scalars included) replaced by None."""
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "ndim"):  # tensors and numpy arrays or scalars
        return _finite_json(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _rich_table(report: Report, rows: list[dict[str, Any]], cols: list[str], width: int | None) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=report.title, title_justify="left")
    for c in cols:
        table.add_column(c, justify="left" if c in ("layer", "head", "is_induction", "is_shifted_induction", "method") else "right")
    for row in rows:
        style = "bold green" if row.get("is_induction") else ("bold yellow" if row.get("is_shifted_induction") else None)
        table.add_row(*(_cell(row.get(c)) for c in cols), style=style)
    buf = io.StringIO()
    tty = sys.stdout.isatty()  # colour (induction heads bold green, shifted ones bold yellow) only on a terminal
    console = Console(file=buf, width=width or 160, force_terminal=tty, color_system="standard" if tty else None)
    console.print(table)
    for line in report.summary():
        console.print(line, highlight=False, soft_wrap=True)
    return buf.getvalue()


# ---- the other reports -------------------------------------------------------------------------

@dataclass
class TrackReport:
    """`induction track`: scores over every checkpoint of a run, and the phase change.

    JSON (CONTRACT): ``{"run", "checkpoints": [{"step", "tokens_seen", "loss", "held_out_loss",
    "icl_score", "heads": [HEAD...]}], "phase_change": {"step", "start_step", "end_step"} | null,
    "provenance"}``. With `--ablate` (README, "Ablation over training"): each HEAD has
    ``ablation_effect``, each checkpoint ``ablation`` = ``{"method", "baseline", "induction_set"}``
    (`induction.formation.induction_set_block`), and the report ``ablation`` = ``{"method",
    "induction_heads", "n_draws", "control_heads", "control_unavailable"}``.
    """

    run: str
    checkpoints: list[CheckpointScores]
    phase_change: PhaseChange | None
    provenance: dict[str, Any] = field(default_factory=dict)
    ablation: dict[str, Any] | None = None

    title = "Induction-head formation"
    # --ablate: the final induction heads' joint effect, their summed single-head effects, the random
    # control's mean effect and the joint effect's share of the ICL score (`induction_set_block`).
    ABLATION_COLUMNS = ("joint_effect", "sum_single", "control", "share")

    @property
    def columns(self) -> tuple[str, ...]:
        base = ("step", "tokens_seen", "loss", "held_out_loss", "icl_score", "best_head",
                "best_prefix_matching", "best_copying", "n_induction_heads")
        return base + (self.ABLATION_COLUMNS if self.ablation is not None else ())

    def to_json(self) -> dict[str, Any]:
        out = {
            "run": self.run,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "phase_change": None if self.phase_change is None else self.phase_change.to_dict(),
        }
        if self.ablation is not None:
            out["ablation"] = self.ablation
        return {**out, "provenance": self.provenance}

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for c in self.checkpoints:
            best = c.best_head()
            row = {
                "step": c.step, "tokens_seen": c.tokens_seen, "loss": c.loss, "held_out_loss": c.held_out_loss,
                "icl_score": c.icl_score, "best_head": f"L{best['layer']}H{best['head']}",
                "best_prefix_matching": best["prefix_matching"], "best_copying": best["copying"],
                "n_induction_heads": len(c.induction_heads),
            }
            block = c.induction_set
            if self.ablation is not None and block is not None:
                row.update(joint_effect=block["joint_effect"], sum_single=block["summed_single_effects"],
                           control=block["control_mean_effect"], share=block["share"])
            out.append(row)
        return out

    def summary(self) -> list[str]:
        lines = [f"run: {self.run} ({len(self.checkpoints)} checkpoints)"]
        pending = self.provenance.get("settings", {}).get("pending_checkpoint")
        if pending:
            lines.append(f"left out: {pending['name']}, still being written ({pending['reason']}); rerun to score it")
        if not self.checkpoints:
            return lines
        pc = self.phase_change
        if pc is None:
            lines.append("phase change: none (the best prefix-matching score never reached the threshold)")
        else:
            lines.append(f"phase change: step {pc.step} (10%-90% complete between steps {pc.start_step} and {pc.end_step})")
        first, last = self.checkpoints[0], self.checkpoints[-1]
        if first.icl_score is not None and last.icl_score is not None:
            lines.append(f"ICL score: {first.icl_score:.3f} at step {first.step} -> {last.icl_score:.3f} at step {last.step}")
        heads = ", ".join(f"L{layer}H{head}" for layer, head in last.induction_heads) or "none"
        lines.append(f"induction heads at step {last.step}: {heads}")
        shifted = [h for h in last.heads if h.get("is_shifted_induction")]
        if shifted:
            lines.append(f"shifted induction heads at step {last.step}: " + ", ".join(
                f"L{h['layer']}H{h['head']} (d={h['induction_offset']}, {h['offset_prefix_matching']:.2f})" for h in shifted))
        if self.ablation is not None:
            lines += self.ablation_summary()
        method = self.provenance.get("settings", {}).get("copying_estimate")
        if method:
            lines.append(copying_method_line(method))
        return lines

    def ablation_summary(self) -> list[str]:
        """`--ablate`: the final induction heads' joint and summed single-head effects on the ICL score
        before and after the phase change (else at the first and last checkpoint), and the control."""
        abl = self.ablation or {}
        heads = _heads([tuple(h) for h in abl.get("induction_heads") or []])
        method = abl.get("method")
        points = [c for c in self.checkpoints if c.induction_set is not None]
        if not points:
            return [f"ablation ({method}): {abl.get('control_unavailable') or 'no induction-head set'}"]
        pc = self.phase_change
        if pc is not None:
            groups = [(f"before the phase change (steps <= {pc.start_step})", [c for c in points if c.step <= pc.start_step]),
                      (f"after it (steps >= {pc.end_step})", [c for c in points if c.step >= pc.end_step])]
        else:
            groups = [(f"at step {points[0].step}", points[:1]), (f"at step {points[-1].step}", points[-1:])]
        groups = [(label, group) for label, group in groups if group]

        def span(key: str) -> str:
            parts = []
            for label, group in groups:
                values = [c.induction_set[key] for c in group if c.induction_set[key] is not None]
                if values:
                    lo, hi = min(values), max(values)
                    parts.append(f"{lo:+.2f}" + ("" if hi == lo else f"..{hi:+.2f}") + f" {label}")
            return "; ".join(parts) or "n/a"

        lines = [f"ablation ({method}) of the final induction heads {heads} together: ICL score change "
                 f"{span('joint_effect')}",
                 f"sum of their single-head ablation effects: {span('summed_single_effects')}",
                 f"share of the ICL score they carry (joint effect / -ICL score): {span('share')}"]
        if abl.get("control_heads"):
            lines.append(f"layer-matched random heads ablated together ({abl.get('n_draws')} draws, mean): "
                         f"{span('control_mean_effect')}")
        else:
            lines.append(f"ablation control: none ({abl.get('control_unavailable')})")
        return lines

    def to_dataframe(self, per_head: bool = False):
        """One row per checkpoint (`rows()`), or with per_head=True one row per (checkpoint, head)."""
        import pandas as pd

        if not per_head:
            return pd.DataFrame(self.rows(), columns=list(self.columns))
        records = []
        for c in self.checkpoints:
            for h in c.heads:
                records.append({"step": c.step, "tokens_seen": c.tokens_seen, "icl_score": c.icl_score,
                                "held_out_loss": c.held_out_loss, **{k: v for k, v in h.items() if not k.endswith("_ci")}})
        return pd.DataFrame(records)

    def plot(self, kind: str = "formation"):
        """``formation`` (curves over training, phase change shaded) or ``mosaic`` (head heatmaps at
        checkpoints bracketing the phase change)."""
        from induction import plots

        if kind == "formation":
            return plots.plot_formation(self.checkpoints, self.phase_change, name=display_name(self.run),
                                        ablation=self.ablation)
        if kind == "mosaic":
            return plots.plot_mosaic(self.checkpoints, self.phase_change, name=display_name(self.run))
        raise ValueError(f"unknown track plot {kind!r}; choose formation or mosaic")


@dataclass
class HeadEffectReport:
    """`induction ablate` / `induction patch`: each head's value of the metric and its effect.

    `values[l, h]` is the metric with head (l, h) ablated (or patched); `effect = value - baseline`,
    where the baseline is the unablated run (ablation) or the corrupted run (patching). `control`,
    when present, compares ablating a head set with layer-matched random sets.
    """

    model: str
    command: str
    method: str
    metric: str
    baseline: float
    values: Tensor
    reference: float | None = None
    control: HeadSetAblation | None = None
    control_label: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    columns = ("layer", "head", "value", "effect")

    @property
    def title(self) -> str:
        return f"Head effects on {self.metric} ({self.command}, {self.method})"

    @property
    def effects(self) -> Tensor:
        return self.values - self.baseline

    def heads(self) -> list[dict[str, Any]]:
        out = []
        for layer in range(self.values.shape[0]):
            for head in range(self.values.shape[1]):
                value = float(self.values[layer, head])
                out.append({"layer": layer, "head": head, "value": value, "effect": value - self.baseline})
        return out

    def to_json(self) -> dict[str, Any]:
        out = {"model": self.model, "method": self.method, "metric": self.metric, "baseline": self.baseline,
               "heads": self.heads(), "provenance": self.provenance}
        if self.reference is not None:
            out["clean"] = self.reference
        if self.control is not None:
            out["control"] = self.control_json()
        return out

    def control_json(self) -> dict[str, Any] | None:
        """The head-set control (CONTRACT's ``control``): the set's value and effect, and the random sets'."""
        c = self.control
        if c is None:
            return None
        rv = c.random_means()
        value, random_mean = c.target.mean(), float(rv.mean())
        lo, hi = c.random_ci() or (random_mean, random_mean)
        return {
            "heads": [list(h) for h in c.target.heads],
            "heads_label": self.control_label or ", ".join(f"L{layer}H{h}" for layer, h in c.target.heads),
            "value": value, "effect": value - self.baseline,
            "random_sets": [[list(h) for h in r.heads] for r in c.random],
            "random_values": rv.tolist(), "random_mean": random_mean, "random_effect": random_mean - self.baseline,
            "random_ci": [lo, hi], "random_effect_ci": [lo - self.baseline, hi - self.baseline],
            "distinct_random_sets": c.n_distinct_random_sets,
        }

    def rows(self) -> list[dict[str, Any]]:
        return sorted(self.heads(), key=lambda r: -abs(r["effect"]))

    def summary(self) -> list[str]:
        what = "unablated run" if self.command == "ablate" else "corrupted run"
        lines = [f"model: {self.model}", f"baseline ({what}): {self.baseline:.4f}"]
        if self.reference is not None:
            lines.append(f"clean run: {self.reference:.4f}")
        top = self.rows()[:3]
        lines.append("largest effects: " + ", ".join(f"L{r['layer']}H{r['head']} {r['effect']:+.3f}" for r in top))
        c = self.control_json()
        if c:
            lines.append(
                f"ablating {c['heads_label']} together: {c['value']:.4f} (effect {c['effect']:+.3f}); "
                f"{len(c['random_values'])} layer-matched random sets ({c['distinct_random_sets']} distinct): mean "
                f"{c['random_mean']:.4f} [95% CI {c['random_ci'][0]:.4f}, {c['random_ci'][1]:.4f}]"
            )
        return lines

    def to_dataframe(self):
        return to_dataframe(self)

    def plot(self):
        """The layer x head heatmap of each head's effect."""
        from induction import plots

        what = "ablating" if self.command == "ablate" else "patching"
        return plots.plot_effects(self.effects, self.metric, title=f"Effect of {what} each head on {self.metric} ({self.method})")


def _fmt_ci(ci: Sequence[float] | None) -> str:
    return "" if ci is None else f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}]"


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
    base_columns = ("labels", "k", "accuracy", "ci_low", "ci_high", "accuracy_gold", "mean_logprob", "mean_logprob_gold",
                    "n_prompts")

    @property
    def columns(self) -> tuple[str, ...]:
        return self.base_columns + (("task_probs",) if any(s.task_probs for s in self.shots) else ())

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

    def plot(self, kind: str = "shots"):
        """``shots``: accuracy vs k per label variant; ``ablation``: the head-ablation comparison;
        ``attribution``: heads per label variant; ``vectors``: the function vectors; ``tasks``: the
        probability of each task's answer vs k (tasks-stream models)."""
        from induction import plots

        name = display_name(self.model)
        if kind == "shots":
            return plots.plot_fewshot(self.shots, self.labels, title=f"Few-shot {self.task} — {name}")
        if kind == "tasks":
            return plots.plot_task_probs(self.shots, self.task, title=f"Task inference on {self.task} prompts — {name}")
        parts = {"ablation": (self.ablation, "ablate > 0"), "attribution": (self.attribution, "attribute > 0"),
                 "vectors": (self.function_vectors, "function_vectors")}
        if kind not in parts:
            raise ValueError(f"unknown few-shot plot {kind!r}; choose shots, tasks, {', '.join(parts)}")
        part, option = parts[kind]
        if part is None:
            raise ValueError(f"this report has no {kind} (run with {option})")
        if kind == "ablation":
            return plots.plot_fewshot_ablation(part)
        if kind == "attribution":
            return plots.plot_head_attribution(part, title=f"Heads per label variant: {self.task} — {name}")
        return plots.plot_function_vectors(part, title=f"Function vectors — {name}")


def _heads(heads: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"L{layer}H{h}" for layer, h in heads)


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


@dataclass
class TrainReport:
    """`induction train`: the run directory's checkpoints and settings, read from its manifest.

    JSON: ``{"run", "complete", "train_config", "data", "train_seconds", "checkpoints": [{"step",
    "path", "tokens_seen", "loss"}], "provenance"}``.
    """

    run: str
    manifest: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    title = "Training run"
    columns = ("step", "tokens_seen", "loss", "path")

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "run": self.run, "complete": m.get("complete"), "train_config": m.get("train_config"),
            "data": m.get("data"), "train_seconds": m.get("train_seconds"), "checkpoints": m["checkpoints"],
            "provenance": self.provenance,
        }

    def rows(self) -> list[dict[str, Any]]:
        return [{c: entry.get(c) for c in self.columns} for entry in self.manifest["checkpoints"]]

    def summary(self) -> list[str]:
        m = self.manifest
        cfg = m.get("train_config") or {}
        kind = "attention-only" if (cfg.get("model") or {}).get("attn_only", True) else "GPT-2-style (LayerNorm + MLP)"
        model, optim, schedule = (cfg.get(part) or {} for part in ("model", "optim", "schedule"))
        lines = [f"run: {self.run} ({'complete' if m.get('complete') else 'incomplete: continue with --resume'})",
                 f"model: {model.get('n_layers')}-layer {kind}, d_model {model.get('d_model')}, {model.get('n_heads')} heads; "
                 f"{schedule.get('steps')} steps of {(m.get('resolved') or optim).get('batch_size')} sequences, "
                 f"seed {cfg.get('seed')}"]
        if m["checkpoints"]:
            last = m["checkpoints"][-1]
            lines.append(f"{len(m['checkpoints'])} checkpoints; last: step {last['step']}, loss {last['loss']:.3f}; "
                         f"training time {m.get('train_seconds', 0.0):.1f} s")
        return lines

    def to_dataframe(self):
        return to_dataframe(self)


@dataclass
class BenchReport:
    """`induction bench`: every method scored against hand-built models with known heads (`induction.bench`).

    JSON (CONTRACT): ``{"models": [{"name", "truth": {...}, "methods": [{"method", "precision",
    "recall", "true_head_rank"}]}], "provenance"}``; each model also has ``description``,
    ``baseline`` (its unablated metric) and ``runtime_s``, and each method ``truth`` (the truth it is scored against),
    ``named``, ``true_head_ranks`` and ``scores`` (the per-head score it orders heads by).
    """

    models: list[ModelBench]
    metric: str
    name_fraction: float
    provenance: dict[str, Any] = field(default_factory=dict)

    title = "Methods against hand-built models with known heads"
    columns = ("model", "method", "truth", "n_true", "n_named", "precision", "recall", "true_head_rank")

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [{"name": m.name, "description": m.description, "truth": m.truth.to_dict(),
                        "baseline": m.baseline, "runtime_s": round(m.runtime_s, 3),
                        "methods": [s.to_dict() for s in m.methods]} for m in self.models],
            "metric": self.metric,
            "name_fraction": self.name_fraction,
            "provenance": self.provenance,
        }

    def rows(self) -> list[dict[str, Any]]:
        return [{"model": m.name, "method": s.method, "truth": s.truth, "n_true": len(m.truth.heads(s.truth)),
                 "n_named": len(s.named), "precision": s.precision, "recall": s.recall,
                 "true_head_rank": s.true_head_rank}
                for m in self.models for s in m.methods]

    def summary(self) -> list[str]:
        lines = [
            "truth: induction = canonical induction heads; shifted_induction = offset >= 2 induction heads; "
            "circuit = both kinds and the previous-token/offset heads they read",
            f"a causal method names the heads whose support for ICL ({self.metric}: the rise when ablated, "
            f"the fall when patched in) is >= {self.name_fraction:g} x the largest; the detectors name the heads "
            "they flag",
            "true_head_rank: how far down the method's order the last true head sits (ideal: n_true; ties count "
            "against the method); blank precision/recall: nothing named / nothing true",
        ]
        for m in self.models:
            lines.append(f"{m.name}: {m.description}; {self.metric} {m.baseline:.3f} unablated; {m.runtime_s:.1f} s")
        return lines

    def to_dataframe(self):
        return to_dataframe(self)

    def plot(self):
        """Method x model heatmaps of recall and precision (the rank of the last true head as text)."""
        from induction import plots

        return plots.plot_bench(self.models, title=f"Methods against hand-built models ({self.metric}); "
                                                   "[rank of the last true head / true heads]")


def display_name(spec: Any) -> str:
    """A short name for figure titles: the last path component of a spec."""
    from pathlib import Path

    return Path(str(spec)).name or str(spec)


@dataclass
class SweepReport:
    """`induction sweep`: many runs (track) or models (scan), one report.

    JSON: ``{"job", "runs": [{"label", ...the run's own track or scan JSON, without provenance}],
    "phase_changes": [{"label", "step", "start_step", "end_step"} | {"label", null...}], "provenance"}``.
    """

    job: str
    labels: list[str]
    tracks: list[TrackReport] = field(default_factory=list)
    scans: list[ScanReport] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    title = "Sweep"

    @property
    def columns(self) -> tuple[str, ...]:
        if self.job == "track":
            ablated = any(t.ablation is not None for t in self.tracks)
            return ("run", "step", "best_prefix_matching", "best_copying", "icl_score", "held_out_loss",
                    "n_induction_heads") + (TrackReport.ABLATION_COLUMNS if ablated else ())
        return ("run", "icl_score", "best_head", "best_prefix_matching", "best_copying", "n_induction_heads")

    def reports(self) -> list[TrackReport] | list[ScanReport]:
        return self.tracks if self.job == "track" else self.scans

    def to_json(self) -> dict[str, Any]:
        runs = []
        for label, report in zip(self.labels, self.reports()):
            data = report.to_json()
            data.pop("provenance", None)
            runs.append({"label": label, **data})
        phases = [{"label": label, **(t.phase_change.to_dict() if t.phase_change else
                                      {"step": None, "start_step": None, "end_step": None})}
                  for label, t in zip(self.labels, self.tracks)]
        return {"job": self.job, "runs": runs, "phase_changes": phases, "provenance": self.provenance}

    def rows(self) -> list[dict[str, Any]]:
        out = []
        if self.job == "track":
            for label, track in zip(self.labels, self.tracks):
                for row in track.rows():
                    out.append({"run": label, **{k: row.get(k) for k in self.columns if k != "run"}})
            return out
        for label, scan in zip(self.labels, self.scans):
            best = max(scan.heads(), key=lambda h: h["prefix_matching"])
            out.append({"run": label, "icl_score": None if scan.icl is None else scan.icl.score,
                        "best_head": f"L{best['layer']}H{best['head']}", "best_prefix_matching": best["prefix_matching"],
                        "best_copying": best["copying"], "n_induction_heads": len(scan.scores.induction_heads())})
        return out

    def summary(self) -> list[str]:
        lines = [f"{len(self.labels)} {'runs' if self.job == 'track' else 'models'}; executor: "
                 f"{self.provenance.get('executor', 'local')} ({self.provenance.get('workers', 1)} workers)"]
        for label, track in zip(self.labels, self.tracks):
            pc = track.phase_change
            lines.append(f"{label}: " + ("no phase change" if pc is None else
                                         f"phase change at step {pc.step} ({pc.start_step}-{pc.end_step})"))
        return lines

    def to_dataframe(self):
        return to_dataframe(self)

    def plot(self):
        """Best prefix-matching and ICL score against step for every run, and the phase changes side by
        side (track); or each model's ICL score and best prefix-matching (scan)."""
        from induction import plots

        if self.job == "track":
            return plots.plot_sweep_tracks(self.labels, [t.checkpoints for t in self.tracks],
                                           [t.phase_change for t in self.tracks])
        return plots.plot_sweep_scans(self.labels, [s.scores for s in self.scans],
                                      [None if s.icl is None else s.icl.score for s in self.scans])
