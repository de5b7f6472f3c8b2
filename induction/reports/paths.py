"""`induction patch --paths`'s report: each sender -> receiver q/k/v path's effect on a metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from induction.measures.paths import PathEffects, head_label
from induction.reports.base import to_dataframe


@dataclass
class PathPatchReport:
    """`induction patch MODEL --paths`: path patching (`circuits.patch_paths`, noising:
    `induction.measures.paths`).

    JSON: ``{"model", "method": "path", "metric", "baseline", "corrupted", "direction", "name_fraction",
    "paths": [{"sender": [layer, head], "receiver": [layer, head], "input": "q"|"k"|"v", "effect",
    "named"}], "provenance"}``: `baseline` is the clean run's metric, `effect` the metric with that
    path noised minus it, `named` whether |effect| >= `name_fraction` x the largest |effect|.
    """

    model: str
    metric: str
    effects: PathEffects
    name_fraction: float
    provenance: dict[str, Any] = field(default_factory=dict)

    columns = ("sender", "receiver", "q", "k", "v", "named")
    direction = "noising: the clean run, each path carrying the sender's output from the corrupted run"

    @property
    def title(self) -> str:
        return f"Path effects on {self.metric} (sender -> receiver query, key, value)"

    @property
    def baseline(self) -> float:
        return float(self.effects.clean.double().mean())

    def path_rows(self) -> list[dict[str, Any]]:
        records = self.effects.records()
        top = max((abs(r["effect"]) for r in records), default=0.0)
        for r in records:
            r["named"] = top > 0 and abs(r["effect"]) >= self.name_fraction * top
        return records

    def named(self) -> list[dict[str, Any]]:
        return [r for r in self.path_rows() if r["named"]]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "method": "path", "metric": self.metric, "baseline": self.baseline,
                "corrupted": self.effects.corrupted, "direction": self.direction, "name_fraction": self.name_fraction,
                "paths": self.path_rows(), "provenance": self.provenance}

    def rows(self) -> list[dict[str, Any]]:
        """One row per (sender, receiver): the q, k and v paths' effects, largest first; `named`
        lists the inputs whose path is named."""
        pairs: dict[tuple, dict[str, Any]] = {}
        for r in self.path_rows():
            key = (tuple(r["sender"]), tuple(r["receiver"]))
            row = pairs.setdefault(key, {"sender": head_label(key[0]), "receiver": head_label(key[1]),
                                         "q": None, "k": None, "v": None, "named": ""})
            row[r["input"]] = r["effect"]
            if r["named"]:
                row["named"] += r["input"]
        return sorted(pairs.values(), key=lambda row: -max(abs(row[x] or 0.0) for x in "qkv"))

    def summary(self) -> list[str]:
        lines = [f"model: {self.model}", f"clean run ({self.metric}): {self.baseline:.4f}"
                 + ("" if self.effects.corrupted is None else f"; corrupted run: {self.effects.corrupted:.4f}"),
                 f"direction: {self.direction}"]
        named = sorted(self.named(), key=lambda r: -abs(r["effect"]))
        shown = ", ".join(f"{head_label(r['sender'])}->{head_label(r['receiver'])}.{r['input']} {r['effect']:+.3f}"
                          for r in named[:8])
        lines.append(f"named paths (|effect| >= {self.name_fraction:g} x the largest): {len(named)}"
                     + (f"; {shown}" if shown else "") + (" ..." if len(named) > 8 else ""))
        totals = {x: sum(r["effect"] for r in self.path_rows() if r["input"] == x) for x in "qkv"}
        lines.append("summed effect by input: " + ", ".join(f"{x} {totals[x]:+.3f}" for x in "qkv"))
        return lines

    def to_dataframe(self):
        return to_dataframe(self)

    def plot(self):
        """Sender x receiver heatmaps of the effect, one per input (q, k, v)."""
        from induction import plots

        return plots.plot_paths(self.path_rows(), self.metric,
                                title=f"Path patching: effect on {self.metric} (noising)")
