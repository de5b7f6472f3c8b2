"""Figures of formation over training: the curves with the phase change, and the mosaic."""

from __future__ import annotations

import textwrap
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from induction.measures.formation import CheckpointScores, PhaseChange
from induction.plots.axis import TITLES, plotted, step_to_x, x_of
from induction.plots.style import COLUMN_WIDTH_PX, PALETTE, SCORE_LABELS, SIGNED_SCORES, paper_layout


def plot_formation(checkpoints: Sequence[CheckpointScores], phase_change: PhaseChange | None, name: str,
                   ablation: dict | None = None, x_axis: str = "step", transience: Any | None = None,
                   paths: dict | None = None, audit: dict | None = None) -> go.Figure:
    """Formation curves over training (Olsson et al. 2022, argument 1).

    Four panels on a shared log-step axis: each head's prefix-matching score, each head's copying
    score (one colour per head, heads flagged as induction heads at the last checkpoint drawn thick),
    the ICL score, and the train (smoothed) and held-out loss. The phase-change window (10%-90%) is
    shaded and its steepest point dashed. Step 0 cannot sit on a log axis and is left out.

    With `ablation` (the `track --ablate` report's block) a fifth panel: the change of the ICL score
    when the final induction heads are ablated together, the sum of their single-head effects, and
    the layer-matched random sets' mean (band: their range over draws), or a note saying why there
    is no control. With `paths` (`track --paths`) a last panel: the query, key and value paths into
    the final induction heads over training (`induction.plots.paths.paths_panel`).

    `x_axis`: ``step`` or ``tokens`` (tokens seen, `induction.plots.axis`), so suites of different
    batch sizes line up.
    With `transience` (`induction.measures.transience.Transience`) the ICL panel marks the best ICL
    score after the phase change and the last one, labelled with the fade and its interval.

    With `audit` (the report's block), suspect checkpoints are hollow red markers on the ICL-score
    and held-out-loss panels, and a note names them and says whether the fit left them out.
    """
    points = plotted(checkpoints, x_axis)
    steps = [x_of(c, x_axis) for c in points]
    titles = ["prefix matching (per head)", "copying (per head)", "ICL score", "loss"]
    if ablation is not None:
        titles.append(f"ICL score change, final induction heads {ablation.get('method', '')}-ablated")
    if paths is not None:
        titles.append("ICL score change, paths into the final induction heads noised (by input)")
    n_rows = len(titles)
    fig = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, vertical_spacing=0.035 if n_rows == 4 else 0.03,
                        subplot_titles=titles)
    if points:
        final = set(points[-1].heads.induction_heads())
        heads = [(h["layer"], h["head"]) for h in points[0].heads]
        grids = {score: [c.heads.grid(score) for c in points] for score in ("prefix_matching", "copying")}
        for i, (layer, head) in enumerate(heads):
            colour = PALETTE[i % len(PALETTE)]
            width = 3.0 if (layer, head) in final else 1.4
            for row, score in ((1, "prefix_matching"), (2, "copying")):
                values = [float(g[layer, head]) for g in grids[score]]
                fig.add_trace(go.Scatter(
                    x=steps, y=values, mode="lines", name=f"L{layer}H{head}", legendgroup=f"L{layer}H{head}",
                    showlegend=row == 1, line=dict(color=colour, width=width, dash="solid" if layer % 2 else "dot"),
                    hovertemplate=f"L{layer}H{head}" + " step %{x}: %{y:.3f}<extra></extra>",
                ), row=row, col=1)
        fig.add_trace(go.Scatter(x=steps, y=[c.icl_score for c in points], mode="lines+markers", name="ICL score",
                                 line=dict(color="#000", width=2), marker=dict(size=4), showlegend=False), row=3, col=1)
        if any(c.loss is not None for c in points):
            fig.add_trace(go.Scatter(x=steps, y=[c.loss for c in points], mode="lines", name="train loss (smoothed)",
                                     line=dict(color=PALETTE[1], width=2)), row=4, col=1)
        fig.add_trace(go.Scatter(x=steps, y=[c.held_out_loss for c in points], mode="lines+markers", name="held-out loss",
                                 line=dict(color=PALETTE[0], width=2), marker=dict(size=4)), row=4, col=1)
    if transience is not None:
        _transience_marks(fig, transience, row=3, to_x=lambda step: step_to_x(step, checkpoints, x_axis))
    if ablation is not None:
        _ablation_panel(fig, points, ablation, row=5, x_axis=x_axis)
    if paths is not None:
        from induction.plots.paths import paths_panel

        paths_panel(fig, points, row=n_rows, formation=paths.get("formation"))
    if audit is not None and audit.get("suspect"):
        _mark_suspect(fig, points, audit)
    pc = phase_change
    if pc is not None:
        fig.add_vrect(x0=step_to_x(pc.start_step, checkpoints, x_axis), x1=step_to_x(pc.end_step, checkpoints, x_axis),
                      fillcolor="rgba(213,94,0,0.12)", line_width=0, layer="below", row="all", col=1)
        fig.add_vline(x=step_to_x(pc.step, checkpoints, x_axis), line=dict(color=PALETTE[3], width=1.5, dash="dash"),
                      row="all", col=1)
    fig.update_xaxes(type="log")
    fig.update_xaxes(title_text=TITLES[x_axis], row=n_rows, col=1)
    fig.update_yaxes(title_text="attention", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="score", range=[-1.05, 1.05], row=2, col=1)
    fig.update_yaxes(title_text="nats", row=3, col=1)
    fig.update_yaxes(title_text="nats/token", row=4, col=1)
    window = "" if pc is None else f" — phase change at step {pc.step} ({pc.start_step}-{pc.end_step})"
    return paper_layout(fig, width=COLUMN_WIDTH_PX + 200, height=900 + 220 * (n_rows - 4),
                        title=f"Induction-head formation — {name}{window}")


