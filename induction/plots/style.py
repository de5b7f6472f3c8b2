"""The figures' shared style: palette, fonts, sizes, and the layer x head heatmap every report uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


# ---- paper style ---------------------------------------------------------------------------------

DPI = 96
"""Pixels per inch of a figure's size: plotly sizes figures in CSS pixels and kaleido writes PDF and
SVG at 96 of them to the inch (a 528-pixel-wide figure is a 396-point, 5.5-inch PDF page)."""

VENUES: dict[str, dict[str, float]] = {
    # Text widths in inches, from each venue's LaTeX style file (2024-2025 editions):
    "neurips": {"column": 5.5, "full": 5.5},  # neurips_2024.sty: \textwidth 5.5in, one column
    "iclr": {"column": 5.5, "full": 5.5},  # iclr2025_conference.sty: \textwidth 5.5in, one column
    "icml": {"column": 3.25, "full": 6.75},  # icml2024.sty: \columnwidth 3.25in, \textwidth 6.75in
    "acl": {"column": 3.03, "full": 6.30},  # acl.sty: \textwidth 16cm, two 7.7cm columns
}
"""venue -> {"column": one column's width, "full": the text width} in inches."""

STYLES = ("screen", "paper")


@dataclass(frozen=True)
class FigureStyle:
    """How a figure is sized and lettered for a paper; `apply_style` applies it to a plotly figure.

    Attributes:
        venue: whose column widths (`VENUES`: neurips, iclr, icml, acl).
        span: column (one column of a two-column venue) or full (the text width).
        font_pt: the text size in points (captions of these venues are 9-10 pt; figure text 7-9 pt).
        font_family: CSS font list; the first one installed is used and embedded in PDF output
            (Liberation Sans, metric-compatible with Helvetica/Arial, where those are missing).
        sequential: the colour scale of unsigned quantities (cividis: made for colour-vision deficiency).
        diverging: the colour scale of signed quantities (RdBu: ColorBrewer's colour-blind-safe diverging scale).
        palette: line and marker colours (Okabe & Ito 2008).
    """

    venue: str = "neurips"
    span: str = "column"
    font_pt: int | float = 8
    font_family: str = "Helvetica, Arial, Liberation Sans, DejaVu Sans, sans-serif"
    sequential: str = "Cividis"
    diverging: str = "RdBu"
    palette: tuple[str, ...] = PALETTE

    def __post_init__(self) -> None:
        if self.venue not in VENUES:
            raise ValueError(f"venue must be one of {', '.join(VENUES)}, got {self.venue!r}")
        if self.span not in ("column", "full"):
            raise ValueError(f"span must be column or full, got {self.span!r}")
        if not 5 <= self.font_pt <= 12:
            raise ValueError(f"font_pt must be in [5, 12] points, got {self.font_pt}")

    @property
    def width_in(self) -> float:
        return VENUES[self.venue][self.span]

    @property
    def width_px(self) -> int:
        return round(self.width_in * DPI)

    @property
    def font_px(self) -> float:
        """`font_pt` in the figure's pixels (1 pt = 1/72 in)."""
        return self.font_pt * DPI / 72


def figure_style(style: "str | FigureStyle | None") -> FigureStyle | None:
    """None for the screen style (the figures as drawn), a `FigureStyle` for "paper" or a given one."""
    if style is None or isinstance(style, FigureStyle):
        return style
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    return FigureStyle() if style == "paper" else None


def apply_style(fig: go.Figure, style: "str | FigureStyle | None") -> go.Figure:
    """Restyle `fig` in place for `style` and return it: the same figure object the HTML shows,
    at the venue's width (height scaled to keep its shape), in `font_pt` text, with the style's
    colour scales and palette. The screen style (None, "screen") leaves it as drawn."""
    style = figure_style(style)
    if style is None:
        return fig
    width = fig.layout.width or COLUMN_WIDTH_PX
    height = fig.layout.height or 380
    scale = style.width_px / width
    size = style.font_px
    fig.update_layout(
        width=style.width_px, height=min(max(round(height * scale), round(1.6 * DPI)), style.width_px),
        font=dict(family=style.font_family, size=size, color="#000"), colorway=list(style.palette),
        margin=dict(l=round(5 * size), r=round(1.5 * size), t=round(3 * size) if fig.layout.title.text else round(size),
                    b=round(4 * size)),
        legend=dict(font=dict(size=size)),
    )
    if fig.layout.title.text:
        fig.update_layout(title_font=dict(size=size * 1.1, family=style.font_family))
    fig.update_xaxes(title_font=dict(size=size), tickfont=dict(size=size))
    fig.update_yaxes(title_font=dict(size=size), tickfont=dict(size=size))
    for note in fig.layout.annotations or ():  # subplot titles and labels
        note.font = dict(size=size, family=style.font_family)
    for trace in fig.data:
        if getattr(trace, "colorscale", None) is not None:
            signed = trace.zmin is not None and trace.zmin < 0 if hasattr(trace, "zmin") else False
            trace.colorscale = style.diverging if signed else style.sequential
            if hasattr(trace, "colorbar"):
                trace.colorbar.title.font = dict(size=size)
                trace.colorbar.tickfont = dict(size=size)
                trace.colorbar.thickness = round(size)
        if getattr(trace, "textfont", None) is not None and trace.type == "heatmap":
            trace.textfont = dict(size=max(size * 0.85, 6 * DPI / 72))
        marker = getattr(trace, "marker", None)
        if marker is not None and getattr(marker, "colorscale", None) is not None:
            marker.colorscale = style.sequential
    rows = max((len(t.z) for t in fig.data if t.type == "heatmap" and t.z is not None), default=0)
    if rows:  # every heatmap row at least one and a half lines of text tall, so each row label shows
        margin = fig.layout.margin
        needed = round(rows * 1.6 * size + margin.t + margin.b + 3 * size)
        fig.update_layout(height=min(max(fig.layout.height, needed), style.width_px))
    _fit_colorbars(fig, size)
    return fig


def _fit_colorbars(fig: go.Figure, size: float) -> None:
    """Heatmap panels side by side, each followed by its colour bar (where it shows one), re-spaced for
    the narrower page: a screen layout's gaps, in fractions of a wider figure, are too narrow for a bar
    and its labels."""
    bars: dict[str, Any] = {}  # x axis -> the heatmap whose colour bar it shows (None: no bar)
    for trace in fig.data:
        if trace.type == "heatmap":
            shown = trace.showscale is not False
            if bars.get(trace.xaxis or "x") is None:
                bars[trace.xaxis or "x"] = trace if shown else None
    if len(bars) < 2 or any(fig.layout[_axis_key(name)].domain is None for name in bars):
        return  # one panel: plotly places its bar beside the plot area itself
    axes = sorted(bars, key=lambda name: fig.layout[_axis_key(name)].domain[0])
    margin = fig.layout.margin
    plot_px = fig.layout.width - (margin.l or 0) - (margin.r or 0)
    gap = (round(size) + 5.5 * size) / plot_px  # a bar, its tick labels and its title
    space = 0.03  # between a panel (or its bar) and the next panel
    panel = (1 - sum(gap for a in axes if bars[a] is not None) - (len(axes) - 1) * space) / len(axes)
    if panel <= 0.1:
        return  # too many panels for the page: leave the screen spacing
    old_centres = [sum(fig.layout[_axis_key(a)].domain) / 2 for a in axes]
    start, new_centres = 0.0, []
    for name in axes:
        fig.layout[_axis_key(name)].domain = (start, start + panel)
        new_centres.append(start + panel / 2)
        if bars[name] is not None:
            bar = bars[name].colorbar
            bar.x, bar.xanchor, bar.xpad = start + panel + 0.01, "left", 2
            start += gap
        start += panel + space
    for note in fig.layout.annotations or ():  # subplot titles follow their panels
        if note.xref == "paper" and note.yanchor == "bottom" and note.x is not None:
            nearest = min(range(len(axes)), key=lambda k: abs(old_centres[k] - note.x))
            note.x = new_centres[nearest]


def _axis_key(name: str) -> str:
    return "xaxis" + name[1:]
