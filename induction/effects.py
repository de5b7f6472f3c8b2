"""Each head's causal effect on in-context learning: metrics, corrupted runs and the effect report.

Metrics are functions of logits ``[batch, pos, d_vocab]`` returning a 0-d tensor, computed against the
*clean* tokens' labels, so they can score ablated, patched and corrupted runs alike:
- ``icl``: the ICL score (Olsson et al. 2022): mean loss at the late token minus at the early token
  (`induction.icl.icl_positions`). Lower is more in-context learning.
- ``repeat-loss``: mean loss over the tokens whose token occurred earlier in the sequence (the part
  that only induction can predict).
The corrupted run for patching keeps BOS and every position but draws fresh random tokens, so it has
no repeats: activations from the clean run patched into it show which heads suffice to restore ICL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

import circuits
from induction.icl import icl_positions, stream_tokens, token_losses
from induction.models import model_info
from induction.prompts import duplicate_mask
from induction.stats import bootstrap_mean_ci

Metric = Callable[[Tensor], Tensor]
METRICS = ("icl", "repeat-loss")
ABLATION_METHODS = ("zero", "mean", "resample", "pattern")
PATCH_METHODS = ("exact", "attribution")


def icl_metric(tokens: Int[Tensor, "batch pos"]) -> Metric:
    """logits -> ICL score against `tokens`' labels (late-token loss minus early-token loss)."""
    early, late = icl_positions(tokens.shape[1])

    def metric(logits: Tensor) -> Tensor:
        losses = token_losses(logits, tokens)
        return losses[:, late - 1].mean() - losses[:, early - 1].mean()

    return metric


def repeat_loss_metric(tokens: Int[Tensor, "batch pos"], first_content_pos: int = 0) -> Metric:
    """logits -> mean loss over the tokens that occurred earlier in their sequence."""
    repeated = duplicate_mask(tokens, first_content_pos).any(-1)[:, 1:].float()  # labels at positions 1..

    def metric(logits: Tensor) -> Tensor:
        return (token_losses(logits, tokens) * repeated).sum() / repeated.sum().clamp_min(1.0)

    return metric


def corrupt(tokens: Int[Tensor, "batch pos"], d_vocab: int, bos: bool, generator: torch.Generator) -> Int[Tensor, "batch pos"]:
    """Fresh uniform random tokens at every content position (BOS kept): no systematic repeats."""
    out = torch.randint(int(bos), d_vocab, tokens.shape, generator=generator)
    if bos:
        out[:, 0] = tokens[:, 0]
    return out


@dataclass
class MetricSetup:
    """Tokens, a corrupted counterpart, and the metric, for one effect measurement."""

    name: str
    tokens: Tensor
    corrupted: Tensor
    metric: Metric
    description: str


