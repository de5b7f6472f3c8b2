"""`induction train`'s report: the run directory and its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from induction.reports import columns as cols
from induction.reports.base import to_dataframe
from induction.training.interventions import describe


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
    columns = cols.TRAIN

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
        if cfg.get("interventions"):
            lines.append(f"interventions at every training step: {describe(cfg['interventions'])}")
        if m["checkpoints"]:
            last = m["checkpoints"][-1]
            lines.append(f"{len(m['checkpoints'])} checkpoints; last: step {last['step']}, loss {last['loss']:.3f}; "
                         f"training time {m.get('train_seconds', 0.0):.1f} s")
        return lines

    def to_dataframe(self):
        return to_dataframe(self)
