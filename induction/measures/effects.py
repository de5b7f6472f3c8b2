"""Each head's causal effect, and the effect of a head set against layer-matched random heads.

- `ablation_effects` / `patching_effects`: one head at a time (`circuits.ablate_heads`,
  `circuits.patch_heads`, `circuits.attribute_heads`) on a `induction.measures.metrics.MetricSetup`.
- `head_set_ablation`: a set of heads ablated together against layer-matched random sets of the
  same size (Crosbie & Shutova 2024), with per-prompt values so that every number has a bootstrap
  interval over prompts. `induction ablate --top-k` (the ICL score) and `induction fewshot
  --ablate` (few-shot accuracy) both use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

import circuits
from circuits import Head
from circuits.atp import atp_star
from induction.common.checks import check_choice, check_min
from induction.common.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap_ci, percentile_interval
from induction.loading.devices import model_device
from induction.measures.metrics import MetricSetup, PerPrompt, icl_forward

ABLATION_METHODS = circuits.METHODS
PATCH_METHODS = ("exact", "attribution", "atp-star")


def ablation_effects(
    model: TransformerBridge, setup: MetricSetup, method: str = "zero", seed: int = 0, progress: bool = False
) -> tuple[float, Tensor]:
    """(baseline, values[layer, head]) of ablating one head at a time."""
    check_choice("ablation method", method, ABLATION_METHODS)
    with torch.no_grad():
        baseline = float(setup.metric(model(setup.tokens)))
    values = circuits.ablate_heads(model, setup.tokens, setup.metric, method=method, seed=seed, progress=progress)
    return baseline, values


def patching_effects(
    model: TransformerBridge, setup: MetricSetup, method: str = "exact", progress: bool = False,
    details: dict[str, Tensor] | None = None,
    layers_per_backward: int | None = None,
) -> tuple[float, float, Tensor]:
    """(corrupted baseline, clean value, values[layer, head]) of patching clean head outputs into the corrupted run.

    For `attribution` and `atp-star` (`circuits.atp`), values are the corrupted baseline plus the
    estimate, so `effect` has the same meaning for every method. With `atp-star`, `details` (when
    given) receives GradDrop's per-head magnitudes under ``grad_drop``; `layers_per_backward` as
    `circuits.attribute_heads`' (the memory plan's choice, `induction.jobs.plans`).
    """
    check_choice("patching method", method, PATCH_METHODS)
    with torch.no_grad():
        baseline = float(setup.metric(model(setup.corrupted)))
        clean = float(setup.metric(model(setup.tokens)))
    if method == "exact":
        values = circuits.patch_heads(model, setup.tokens, setup.corrupted, setup.metric, progress=progress)
    elif method == "atp-star":
        result = atp_star(model, setup.tokens, setup.corrupted, setup.metric)
        values = baseline + result.estimate
        if details is not None:
            details["grad_drop"] = result.grad_drop
    else:
        values = baseline + circuits.attribute_heads(model, setup.tokens, setup.corrupted, setup.metric,
                                                   layers_per_backward=layers_per_backward)
    return baseline, clean, values


def controllable(heads: list[Head], n_heads: int) -> list[Head]:
    """The first heads of `heads` (strongest first) keeping at most half of any layer's heads, so a
    disjoint layer-matched random set exists for the control."""
    kept: list[Head] = []
    for layer, head in heads:
        if sum(1 for lk, _ in kept if lk == layer) < n_heads // 2:
            kept.append((layer, head))
    return sorted(kept)


# ---- a head set against layer-matched random sets ------------------------------------------------


@dataclass
class HeadSetResult:
    """Per-prompt values with one head set ablated (the empty set: the unablated model).

    `values[b, q]` is quantity q of prompt b (`HeadSetAblation.quantities` names them).
    """

    heads: list[Head]
    values: Tensor = field(repr=False)

    def mean(self, q: int = 0) -> float:
        return float(self.values[:, q].double().mean())


@dataclass
class HeadSetAblation:
    """Ablating `target` heads together vs `random` layer-matched head sets (Crosbie & Shutova 2024).

    Intervals are percentile bootstraps (`induction.common.stats`): over prompts for one set's mean
    (`ci`), over draws for the random sets' mean (`random_ci`), and jointly over prompts and
    draws for `difference` = (random sets' mean) - (target set's mean) (`difference_ci`).
    """

    quantities: tuple[str, ...]
    method: str
    baseline: HeadSetResult
    target: HeadSetResult
    random: list[HeadSetResult]
    n_bootstrap: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL
    seed: int = 0

    def q(self, quantity: str | int) -> int:
        return self.quantities.index(quantity) if isinstance(quantity, str) else quantity

    def ci(self, result: HeadSetResult, quantity: str | int = 0) -> tuple[float, float] | None:
        interval = bootstrap_ci(result.values[:, self.q(quantity)], self.n_bootstrap, self.level, self.seed)
        return None if interval is None else (float(interval[0]), float(interval[1]))

    def random_means(self, quantity: str | int = 0) -> np.ndarray:
        """Each random draw's mean over prompts."""
        return np.array([r.mean(self.q(quantity)) for r in self.random])

    def random_mean(self, quantity: str | int = 0) -> float:
        return float(self.random_means(quantity).mean())

    def random_ci(self, quantity: str | int = 0) -> tuple[float, float] | None:
        interval = bootstrap_ci(self.random_means(quantity), self.n_bootstrap, self.level, self.seed)
        return None if interval is None else (float(interval[0]), float(interval[1]))

    def difference(self, quantity: str | int = 0) -> float:
        return self.random_mean(quantity) - self.target.mean(self.q(quantity))

    def difference_ci(self, quantity: str | int = 0) -> tuple[float, float] | None:
        """Joint bootstrap over prompts (shared by every set) and draws of `difference`."""
        q = self.q(quantity)
        target = self.target.values[:, q].double().numpy()
        rand = np.stack([r.values[:, q].double().numpy() for r in self.random])  # [draw, prompt]
        if self.n_bootstrap <= 0 or len(target) < 2:
            return None
        rng = np.random.default_rng(self.seed)
        prompts = rng.integers(0, len(target), size=(self.n_bootstrap, len(target)))
        draws = rng.integers(0, len(rand), size=(self.n_bootstrap, len(rand)))
        samples = np.array([rand[draws[b]][:, prompts[b]].mean() - target[prompts[b]].mean()
                            for b in range(self.n_bootstrap)])
        lo, hi = percentile_interval(samples, self.level)
        return float(lo), float(hi)

    @property
    def n_distinct_random_sets(self) -> int:
        """Distinct random head sets among the draws (few when the layers have few other heads)."""
        return len({tuple(r.heads) for r in self.random})