def metric_setup(model: TransformerBridge, name: str, n_sequences: int = 32, seed: int = 0,
                 seq_len: int | None = None) -> MetricSetup:
    """The standard setups: the model's token stream (`induction.icl`) with `icl` or `repeat-loss`."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    tokens, data = stream_tokens(model, n_sequences, seed, seq_len)
    bos = model_info(model).bos_token_id is not None
    corrupted = corrupt(tokens, model.cfg.d_vocab, bos, torch.Generator().manual_seed(seed + 1))
    metric = icl_metric(tokens) if name == "icl" else repeat_loss_metric(tokens, int(bos))
    return MetricSetup(name, tokens, corrupted, metric, data)


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
    control: dict[str, Any] | None = None
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
            out["control"] = self.control
        return out

    def rows(self) -> list[dict[str, Any]]:
        return sorted(self.heads(), key=lambda r: -abs(r["effect"]))

    def summary(self) -> list[str]:
        what = "unablated run" if self.command == "ablate" else "corrupted run"
        lines = [f"model: {self.model}", f"baseline ({what}): {self.baseline:.4f}"]
        if self.reference is not None:
            lines.append(f"clean run: {self.reference:.4f}")
        top = self.rows()[:3]
        lines.append("largest effects: " + ", ".join(f"L{r['layer']}H{r['head']} {r['effect']:+.3f}" for r in top))
        if self.control:
            c = self.control
            lines.append(
                f"ablating {c['heads_label']} together: {c['value']:.4f} (effect {c['effect']:+.3f}); "
                f"{len(c['random_values'])} layer-matched random sets ({c['distinct_random_sets']} distinct): mean "
                f"{c['random_mean']:.4f} [95% CI {c['random_ci'][0]:.4f}, {c['random_ci'][1]:.4f}]"
            )
        return lines

    def to_dataframe(self):
        from induction.report import to_dataframe

        return to_dataframe(self)

    def plot(self):
        from induction.plots import plot_effects

        return plot_effects(self)


def ablation_effects(
    model: TransformerBridge, setup: MetricSetup, method: str = "zero", seed: int = 0, progress: bool = False
) -> tuple[float, Tensor]:
    """(baseline, values[layer, head]) of ablating one head at a time."""
    if method not in ABLATION_METHODS:
        raise ValueError(f"unknown ablation method {method!r}; choose one of {', '.join(ABLATION_METHODS)}")
    with torch.no_grad():
        baseline = float(setup.metric(model(setup.tokens)))
    values = circuits.ablate_heads(model, setup.tokens, setup.metric, method=method, seed=seed, progress=progress)
    return baseline, values


def patching_effects(
    model: TransformerBridge, setup: MetricSetup, method: str = "exact", progress: bool = False
) -> tuple[float, float, Tensor]:
    """(corrupted baseline, clean value, values[layer, head]) of patching clean head outputs into the corrupted run.

    For `attribution`, values are the corrupted baseline plus the attribution estimate, so `effect`
    has the same meaning for both methods.
    """
    if method not in PATCH_METHODS:
        raise ValueError(f"unknown patching method {method!r}; choose one of {', '.join(PATCH_METHODS)}")
    with torch.no_grad():
        baseline = float(setup.metric(model(setup.corrupted)))
        clean = float(setup.metric(model(setup.tokens)))
    if method == "exact":
        values = circuits.patch_heads(model, setup.tokens, setup.corrupted, setup.metric, progress=progress)
    else:
        values = baseline + circuits.attribute_heads(model, setup.tokens, setup.corrupted, setup.metric)
    return baseline, clean, values


def controllable(heads: list[tuple[int, int]], n_heads: int) -> list[tuple[int, int]]:
    """The first heads of `heads` (strongest first) keeping at most half of any layer's heads, so a
    disjoint layer-matched random set exists for the control."""
    kept: list[tuple[int, int]] = []
    for layer, head in heads:
        if sum(1 for lk, _ in kept if lk == layer) < n_heads // 2:
            kept.append((layer, head))
    return sorted(kept)


def set_ablation_control(
    model: TransformerBridge, setup: MetricSetup, heads: list[tuple[int, int]], method: str = "zero",
    n_draws: int = 10, seed: int = 0, label: str | None = None,
) -> dict[str, Any]:
    """Ablate `heads` together and compare with layer-matched random head sets (Crosbie & Shutova 2024)."""
    draws = circuits.layer_matched_random_heads(model, heads, n_draws, seed)
    value = circuits.ablate_head_set(model, setup.tokens, setup.metric, heads, method=method, seed=seed)
    random_values = circuits.random_head_control(model, setup.tokens, setup.metric, heads, method=method,
                                                 n_draws=n_draws, seed=seed)
    with torch.no_grad():
        baseline = float(setup.metric(model(setup.tokens)))
    rv = random_values.double().numpy()
    lo, hi = bootstrap_mean_ci(rv, seed=seed) or (float(rv.mean()), float(rv.mean()))
    return {
        "heads": [list(h) for h in heads],
        "heads_label": label or ", ".join(f"L{layer}H{h}" for layer, h in heads),
        "value": value,
        "effect": value - baseline,
        "random_sets": [[list(h) for h in s] for s in draws],
        "random_values": rv.tolist(),
        "random_mean": float(rv.mean()),
        "random_effect": float(rv.mean() - baseline),
        "random_ci": [lo, hi],
        "random_effect_ci": [lo - baseline, hi - baseline],
        "distinct_random_sets": len({tuple(s) for s in draws}),
    }

