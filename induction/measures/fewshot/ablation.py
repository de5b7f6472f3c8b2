"""Which heads carry few-shot accuracy: a head set ablated vs layer-matched random heads, and per
label variant, which heads carry which behaviour.

Crosbie & Shutova (2024) ablate the heads with the highest prefix-matching scores and compare with
as many random heads; here the random sets come from the same layers as the top set and every set
is ablated together on the same prompts (`induction.measures.effects.head_set_ablation`), so accuracy and
log-probability get bootstrap intervals over prompts, and the difference a joint one over prompts
and draws (`ablate_fewshot_heads`).

`attribute_fewshot_heads` asks the question per label variant (Wei et al. 2023: does the model
follow gold and flipped labels with the same heads?): every head ablated alone
(`circuits.ablate_heads`), scored against the in-context answer and against the gold (prior)
answer, then the heads whose ablation costs the most in-context accuracy, summed over the
variants, ablated together under every variant against layer-matched random sets.

Mean and resample ablation take their reference activations from the prompts themselves, except
on a model trained on the tasks stream, whose reference mixes prompts of all its tasks: a mean
over one task's prompts keeps that task's information in every head, so such an ablation removes
nothing (README, "Design notes").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

import circuits
from circuits import Head
from induction.common.stats import DEFAULT_RESAMPLES
from induction.heads.config import ScoreConfig
from induction.heads.scores import score_heads, top_prefix_heads
from induction.inputs.task_inference import TaskError, TasksDataConfig
from induction.measures.effects import HeadSetAblation, HeadSetResult, controllable, head_set_ablation
from induction.measures.fewshot.evaluate import correct_and_logprob, fewshot_metric
from induction.measures.fewshot.render import (
    FewShotPromptConfig,
    FewShotPrompts,
    build_prompts,
    model_tasks,
    toy_data_config,
)

QUANTITIES = ("accuracy", "mean_logprob", "accuracy_gold")


@dataclass
class FewShotAblation:
    """Few-shot accuracy with a head set ablated vs layer-matched random head sets.

    Attributes:
        config: the prompts' settings.
        prefix_matching: the ablated heads' prefix-matching scores, in `ablation.target.heads` order.
        ablation: the head-set ablation; its quantities are ("accuracy", "mean_logprob",
            "accuracy_gold") per prompt.
    """

    config: FewShotPromptConfig
    prefix_matching: list[float]
    ablation: HeadSetAblation

    def _result(self, result: HeadSetResult) -> dict[str, Any]:
        a = self.ablation
        acc_ci, lp_ci = a.ci(result, "accuracy"), a.ci(result, "mean_logprob")
        return {"heads": [list(h) for h in result.heads], "accuracy": result.mean(0),
                "accuracy_ci": None if acc_ci is None else list(acc_ci), "mean_logprob": result.mean(1),
                "mean_logprob_ci": None if lp_ci is None else list(lp_ci), "accuracy_gold": result.mean(2)}

    def to_dict(self) -> dict[str, Any]:
        a, cfg = self.ablation, self.config
        random_ci, diff_ci = a.random_ci("accuracy"), a.difference_ci("accuracy")
        return {
            "task": cfg.task, "labels": cfg.labels, "k": cfg.k, "n_prompts": cfg.n_prompts, "method": a.method,
            "top_heads": [list(h) for h in a.target.heads], "prefix_matching": self.prefix_matching,
            "baseline": self._result(a.baseline), "top": self._result(a.target),
            "random": [self._result(r) for r in a.random], "n_distinct_random_sets": a.n_distinct_random_sets,
            "random_accuracy": a.random_mean("accuracy"),
            "random_accuracy_ci": None if random_ci is None else list(random_ci),
            "random_mean_logprob": a.random_mean("mean_logprob"),
            "random_accuracy_gold": a.random_mean("accuracy_gold"),
            "drop_difference": a.difference("accuracy"),
            "drop_difference_ci": None if diff_ci is None else list(diff_ci),
        }


def reference_tokens(model: TransformerBridge, cfg: FewShotPromptConfig) -> Int[Tensor, "ref_batch pos"] | None:
    """The reference batch of mean/resample ablation: None (the prompts themselves), except on a
    tasks-stream model, where it mixes prompts of every one of its tasks (module docstring) with
    the same k, labels and query placement, `cfg.n_prompts` in all."""
    if not isinstance(toy_data_config(model), TasksDataConfig):
        return None
    tasks = model_tasks(model)
    per_task = max(1, cfg.n_prompts // len(tasks))
    parts = [build_prompts(model, cfg, task=name, n_prompts=per_task, seed=cfg.seed + 1).tokens for name in tasks]
    return torch.cat(parts)


def _set_ablation(
    model: TransformerBridge, prompts: FewShotPrompts, heads: Sequence[Head], prefix: list[float], n_draws: int,
    method: str, n_bootstrap: int, progress: bool,
) -> FewShotAblation:
    cfg = prompts.config
    ablation = head_set_ablation(model, prompts.tokens, correct_and_logprob(prompts), heads, QUANTITIES, method,
                                 n_draws, cfg.seed, n_bootstrap, progress, reference_tokens(model, cfg))
    return FewShotAblation(config=cfg, prefix_matching=prefix, ablation=ablation)


def _prefix_matching(model: TransformerBridge, heads: Sequence[Head]) -> list[float]:
    pm = score_heads(model, ScoreConfig(n_bootstrap=0)).prefix_matching
    return [float(pm[layer, h]) for layer, h in heads]


def ablate_fewshot_heads(
    model: TransformerBridge,
    cfg: FewShotPromptConfig,
    n_heads: int | None = None,
    heads: Sequence[Head] | None = None,
    n_draws: int = 10,
    method: str = "zero",
    n_bootstrap: int = DEFAULT_RESAMPLES,
    progress: bool = False,
) -> FewShotAblation:
    """Few-shot accuracy with the top prefix-matching heads ablated vs layer-matched random heads.

    Args:
        cfg: the prompts (task, label variant, k, n_prompts, seed).
        n_heads: how many top heads (None: the number of detected induction heads, at least 1).
        heads: the set to ablate instead of the top prefix-matching heads.
        n_draws: random layer-matched sets.
        method: `circuits.METHODS`.
    """
    prompts = build_prompts(model, cfg)
    if heads is None:
        chosen, prefix = top_prefix_heads(model, n_heads, cfg.seed)
    else:
        chosen = [(int(layer), int(h)) for layer, h in heads]
        prefix = _prefix_matching(model, chosen)
    return _set_ablation(model, prompts, chosen, prefix, n_draws, method, n_bootstrap, progress)


# ---- per label variant: which heads carry which behaviour ---------------------------------------------


@dataclass
class VariantAttribution:
    """One label variant's head attribution.

    Attributes:
        labels: the label variant.
        accuracy: unablated accuracy vs the in-context answer.
        accuracy_gold: unablated accuracy vs the gold (prior) answer.
        head_accuracy: `[layer, head_index]` accuracy vs the in-context answer with that head ablated alone.
        head_accuracy_gold: the same vs the gold answer.
        set_ablation: the attribution's head set ablated together vs layer-matched random sets.
    """

    labels: str
    accuracy: float
    accuracy_gold: float
    head_accuracy: Float[Tensor, "layer head_index"]
    head_accuracy_gold: Float[Tensor, "layer head_index"]
    set_ablation: FewShotAblation

    def to_dict(self) -> dict[str, Any]:
        n_layers, n_heads = self.head_accuracy.shape
        return {
            "labels": self.labels, "accuracy": self.accuracy, "accuracy_gold": self.accuracy_gold,
            "heads": [{"layer": layer, "head": h, "accuracy": float(self.head_accuracy[layer, h]),
                       "accuracy_gold": float(self.head_accuracy_gold[layer, h])}
                      for layer in range(n_layers) for h in range(n_heads)],
            "set": self.set_ablation.to_dict(),
        }


@dataclass
class HeadAttribution:
    """Which heads carry few-shot accuracy under each label variant (`attribute_fewshot_heads`).

    Attributes:
        task: the task.
        k: demonstrations per prompt.
        method: the ablation method (`circuits.METHODS`).
        heads: the set ablated together: the heads whose ablation alone lowers in-context accuracy
            most, summed over the variants (at most half of any layer, so a layer-matched random set
            exists), strongest first.
        variants: one `VariantAttribution` per label variant.
    """

    task: str
    k: int
    method: str
    heads: list[Head]
    variants: list[VariantAttribution]

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "k": self.k, "method": self.method, "heads": [list(h) for h in self.heads],
                "variants": [v.to_dict() for v in self.variants]}


def check_attribution_size(model: TransformerBridge, n_heads: int) -> None:
    """Raise unless a layer-matched control exists for a set of `n_heads` (at most half of each layer)."""
    most = int(model.cfg.n_layers) * (int(model.cfg.n_heads) // 2)
    if not 1 <= n_heads <= most:
        raise TaskError(f"head attribution: the set must have 1 to {most} heads (at most half of each layer, "
                        f"for the layer-matched control), got {n_heads}")


def attribute_fewshot_heads(
    model: TransformerBridge,
    cfg: FewShotPromptConfig,
    labels: Sequence[str],
    n_heads: int = 2,
    n_draws: int = 10,
    method: str = "zero",
    n_bootstrap: int = DEFAULT_RESAMPLES,
    progress: bool = False,
) -> HeadAttribution:
    """Per label variant, each head ablated alone, then the `n_heads` heads that matter most for
    following the demonstrations ablated together vs layer-matched random sets (module docstring).

    Args:
        cfg: the prompts (task, k, n_prompts, seed; its `labels` is replaced by each of `labels`).
        labels: the label variants, e.g. ("gold", "flipped").
        n_heads: size of the head set.
        n_draws: random layer-matched sets.
        method: `circuits.METHODS`.
    """
    if not labels:
        raise TaskError("head attribution: give at least one label variant")
    check_attribution_size(model, n_heads)
    n_layers, heads_per_layer = int(model.cfg.n_layers), int(model.cfg.n_heads)
    found = []
    for variant in labels:
        prompts = build_prompts(model, cfg, labels=variant)
        reference = reference_tokens(model, prompts.config)
        single = [circuits.ablate_heads(model, prompts.tokens, fewshot_metric(prompts, target, "accuracy"), method,
                                        reference_tokens=reference, seed=cfg.seed, progress=progress)
                  for target in ("answer", "gold")]
        with torch.no_grad():
            logits = model(prompts.tokens)
        base = [float(fewshot_metric(prompts, target, "accuracy")(logits)) for target in ("answer", "gold")]
        found.append((variant, prompts, base, single))

    drop = sum(base[0] - single[0] for _, _, base, single in found)  # [layer, head]: in-context accuracy lost
    ranked = sorted(((layer, h) for layer in range(n_layers) for h in range(heads_per_layer)),
                    key=lambda lh: (-float(drop[lh]), lh))
    kept = controllable(ranked, heads_per_layer)  # sorted by (layer, head); restore the strength order
    chosen = [h for h in ranked if h in set(kept)][:n_heads]
    prefix = _prefix_matching(model, chosen)
    variants = [
        VariantAttribution(labels=variant, accuracy=base[0], accuracy_gold=base[1], head_accuracy=single[0],
                           head_accuracy_gold=single[1],
                           set_ablation=_set_ablation(model, prompts, chosen, prefix, n_draws, method, n_bootstrap,
                                                      progress))
        for variant, prompts, base, single in found
    ]
    return HeadAttribution(task=cfg.task, k=cfg.k, method=method, heads=chosen, variants=variants)
