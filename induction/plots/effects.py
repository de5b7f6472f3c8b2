"""Figures of per-head causal effects, and attribution against exact patching."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from torch import Tensor

from induction.plots.style import PALETTE, head_heatmap, paper_layout


def plot_effects(effects: Tensor, metric: str, title: str) -> go.Figure:
    """Layer x head heatmap of each head's effect (value - baseline) on `metric`."""
    values = effects.numpy()
    bound = float(np.nanmax(np.abs(values))) or 1.0
    return head_heatmap(values, f"Δ {metric}", signed=True, zrange=(-bound, bound), title=title)


def plot_patching_comparison(exact: Tensor, attribution: Tensor, metric: str) -> go.Figure:
    """Attribution patching's estimate against exact activation patching, one point per head
    (`exact`, `attribution`: `[layer, head_index]` effects)."""
    x = exact.flatten().numpy()
    y = attribution.flatten().numpy()
    n_heads = exact.shape[1]
    labels = [f"L{i // n_heads}H{i % n_heads}" for i in range(len(x))]
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    fig = go.Figure([
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#999", dash="dash", width=1), showlegend=False,
                   hoverinfo="skip"),
        go.Scatter(x=x, y=y, mode="markers+text", text=labels, textposition="top center", textfont=dict(size=9),
                   marker=dict(size=8, color=PALETTE[0]), showlegend=False,
                   hovertemplate="%{text}: exact %{x:.3f}, attribution %{y:.3f}<extra></extra>"),
    ])
    fig.update_xaxes(title_text=f"exact patching effect on {metric} (nats)")
    fig.update_yaxes(title_text="attribution estimate (nats)")
    return paper_layout(fig, title="Attribution patching vs exact activation patching")
