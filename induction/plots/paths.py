"""Figures of path patching: sender x receiver heatmaps per input, and the paths over training."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from induction.measures.formation import CheckpointScores
from induction.plots.style import COLUMN_WIDTH_PX, PALETTE, paper_layout

INPUT_NAMES = {"q": "query", "k": "key", "v": "value"}
INPUT_COLOURS = {"q": PALETTE[0], "k": PALETTE[3], "v": PALETTE[2]}


def _label(head: Sequence[int]) -> str:
    return f"L{head[0]}H{head[1]}"


def plot_paths(paths: Sequence[dict[str, Any]], metric: str, title: str) -> go.Figure:
    """Three sender x receiver heatmaps (query, key, value) of each path's effect on `metric`
    (`paths`: records with ``sender``, ``receiver``, ``input``, ``effect``), named paths outlined."""
    senders = sorted({tuple(p["sender"]) for p in paths})
    receivers = sorted({tuple(p["receiver"]) for p in paths})
    bound = max((abs(p["effect"]) for p in paths), default=0.0) or 1.0
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"into the {INPUT_NAMES[x]}" for x in "qkv"],
                        horizontal_spacing=0.04)
    for col, which in enumerate("qkv", start=1):
        z = np.full((len(senders), len(receivers)), np.nan)
        for p in paths:
            if p["input"] == which:
                i, j = senders.index(tuple(p["sender"])), receivers.index(tuple(p["receiver"]))
                z[i, j] = p["effect"]
                if p.get("named"):
                    fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                                  line=dict(color="#000", width=2), row=1, col=col)
        fig.add_trace(go.Heatmap(
            z=z, x=list(range(len(receivers))), y=list(range(len(senders))), zmin=-bound, zmax=bound,
            colorscale="RdBu", reversescale=True, showscale=col == 3,
            colorbar=dict(title=dict(text=f"Δ {metric}", side="right"), thickness=12),
            text=[[("" if np.isnan(v) else f"{v:.2f}") for v in row] for row in z], texttemplate="%{text}",
            textfont=dict(size=9), hovertemplate="sender %{y}, receiver %{x}: %{z:.3f}<extra></extra>"),
            row=1, col=col)
        fig.update_xaxes(title_text="receiver", tickvals=list(range(len(receivers))),
                         ticktext=[_label(r) for r in receivers], row=1, col=col)
        fig.update_yaxes(tickvals=list(range(len(senders))), ticktext=[_label(s) for s in senders],
                         autorange="reversed", showticklabels=col == 1, title_text="sender" if col == 1 else None,
                         row=1, col=col)
    width = max(COLUMN_WIDTH_PX, 3 * (40 * len(receivers) + 60) + 160)
    return paper_layout(fig, width=width, height=max(280, 28 * len(senders) + 160), title=title)


def paths_panel(fig: go.Figure, points: Sequence[CheckpointScores], row: int,
                formation: dict[str, Any] | None = None) -> None:
    """`plot_formation`'s paths panel (`track --paths`): the summed effect on the repeat loss of the
    paths into the final induction heads through their queries, keys and values, each with its
    bootstrap interval over sequences as a band; with `formation` (`key_path_formation`), the key
    paths' formation step dotted and its interval shaded."""
    fig.update_yaxes(title_text="Δ nats", row=row, col=1)
    fig.add_hline(y=0, line=dict(color="#999", width=1), row=row, col=1)
    with_paths = [c for c in points if c.path_inputs]
    if not with_paths:
        fig.add_annotation(text="no induction heads to path-patch", showarrow=False, xref="x domain",
                           yref="y domain", x=0.5, y=0.5, row=row, col=1)
        return
    steps = [c.step for c in with_paths]
    for which in "qkv":
        blocks = [c.path_inputs[which] for c in with_paths]
        colour = INPUT_COLOURS[which]
        if all(b.get("ci") for b in blocks):
            lo, hi = [b["ci"][0] for b in blocks], [b["ci"][1] for b in blocks]
            rgb = tuple(int(colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
            fig.add_trace(go.Scatter(x=steps + steps[::-1], y=hi + lo[::-1], fill="toself", line=dict(width=0),
                                     fillcolor=f"rgba({rgb[0]},{rgb[1]},{rgb[2]},0.18)", hoverinfo="skip",
                                     showlegend=False), row=row, col=1)
        fig.add_trace(go.Scatter(x=steps, y=[b["effect"] for b in blocks], mode="lines+markers",
                                 name=f"{INPUT_NAMES[which]} paths into the final induction heads",
                                 line=dict(color=colour, width=2.5 if which == "k" else 1.8), marker=dict(size=4)),
                      row=row, col=1)
    key = (formation or {}).get("k") or {}
    if key.get("formed_step_ci"):
        lo, hi = key["formed_step_ci"]
        fig.add_vrect(x0=max(lo, 1), x1=max(hi, 1), fillcolor="rgba(0,0,0,0.08)", line_width=0, layer="below",
                      row=row, col=1)
    if key.get("formed_step"):
        fig.add_vline(x=key["formed_step"], line=dict(color=INPUT_COLOURS["k"], width=1.5, dash="dot"), row=row, col=1)