def _transience_marks(fig: go.Figure, t: Any, row: int, to_x: Any = lambda step: step) -> None:
    """`plot_formation`'s marks of the ICL score's fade after the phase change (`track` transience)."""
    colour = PALETTE[3] if t.transient else "#555"
    ci = "" if t.fade_ci is None else f" [{t.fade_ci[0]:+.2f}, {t.fade_ci[1]:+.2f}]"
    label = f"{'transient: ' if t.transient else ''}fade {t.fade:+.2f} nats{ci}"
    fig.add_trace(go.Scatter(x=[to_x(t.peak_step), to_x(t.final_step)], y=[t.peak_icl, t.final_icl], mode="markers+lines",
                             name="ICL peak after the phase change -> last", showlegend=False,
                             line=dict(color=colour, width=1, dash="dot"),
                             marker=dict(color=colour, size=9, symbol=["triangle-down", "circle-open"]),
                             hovertemplate="step %{x}: %{y:.3f}<extra></extra>"), row=row, col=1)
    fig.add_annotation(x=np.log10(max(to_x(t.final_step), 1)), y=t.final_icl, text=label, showarrow=False, xanchor="right",
                       yanchor="bottom", font=dict(size=11, color=colour), row=row, col=1)


def _ablation_panel(fig: go.Figure, points: Sequence[CheckpointScores], ablation: dict, row: int,
                    x_axis: str = "step") -> None:
    """`plot_formation`'s fifth panel (`track --ablate`): joint, summed single and control effects."""
    with_set = [c for c in points if c.induction_set is not None]
    heads = ", ".join(f"L{layer}H{h}" for layer, h in ablation.get("induction_heads") or [])
    fig.update_yaxes(title_text="Δ nats", row=row, col=1)
    fig.add_hline(y=0, line=dict(color="#999", width=1), row=row, col=1)
    if not with_set:
        fig.add_annotation(text=ablation.get("control_unavailable") or "no induction heads to ablate", showarrow=False,
                           xref="x domain", yref="y domain", x=0.5, y=0.5, row=row, col=1)
        return
    steps = [x_of(c, x_axis) for c in with_set]
    sets = [c.induction_set for c in with_set]
    if ablation.get("control_heads"):
        lo = [s["control_min_effect"] for s in sets]
        hi = [s["control_max_effect"] for s in sets]
        fig.add_trace(go.Scatter(x=steps + steps[::-1], y=hi + lo[::-1], fill="toself", fillcolor="rgba(120,120,120,0.2)",
                                 line=dict(width=0), hoverinfo="skip", name="random heads (range)", showlegend=False),
                      row=row, col=1)
        fig.add_trace(go.Scatter(x=steps, y=[s["control_mean_effect"] for s in sets], mode="lines",
                                 name=f"layer-matched random heads ({ablation.get('n_draws')} draws)",
                                 line=dict(color="#777", width=1.5)), row=row, col=1)
    else:
        note = "<br>".join(textwrap.wrap(str(ablation.get("control_unavailable") or "no control"), 80))
        fig.add_annotation(text=note, showarrow=False,
                           xref="x domain", yref="y domain", x=0.01, y=0.98, xanchor="left", yanchor="top",
                           font=dict(size=10), row=row, col=1)
    fig.add_trace(go.Scatter(x=steps, y=[s["summed_single_effects"] for s in sets], mode="lines+markers",
                             name="sum of single-head effects", line=dict(color=PALETTE[1], width=2, dash="dot"),
                             marker=dict(size=4)), row=row, col=1)
    fig.add_trace(go.Scatter(x=steps, y=[s["joint_effect"] for s in sets], mode="lines+markers",
                             name=f"joint ({heads})", line=dict(color=PALETTE[3], width=2.5), marker=dict(size=4)),
                  row=row, col=1)


