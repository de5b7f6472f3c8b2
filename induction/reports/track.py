"""`induction track`'s report: scores over every checkpoint of a run, and the phase change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from induction.measures.audit import CheckpointAudit
from induction.measures.formation import CheckpointScores, PhaseChange
from induction.reports.base import _heads, display_name
from induction.reports.scan import copying_method_line


@dataclass
class TrackReport:
    """`induction track`: scores over every checkpoint of a run, and the phase change.

    JSON (CONTRACT): ``{"run", "checkpoints": [{"step", "tokens_seen", "loss", "held_out_loss",
    "icl_score", "heads": [HEAD...]}], "phase_change": {"step", "start_step", "end_step"} | null,
    "provenance"}``. With `--ablate` (README, "Ablation over training"): each HEAD has
    ``ablation_effect``, each checkpoint ``ablation`` = ``{"method", "baseline", "induction_set"}``
    (`induction.measures.formation.induction_set_block`), and the report ``ablation`` = ``{"method",
    "induction_heads", "n_draws", "control_heads", "control_unavailable"}``. ``audit``
    (`induction.measures.audit.CheckpointAudit`): ``{"suspect": [{"step", "name", "revision", "reasons",
    "same_as"}], "distances": [{"step", "distance"}], "excluded_from_fit", "tolerance"}``.
    """

    run: str
    checkpoints: list[CheckpointScores]
    phase_change: PhaseChange | None
    provenance: dict[str, Any] = field(default_factory=dict)
    ablation: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None

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
        if self.audit is not None:
            out["audit"] = self.audit
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
        if self.audit is not None:
            lines += CheckpointAudit.from_dict(self.audit).summary()
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
                                        ablation=self.ablation, audit=self.audit)
        if kind == "mosaic":
            return plots.plot_mosaic(self.checkpoints, self.phase_change, name=display_name(self.run))
        raise ValueError(f"unknown track plot {kind!r}; choose formation or mosaic")
