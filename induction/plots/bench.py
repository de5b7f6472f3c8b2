"""The bench figure: each method's precision and recall on every hand-built model."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from induction.bench.suite import ModelBench
from induction.plots.style import COLUMN_WIDTH_PX, paper_layout


def plot_bench(models: Sequence[ModelBench], title: str) -> go.Figure:
    """Method x model heatmaps of recall and precision against the truth each method is scored on.

    Cells show the value and, in brackets, the rank of the method's last true head over the number
    of true heads (equal: the true heads come first). Blank cells: undefined (nothing named or nothing true).
    """
    methods = [s.method for s in models[0].methods]
    names = [m.name for m in models]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("recall", "precision"), horizontal_spacing=0.06)
    for col, what in enumerate(("recall", "precision"), start=1):
        z, text = [], []
        for method in methods:
            row, labels = [], []
            for m in models:
                s = m.method(method)
                value = getattr(s, what)
                row.append(np.nan if value is None else value)
                rank = "" if s.true_head_rank is None else f" [{s.true_head_rank}/{len(m.truth.heads(s.truth))}]"
                labels.append(("–" if value is None else f"{value:.2f}") + rank)
            z.append(row)
            text.append(labels)
        fig.add_trace(
            go.Heatmap(
                z=z, x=names, y=methods, zmin=0.0, zmax=1.0, colorscale="Viridis", text=text,
                texttemplate="%{text}", textfont=dict(size=10), showscale=col == 2,
                colorbar=dict(thickness=10, len=0.9), hovertemplate="%{y} on %{x}: %{text}<extra>" + what + "</extra>",
            ),
            row=1, col=col,
        )
        fig.update_yaxes(autorange="reversed", showticklabels=col == 1, row=1, col=col)
        fig.update_xaxes(tickangle=-30, row=1, col=col)
    width = max(2 * COLUMN_WIDTH_PX, 2 * 110 * len(names) + 300)
    fig = paper_layout(fig, width=width, height=max(380, 34 * len(methods) + 160), title=title)
    fig.update_layout(margin=dict(l=170, r=20, t=60, b=90))
    return fig
