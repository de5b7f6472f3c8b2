"""The figures' shared style: palette, fonts, sizes, and the layer x head heatmap every report uses."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

# Okabe & Ito (2008), colour-blind safe.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


FONT = dict(family="Helvetica, Arial, sans-serif", size=12, color="#222")


COLUMN_WIDTH_PX = 500


SCORE_LABELS = {
    "prefix_matching": "prefix-matching score",
    "copying": "copying score",
    "copying_ov": "OV copying (eigenvalue) score",
    "previous_token": "previous-token score",
    "duplicate_token": "duplicate-token score",
    "offset_prefix_matching": "offset prefix-matching (at the induction offset)",
    "offset_copying": "offset copying (at the induction offset)",
}


SIGNED_SCORES = {"copying", "copying_ov", "offset_copying"}


def paper_layout(fig: go.Figure, width: int = COLUMN_WIDTH_PX, height: int = 380, title: str | None = None) -> go.Figure:
    """Apply the shared paper style in place and return the figure."""
    fig.update_layout(
        template="simple_white", font=FONT, width=width, height=height,
        margin=dict(l=60, r=20, t=50 if title else 20, b=55),
        title=dict(text=title, x=0.02, xanchor="left", font=dict(size=13)) if title else None,
        colorway=list(PALETTE), legend=dict(font=dict(size=11)),
    )
    return fig


def head_heatmap(values: np.ndarray, label: str, signed: bool = False, title: str | None = None,
                 marks: np.ndarray | None = None, zrange: tuple[float, float] | None = None) -> go.Figure:
    """A layer x head heatmap of one per-head quantity; `marks` outlines selected heads."""
    n_layers, n_heads = values.shape
    if zrange is None:
        zrange = (-1.0, 1.0) if signed else (0.0, 1.0)
    text = [[f"{values[layer, h]:.2f}" for h in range(n_heads)] for layer in range(n_layers)]
    fig = go.Figure(
        go.Heatmap(
            z=values, x=list(range(n_heads)), y=list(range(n_layers)), zmin=zrange[0], zmax=zrange[1],
            colorscale="RdBu" if signed else "Viridis", reversescale=signed,
            colorbar=dict(title=dict(text=label, side="right"), thickness=12),
            text=text, texttemplate="%{text}", textfont=dict(size=10),
            hovertemplate="L%{y}H%{x}: %{z:.3f}<extra></extra>",
        )
    )
    if marks is not None:
        for layer, h in zip(*np.nonzero(marks)):
            fig.add_shape(type="rect", x0=h - 0.5, x1=h + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                          line=dict(color="#000", width=2.5))
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed")
    return paper_layout(fig, width=max(COLUMN_WIDTH_PX, 60 * n_heads + 160), height=max(260, 45 * n_layers + 140), title=title)


LABEL_VARIANT_NAMES = {
    "gold": "gold labels", "random": "random labels", "flipped": "flipped labels",
    "unrelated": "unrelated labels", "random_inputs": "random inputs", "random_label_space": "random label space",
    "shuffled": "shuffled labels",
}
