"""`induction ablate` / `induction patch`'s report: each head's causal effect on a metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from induction.measures.effects import HeadSetAblation
from induction.reports import columns as cols
from induction.reports.base import to_dataframe


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
    head_details: dict[str, Tensor] | None = None
    """More per-head numbers, each `[layer, head_index]`, added to every head record under its name
    (``grad_drop``: AtP*'s GradDrop magnitude)."""

    @property
    def columns(self) -> tuple[str, ...]:
        return (*cols.EFFECTS, *(self.head_details or {}))

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
                rec = {"layer": layer, "head": head, "value": value, "effect": value - self.baseline}
                for name, per_head in (self.head_details or {}).items():
                    rec[name] = float(per_head[layer, head])
                out.append(rec)
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

    def plot(self, style=None):
        """The layer x head heatmap of each head's effect."""
        from induction import plots

        what = "ablating" if self.command == "ablate" else "patching"
        return plots.apply_style(plots.plot_effects(self.effects, self.metric, title=f"Effect of {what} each head on {self.metric} ({self.method})"), style)