def plot_mosaic(checkpoints: Sequence[CheckpointScores], phase_change: PhaseChange | None, name: str,
                n_panels: int = 6, score: str = "prefix_matching") -> go.Figure:
    """An induction "mosaic": the layer x head heatmap of `score` at up to `n_panels` checkpoints of a
    run (log-spaced over its steps, or bracketing its phase change: before, start, steepest point, end,
    last), side by side on one colour scale, induction heads outlined."""
    points = list(checkpoints)
    if not points:
        return paper_layout(go.Figure(), title="no checkpoints")
    chosen = _mosaic_checkpoints(points, phase_change, n_panels)
    n_layers = chosen[0].heads.n_layers
    fig = make_subplots(rows=1, cols=len(chosen), subplot_titles=[f"step {c.step}" for c in chosen],
                        horizontal_spacing=0.02)
    signed = score in SIGNED_SCORES
    for col, c in enumerate(chosen, start=1):
        fig.add_trace(go.Heatmap(z=c.heads.grid(score), zmin=-1.0 if signed else 0.0, zmax=1.0, colorscale="RdBu" if signed else "Viridis",
                                 reversescale=signed, showscale=col == len(chosen),
                                 colorbar=dict(title=dict(text=SCORE_LABELS.get(score, score), side="right"), thickness=10),
                                 hovertemplate="L%{y}H%{x}: %{z:.3f}<extra>step " + str(c.step) + "</extra>"),
                      row=1, col=col)
        for layer, head in c.heads.induction_heads():
            fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5,
                          y1=layer + 0.5, line=dict(color="#000", width=2), row=1, col=col)
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=col)
        fig.update_yaxes(dtick=1, autorange="reversed", showticklabels=col == 1,
                         title_text="layer" if col == 1 else None, row=1, col=col)
    return paper_layout(fig, width=max(COLUMN_WIDTH_PX, 150 * len(chosen) + 120), height=max(240, 45 * n_layers + 170),
                        title=f"Induction mosaic: {SCORE_LABELS.get(score, score)} over training — {name}")


def _mosaic_checkpoints(points: list[CheckpointScores], phase_change: PhaseChange | None, n_panels: int) -> list[CheckpointScores]:
    """Checkpoints nearest to log-spaced steps; around a phase change, its start, steepest point and end."""
    steps = np.array([max(c.step, 1) for c in points], dtype=float)
    if phase_change is not None:
        first, last = steps.min(), steps.max()
        targets = [first, np.sqrt(first * phase_change.start_step), phase_change.start_step, phase_change.step,
                   phase_change.end_step, last]
    else:
        targets = list(np.geomspace(steps.min(), steps.max(), num=n_panels))
    idx = sorted({int(np.argmin(np.abs(np.log(steps) - np.log(t)))) for t in targets[:n_panels]})
    return [points[i] for i in idx]


def _mark_suspect(fig: go.Figure, points: Sequence[CheckpointScores], audit: dict) -> None:
    """Hollow red markers on the suspect checkpoints (ICL score and held-out loss) and a note."""
    bad = {s["step"]: s for s in audit["suspect"]}
    marked = [c for c in points if c.step in bad]
    marker = dict(symbol="circle-open", size=11, color="#d62728", line=dict(width=2))
    hover = ["suspect: " + ", ".join(bad[c.step]["reasons"]) for c in marked]
    for row, values in ((3, [c.icl_score for c in marked]), (4, [c.held_out_loss for c in marked])):
        fig.add_trace(go.Scatter(x=[c.step for c in marked], y=values, mode="markers", marker=marker, text=hover,
                                 name="suspect checkpoint (audit)", showlegend=row == 3,
                                 hovertemplate="step %{x}: %{text}<extra></extra>"), row=row, col=1)
    fit = "left out of the phase-change fit" if audit.get("excluded_from_fit", True) else "kept in the fit"
    steps = ", ".join(str(s) for s in sorted(bad))
    fig.add_annotation(text=f"suspect checkpoints (audit), {fit}: steps {steps}", showarrow=False, xref="paper",
                       yref="paper", x=0, y=-0.06, xanchor="left", yanchor="top", font=dict(size=10, color="#d62728"))
