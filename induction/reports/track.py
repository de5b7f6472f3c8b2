"""`induction track`'s report: scores over every checkpoint of a run, and the phase change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from induction.measures.audit import CheckpointAudit
from induction.measures.formation import CheckpointScores, PhaseChange
from induction.measures.paths import key_path_formation
from induction.measures.transience import Transience
from induction.reports import columns as cols
from induction.reports.base import _heads, display_name
from induction.reports.scan import copying_method_line
from induction.training.interventions import describe


@dataclass
class TrackReport:
    """`induction track`: scores over every checkpoint of a run, and the phase change.

    JSON (CONTRACT): ``{"run", "checkpoints": [{"step", "tokens_seen", "loss", "held_out_loss",
    "icl_score", "heads": [HEAD...]}], "phase_change": {"step", "start_step", "end_step"} | null,
    "provenance"}``. With `--ablate` (README, "Ablation over training"): each HEAD has
    ``ablation_effect``, each checkpoint ``ablation`` = ``{"method", "baseline", "induction_set"}``
    (`induction.measures.formation.induction_set_block`), and the report ``ablation`` = ``{"method",
    "induction_heads", "n_draws", "control_heads", "control_unavailable"}``. ``transience``: the ICL
    score's fade after the phase change, ``{"peak_step", "peak_icl", "final_step", "final_icl", "fade",
    "fade_ci", "transient", "threshold", "n_sequences"}`` (`induction.measures.transience`), or null
    (no phase change, or no ICL score).
    With `--paths`
    (`induction.jobs.track.paths`): each checkpoint has ``paths`` = ``[{"sender", "receiver", "input",
    "effect", "ci"}]`` and ``path_inputs`` = ``{"q"|"k"|"v": {"effect", "ci", "n_paths"}}``, and the
    report ``paths`` = ``{"receivers", "senders", "metric", "direction", "formation": {"q"|"k"|"v":
    {"formed_step", "formed_step_ci", "formed_share", "significant_step", "final_effect", "final_ci",
    "relative_to_phase_change"}}}`` (`induction.measures.paths.key_path_formation`).
    ``audit``
    (`induction.measures.audit.CheckpointAudit`): ``{"suspect": [{"step", "name", "revision", "reasons",
    "same_as"}], "distances": [{"step", "distance"}], "excluded_from_fit", "tolerance"}``.
    """

    run: str
    checkpoints: list[CheckpointScores]
    phase_change: PhaseChange | None
    provenance: dict[str, Any] = field(default_factory=dict)
    ablation: dict[str, Any] | None = None
    transience: Transience | None = None
    paths: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None

    title = "Induction-head formation"
    # --ablate: the final induction heads' joint effect, their summed single-head effects, the random
    # control's mean effect and the joint effect's share of the ICL score (`induction_set_block`).
    ABLATION_COLUMNS = cols.TRACK_ABLATION
    default_columns = cols.DEFAULT_COLUMNS["track"]

    @property
    def columns(self) -> tuple[str, ...]:
        return (cols.TRACK + (self.ABLATION_COLUMNS if self.ablation is not None else ())
                + (cols.TRACK_PATHS if self.paths is not None else ()))

    # --paths: the summed effect (nats of repeat loss) of the q, k and v paths into the final induction heads.
    PATH_COLUMNS = cols.TRACK_PATHS

    def path_formation(self) -> dict[str, Any] | None:
        """`--paths`: when the q, k and v paths formed (`induction.measures.paths.key_path_formation`)."""
        points = [c for c in self.checkpoints if c.path_inputs]
        if self.paths is None or not points:
            return None
        return key_path_formation([c.step for c in points], [c.path_inputs for c in points], self.phase_change)

    def to_json(self) -> dict[str, Any]:
        out = {
            "run": self.run,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "phase_change": None if self.phase_change is None else self.phase_change.to_dict(),
            "transience": None if self.transience is None else self.transience.to_dict(),
        }
        if self.ablation is not None:
            out["ablation"] = self.ablation
        if self.paths is not None:
            out["paths"] = {**self.paths, "formation": self.path_formation()}
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
            if self.paths is not None and c.path_inputs:
                row.update({f"{x}_paths": c.path_inputs[x]["effect"] for x in "qkv"})
            out.append(row)
        return out

    def summary(self) -> list[str]:
        lines = [f"run: {self.run} ({len(self.checkpoints)} checkpoints)"]
        pending = self.provenance.get("settings", {}).get("pending_checkpoint")
        if pending:
            lines.append(f"left out: {pending['name']}, still being written ({pending['reason']}); rerun to score it")
        interventions = (self.provenance.get("settings", {}).get("train_config") or {}).get("interventions")
        if interventions:
            lines.append(f"trained with interventions at every step: {describe(interventions)}")
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
        if self.transience is not None:
            lines.append(transience_line(self.transience))
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
        if self.paths is not None:
            lines += self.paths_summary()
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

    def paths_summary(self) -> list[str]:
        """`--paths`: the final paths by input, and when each formed relative to the phase change."""
        block = self.paths or {}
        if block.get("unavailable"):
            return [f"paths: {block['unavailable']}"]
        formation = self.path_formation()
        if formation is None:
            return ["paths: none computed"]
        lines = [f"paths from {len(block.get('senders', []))} earlier heads into the final induction heads "
                 f"{_heads([tuple(h) for h in block.get('receivers', [])])} ({block.get('metric')} change when "
                 f"noised, {block.get('direction')}):"]
        for which, name in (("k", "key"), ("q", "query"), ("v", "value")):
            f = formation[which]
            ci = f["final_ci"]
            when = "never reaches half its final value and stays" if f["formed_step"] is None else \
                f"formed (>= half its final value from then on) at step {f['formed_step']}"
            if f["relative_to_phase_change"]:
                when += f", {f['relative_to_phase_change']} the phase change"
            if f["formed_step"] is not None and f["formed_step_ci"]:
                lo, hi = f["formed_step_ci"]
                when += f" [95% CI steps {lo:.0f}-{hi:.0f}, formed in {f['formed_share']:.0%} of resamples]"
            elif f["formed_share"] is not None:
                when += f" (in {f['formed_share']:.0%} of resamples of the sequences it does)"
            sig = "" if f["significant_step"] is None else f"; interval above 0 from step {f['significant_step']}"
            lines.append(f"  {name} paths: final {f['final_effect']:+.3f}"
                         + ("" if not ci else f" [95% CI {ci[0]:+.3f}, {ci[1]:+.3f}]") + f"; {when}{sig}")
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

    def plot(self, kind: str = "formation", x_axis: str = "step", style=None):
        """``formation`` (curves over training, phase change shaded; against ``step`` or ``tokens``
        seen) or ``mosaic`` (head heatmaps at checkpoints bracketing the phase change). `style`:
        "paper" for a paper's column width and type (`induction.plots.FigureStyle`)."""
        from induction import plots

        if kind == "formation":
            fig = plots.plot_formation(self.checkpoints, self.phase_change, name=display_name(self.run),
                                       ablation=self.ablation, x_axis=x_axis, transience=self.transience,
                                       paths=None if self.paths is None else {**self.paths,
                                                                              "formation": self.path_formation()},
                                       audit=self.audit)
            return plots.apply_style(fig, style)
        if kind == "mosaic":
            return plots.apply_style(plots.plot_mosaic(self.checkpoints, self.phase_change, name=display_name(self.run)), style)
        raise ValueError(f"unknown track plot {kind!r}; choose formation or mosaic")


def transience_line(t: Transience) -> str:
    """The summary's line on the ICL score's fade after the phase change (Singh et al. 2023)."""
    ci = "" if t.fade_ci is None else f" [95% CI {t.fade_ci[0]:+.3f}, {t.fade_ci[1]:+.3f}]"
    verdict = (f"TRANSIENT: the ICL score fades after the phase change (interval above {t.threshold} nats)" if t.transient
               else f"not transient (flagged when the interval lies above {t.threshold} nats)")
    return (f"transience: best ICL score after the phase change {t.peak_icl:.3f} at step {t.peak_step}, "
            f"{t.final_icl:.3f} at step {t.final_step}: fade {t.fade:+.3f} nats{ci}; {verdict}")