def head_set_ablation(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    per_prompt: PerPrompt,
    heads: Sequence[Head],
    quantities: Sequence[str] = ("value",),
    method: str = "zero",
    n_draws: int = 10,
    seed: int = 0,
    n_bootstrap: int = DEFAULT_RESAMPLES,
    progress: bool = False,
    reference_tokens: Int[Tensor, "ref_batch pos"] | None = None,
) -> HeadSetAblation:
    """Ablate `heads` together, and each of `n_draws` layer-matched random sets, on `tokens`.

    Args:
        per_prompt: logits -> `[batch]` or `[batch, len(quantities)]` per-prompt values.
        heads: the head set (`(layer, head)` pairs).
        quantities: names of the per-prompt values' columns.
        method: `circuits.METHODS` (zero, mean, resample, pattern).
        n_draws: random sets (`circuits.layer_matched_random_heads(model, heads, n_draws, seed)`).
        reference_tokens: the reference batch of mean/resample ablation (default `tokens`).
    """
    check_choice("ablation method", method, ABLATION_METHODS)
    check_min("n_draws", n_draws, 1)
    target = [(int(layer), int(h)) for layer, h in heads]
    draws = circuits.layer_matched_random_heads(model, target, n_draws, seed)
    sets = [[], target, *draws]
    values = circuits.ablate_head_sets(model, tokens, per_prompt, sets, method=method, reference_tokens=reference_tokens,
                                       seed=seed, progress=progress)
    if values.ndim == 2:  # [set, batch]: one quantity
        values = values[..., None]
    if values.shape[-1] != len(quantities):
        raise ValueError(f"per_prompt returned {values.shape[-1]} values per prompt for quantities {list(quantities)}")
    results = [HeadSetResult(heads=list(s), values=v) for s, v in zip(sets, values)]
    return HeadSetAblation(quantities=tuple(quantities), method=method, baseline=results[0], target=results[1],
                           random=results[2:], n_bootstrap=n_bootstrap, seed=seed)


