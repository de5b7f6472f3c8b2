"""`induction sweep`'s report: many models, runs or revisions in one table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from induction.reports import columns as cols
from induction.reports.base import to_dataframe
from induction.reports.scan import ScanReport
from induction.reports.track import TrackReport


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
    default_columns = cols.DEFAULT_COLUMNS["sweep"]

    @property
    def columns(self) -> tuple[str, ...]:
        if self.job == "track":
            ablated = any(t.ablation is not None for t in self.tracks)
            return cols.SWEEP_TRACK + (cols.TRACK_ABLATION if ablated else ())
        return cols.SWEEP_SCAN

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
            best = scan.heads().best()
            out.append({"run": label, "icl_score": None if scan.icl is None else scan.icl.score,
                        "best_head": f"L{best['layer']}H{best['head']}", "best_prefix_matching": best["prefix_matching"],
                        "best_copying": best["copying"], "n_induction_heads": len(scan.heads().induction_heads())})
        return out

    def summary(self) -> list[str]:
        lines = [f"{len(self.labels)} {'runs' if self.job == 'track' else 'models'}; executor: "
                 f"{self.provenance.get('executor', 'local')} ({self.provenance.get('workers', 1)} workers)"]
        for label, track in zip(self.labels, self.tracks):
            pc = track.phase_change
            suspect = [str(c["step"]) for c in (track.audit or {}).get("suspect", [])]
            kept = "kept in the fit" if not (track.audit or {}).get("excluded_from_fit", True) else "left out of the fit"
            note = f"; suspect checkpoints (audit), {kept}: steps {', '.join(suspect)}" if suspect else ""
            lines.append(f"{label}: " + ("no phase change" if pc is None else
                                         f"phase change at step {pc.step} ({pc.start_step}-{pc.end_step})") + note)
        return lines

    def to_dataframe(self):
        return to_dataframe(self)

    def plot(self, x_axis: str = "step", style=None):
        """Best prefix-matching and ICL score against step (or ``tokens`` seen) for every run, and the
        phase changes side by side (track); or each model's ICL score and best prefix-matching (scan).
        `style`: "paper" for a paper's column width and type (`induction.plots.FigureStyle`)."""
        from induction import plots

        if self.job == "track":
            fig = plots.plot_sweep_tracks(self.labels, [t.checkpoints for t in self.tracks],
                                          [t.phase_change for t in self.tracks], x_axis=x_axis)
        else:
            fig = plots.plot_sweep_scans(self.labels, [s.heads() for s in self.scans],
                                         [None if s.icl is None else s.icl.score for s in self.scans])
        return plots.apply_style(fig, style)
