"""Figures of a sweep: many runs' formation curves overlaid, many models' scans side by side."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from induction.heads.records import HeadTable
from induction.measures.formation import CheckpointScores, PhaseChange
from induction.plots.axis import TITLES, plotted, step_to_x, x_of
from induction.plots.style import COLUMN_WIDTH_PX, PALETTE, paper_layout


def plot_sweep_tracks(labels: Sequence[str], runs: Sequence[Sequence[CheckpointScores]],
                      phases: Sequence[PhaseChange | None], x_axis: str = "step") -> go.Figure:
    """Every run's best prefix-matching and ICL score against step (log axis), and the phase-change
    windows side by side (one row per run: the 10%-90% window, the steepest point marked).

    `x_axis` ``tokens``: against tokens seen instead, so models trained with different batch sizes
    (or several suites) overlay (`induction.plots.axis`)."""
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.08, row_heights=[0.38, 0.38, 0.24],
                        subplot_titles=("best prefix-matching (max over heads)", "ICL score", "phase change"))
    for i, (label, points) in enumerate(zip(labels, runs)):
        colour = PALETTE[i % len(PALETTE)]
        every = points
        points = plotted(points, x_axis)
        steps = [x_of(c, x_axis) for c in points]
        fig.add_trace(go.Scatter(x=steps, y=[c.best_prefix_matching for c in points], mode="lines+markers", name=label,
                                 legendgroup=label, line=dict(color=colour, width=2), marker=dict(size=4)), row=1, col=1)
        if all(c.icl_score is not None for c in points):
            fig.add_trace(go.Scatter(x=steps, y=[c.icl_score for c in points], mode="lines+markers", name=label,
                                     legendgroup=label, showlegend=False, line=dict(color=colour, width=2),
                                     marker=dict(size=4)), row=2, col=1)
        pc = phases[i]
        if pc is not None:
            at, start, end = (step_to_x(s, every, x_axis) for s in (pc.step, pc.start_step, pc.end_step))
            fig.add_trace(go.Scatter(x=[at], y=[label], mode="markers", showlegend=False, legendgroup=label,
                                     marker=dict(color=colour, size=10, symbol="diamond"),
                                     error_x=dict(type="data", symmetric=False, array=[end - at],
                                                  arrayminus=[at - start], color=colour, thickness=2),
                                     hovertemplate=f"{label}: step {pc.step} ({pc.start_step}-{pc.end_step})<extra></extra>"),
                          row=3, col=1)
    fig.update_xaxes(type="log")
    fig.update_xaxes(title_text=TITLES[x_axis], row=3, col=1)
    fig.update_yaxes(title_text="attention", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="nats", row=2, col=1)
    fig.update_yaxes(type="category", categoryarray=list(labels), row=3, col=1)
    return paper_layout(fig, width=COLUMN_WIDTH_PX + 200, height=760 + 20 * len(labels),
                        title=f"Induction-head formation across {len(labels)} runs")


def plot_sweep_scans(labels: Sequence[str], heads: Sequence[HeadTable], icl: Sequence[float | None]) -> go.Figure:
    """Each model's best prefix-matching score and ICL score, side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("best prefix-matching", "ICL score"), horizontal_spacing=0.15)
    fig.add_trace(go.Bar(x=list(labels), y=[float(t.best()["prefix_matching"]) for t in heads], marker_color=PALETTE[0],
                         showlegend=False), row=1, col=1)
    fig.add_trace(go.Bar(x=list(labels), y=[float("nan") if v is None else v for v in icl], marker_color=PALETTE[1],
                         showlegend=False), row=1, col=2)
    fig.update_yaxes(title_text="attention", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="nats", row=1, col=2)
    return paper_layout(fig, width=max(COLUMN_WIDTH_PX, 90 * len(labels) + 300), title="Models compared")
