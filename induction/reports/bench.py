"""`induction bench`'s report: every method scored against hand-built models with known heads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from induction.bench.suite import ModelBench
from induction.reports import columns as cols
from induction.reports.base import to_dataframe


@dataclass
class BenchReport:
    """`induction bench`: every method scored against hand-built models with known heads (`induction.bench.suite`).

    JSON (CONTRACT): ``{"models": [{"name", "truth": {...}, "methods": [{"method", "precision",
    "recall", "true_head_rank"}]}], "provenance"}``; each model also has ``description``,
    ``baseline`` (its unablated metric) and ``runtime_s``, and each method ``truth`` (the truth it is scored against),
    ``named``, ``true_head_ranks`` and ``scores`` (the per-head score it orders heads by); the patching
    methods also ``runtime_s`` and ``spearman_vs_exact`` (rank correlation with exact patching).
    """

    models: list[ModelBench]
    metric: str
    name_fraction: float
    provenance: dict[str, Any] = field(default_factory=dict)

    title = "Methods against hand-built models with known heads"
    columns = cols.BENCH
    default_columns = cols.DEFAULT_COLUMNS["bench"]

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
                 "true_head_rank": s.true_head_rank, "spearman_vs_exact": s.spearman_vs_exact,
                 "runtime_s": None if s.runtime_s is None else round(s.runtime_s, 3)}
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
            patching = [s for s in m.methods if s.spearman_vs_exact is not None and s.method != "exact patching"]
            if patching:
                lines.append("  against exact patching: " + "; ".join(
                    f"{s.method.removesuffix(' patching')} recall {s.recall:.2f}, rank correlation "
                    f"{s.spearman_vs_exact:.2f}, {s.runtime_s:.2f} s" for s in patching))
        return lines

    def to_dataframe(self):
        return to_dataframe(self)

    def plot(self, style=None):
        """Method x model heatmaps of recall and precision (the rank of the last true head as text)."""
        from induction import plots

        return plots.apply_style(plots.plot_bench(self.models, title=f"Methods against hand-built models ({self.metric}); "
                                                   "[rank of the last true head / true heads]"), style)
