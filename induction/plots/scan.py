"""Figures of a scan: head-score heatmaps and Olsson et al.'s prefix-matching vs copying scatter."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from induction.heads.records import HeadTable
from induction.plots.style import COLUMN_WIDTH_PX, PALETTE, SCORE_LABELS, SIGNED_SCORES, head_heatmap, paper_layout


def plot_scan(s: HeadTable, name: str, kind: str = "heatmap", prefix_threshold: float = 0.4,
              copying_threshold: float = 0.5) -> go.Figure:
    """Scan figures: `heatmap` (prefix-matching, copying and the offset prefix-matching, each cell of
    the last labelled with its induction offset d; induction heads outlined solid, shifted induction
    heads dashed), `scatter` (prefix-matching vs copying, Olsson et al. 2022, with the detector's
    thresholds), or any single score name."""
    marks = s.grid("is_induction") > 0
    shifted = s.grid("is_shifted_induction") > 0
    if kind in SCORE_LABELS:
        return head_heatmap(s.grid(kind), SCORE_LABELS[kind], signed=kind in SIGNED_SCORES, marks=marks,
                            title=f"{SCORE_LABELS[kind]} — {name}")
    if kind == "scatter":
        return prefix_copying_scatter(s, title=f"Induction heads — {name}", prefix_threshold=prefix_threshold,
                                      copying_threshold=copying_threshold)
    if kind != "heatmap":
        raise ValueError(f"unknown scan plot {kind!r}; choose heatmap, scatter or one of {', '.join(SCORE_LABELS)}")
    panels = (("prefix_matching", False), ("copying", True), ("offset_prefix_matching", False))
    fig = make_subplots(rows=1, cols=3, subplot_titles=("prefix matching", "copying", "offset prefix matching (d)"),
                        horizontal_spacing=0.1)
    offset = s.grid("induction_offset")
    domains = [fig.layout[f"xaxis{'' if col == 1 else col}"].domain for col in (1, 2, 3)]
    for col, (score, signed) in enumerate(panels, start=1):
        values = s.grid(score)
        if score == "offset_prefix_matching":  # each cell: its score and the offset d it is at
            text = [[f"{values[layer, h]:.2f}<br>d={int(offset[layer, h])}" if np.isfinite(values[layer, h]) else ""
                     for h in range(s.n_heads)] for layer in range(s.n_layers)]
            style = dict(text=text, texttemplate="%{text}")
        else:
            style = dict(texttemplate="%{z:.2f}")
        fig.add_trace(
            go.Heatmap(
                z=values, x=list(range(s.n_heads)), y=list(range(s.n_layers)),
                zmin=-1.0 if signed else 0.0, zmax=1.0, colorscale="RdBu" if signed else "Viridis",
                reversescale=signed, textfont=dict(size=10), showscale=col <= 2,
                colorbar=dict(x=domains[col - 1][1] + 0.008, xanchor="left", thickness=10, len=0.9),
                hovertemplate="L%{y}H%{x}: %{z:.3f}<extra></extra>", **style,
            ),
            row=1, col=col,
        )
        for flagged, dash in ((marks, "solid"), (shifted, "dash")):
            for layer, h in zip(*np.nonzero(flagged)):
                fig.add_shape(type="rect", x0=h - 0.5, x1=h + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                              line=dict(color="#000", width=2.5, dash=dash), row=1, col=col)
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, autorange="reversed",
                         showticklabels=col == 1, row=1, col=col)  # the layers are the same in every panel
    width = max(3 * COLUMN_WIDTH_PX - 150, 170 * s.n_heads + 300)
    return paper_layout(fig, width=width, height=max(280, 45 * s.n_layers + 150),
                        title=f"Head scores — {name} (induction heads outlined, shifted induction heads dashed)")


def prefix_copying_scatter(s: HeadTable, title: str | None = None, prefix_threshold: float = 0.4,
                           copying_threshold: float = 0.5) -> go.Figure:
    """Prefix-matching vs copying per head, coloured by layer, with the detector's thresholds."""
    fig = go.Figure()
    prefix, copying = s.grid("prefix_matching"), s.grid("copying")
    for layer in range(s.n_layers):
        fig.add_trace(
            go.Scatter(
                x=prefix[layer], y=copying[layer], mode="markers",
                name=f"layer {layer}", marker=dict(size=9, color=PALETTE[layer % len(PALETTE)],
                                                   line=dict(width=0.5, color="#333")),
                text=[f"L{layer}H{h}" for h in range(s.n_heads)],
                hovertemplate="%{text}: prefix %{x:.3f}, copying %{y:.3f}<extra></extra>",
            )
        )
    fig.add_shape(type="rect", x0=prefix_threshold, x1=1.02, y0=copying_threshold, y1=1.02,
                  fillcolor="rgba(0,158,115,0.10)", line=dict(width=0), layer="below")
    fig.update_xaxes(title_text="prefix-matching score (attention fraction)", range=[-0.02, 1.02])
    fig.update_yaxes(title_text="copying score", range=[-1.05, 1.05])
    return paper_layout(fig, title=title)