# ---- effects on the ICL score of given sequences (track --ablate) --------------------------------


def icl_head_effects(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"], method: str = "zero", seed: int = 0
) -> tuple[float, Tensor]:
    """(baseline, effects[layer, head]): the ICL score of `tokens` unablated, and each head's effect on it.

    effect = ICL score with that one head ablated (`circuits.ablate_heads`) minus the unablated one,
    both from the forward `induction.measures.icl.icl_score` runs (`induction.measures.metrics.icl_forward`), so the
    baseline is the checkpoint's ICL score on the same sequences up to float rounding.
    """
    check_choice("ablation method", method, ABLATION_METHODS)
    inputs, per_prompt = icl_forward(tokens.to(model_device(model)))
    metric = lambda logits: per_prompt(logits).mean()  # noqa: E731
    with torch.no_grad():
        baseline = float(metric(model(inputs)))
    values = circuits.ablate_heads(model, inputs, metric, method=method, seed=seed)
    return baseline, values - baseline


@dataclass
class HeadSetEffect:
    """A head set's joint effect on the ICL score, and its layer-matched random control.

    Attributes:
        heads: the set, ablated together.
        baseline: the unablated ICL score (the empty set's run).
        joint_effect: ICL score with every head of `heads` ablated at once minus `baseline`.
        control_heads: the layer-matched random sets (`circuits.layer_matched_random_heads`), or None
            when there is none.
        control_effects: each random set's joint effect, as `joint_effect` (None with `control_heads`).
        control_unavailable: why there is no control (a layer with more than half of its heads in
            the set has too few other heads for a disjoint layer-matched set), else None.
    """

    heads: list[Head]
    baseline: float
    joint_effect: float
    control_heads: list[list[Head]] | None = None
    control_effects: list[float] | None = None
    control_unavailable: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HeadSetEffect":
        heads = [(int(layer), int(h)) for layer, h in d["heads"]]
        control = d.get("control_heads")
        control = None if control is None else [[(int(layer), int(h)) for layer, h in s] for s in control]
        return cls(heads=heads, baseline=float(d["baseline"]), joint_effect=float(d["joint_effect"]),
                   control_heads=control, control_effects=d.get("control_effects"),
                   control_unavailable=d.get("control_unavailable"))


def icl_head_set_effect(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    heads: Sequence[Head],
    method: str = "zero",
    n_draws: int = 10,
    seed: int = 0,
) -> HeadSetEffect:
    """`heads` ablated together on the ICL score of `tokens`, against `n_draws` layer-matched random sets.

    The random sets are `circuits.layer_matched_random_heads(model, heads, n_draws, seed)` (Crosbie &
    Shutova 2024). When they do not exist, the result has no control and says why
    (`HeadSetEffect.control_unavailable`) rather than substituting a set that is not layer-matched.
    """
    check_choice("ablation method", method, ABLATION_METHODS)
    check_min("n_draws", n_draws, 1)
    target = sorted((int(layer), int(h)) for layer, h in heads)
    if not target:
        raise ValueError("an empty head set has no joint effect")
    try:
        draws, reason = circuits.layer_matched_random_heads(model, target, n_draws, seed), None
    except ValueError as exc:
        draws, reason = [], f"no layer-matched random control: {exc}"
    inputs, per_prompt = icl_forward(tokens.to(model_device(model)))
    metric = lambda logits: per_prompt(logits).mean()  # noqa: E731
    values = circuits.ablate_head_sets(model, inputs, metric, [[], target, *draws], method=method, seed=seed)
    values = [float(v) for v in values]
    baseline = values[0]
    return HeadSetEffect(
        heads=target, baseline=baseline, joint_effect=values[1] - baseline,
        control_heads=[list(d) for d in draws] if draws else None,
        control_effects=[v - baseline for v in values[2:]] if draws else None, control_unavailable=reason,
    )
