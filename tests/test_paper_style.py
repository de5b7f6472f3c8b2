"""Figures for papers: venue widths at 96 px/in, text in points, colour-blind-safe scales, fonts embedded in PDF."""

from __future__ import annotations

import re

import numpy as np
import pytest
from plotly.colors import get_colorscale

from induction import plots
from induction.plots import DPI, VENUES, FigureStyle, apply_style, static_export_problem


def _heatmaps():
    values = np.array([[0.1, 0.9, 0.2], [0.8, 0.05, 0.3]])
    return plots.head_heatmap(values, "prefix-matching score", title="t"), plots.head_heatmap(values - 0.5, "copying", signed=True)


@pytest.mark.parametrize("venue, span, inches", [("neurips", "column", 5.5), ("icml", "column", 3.25),
                                                  ("icml", "full", 6.75), ("acl", "column", 3.03)])
def test_paper_style_sizes_the_same_figure_to_the_venue(venue, span, inches):
    fig, signed = _heatmaps()
    screen_aspect = fig.layout.height / fig.layout.width
    style = FigureStyle(venue=venue, span=span, font_pt=8)
    out = apply_style(fig, style)
    assert out is fig  # the same figure object the HTML shows, restyled
    assert VENUES[venue][span] == inches and fig.layout.width == round(inches * DPI)
    assert fig.layout.height == pytest.approx(max(screen_aspect * fig.layout.width, 1.6 * DPI), abs=1)
    px = 8 * DPI / 72  # 8 pt in the figure's pixels
    assert fig.layout.font.size == pytest.approx(px)
    assert fig.layout.xaxis.tickfont.size == fig.layout.yaxis.title.font.size == pytest.approx(px)
    assert fig.data[0].colorbar.tickfont.size == pytest.approx(px)
    assert fig.layout.title.font.size == pytest.approx(1.1 * px)
    # Colour-blind-safe scales: cividis for unsigned scores, RdBu for signed ones; the Okabe-Ito palette.
    cividis = [c for _, c in fig.data[0].colorscale]
    assert cividis[0].lower() in ("#00224e", "rgb(0,34,78)", "rgb(0, 34, 78)")
    apply_style(signed, "paper")
    assert [c for _, c in signed.data[0].colorscale] == [c for _, c in get_colorscale("RdBu")]
    assert list(fig.layout.colorway) == list(plots.PALETTE)


def test_side_by_side_heatmaps_leave_room_for_their_colour_bars():
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=("a", "b", "c"), horizontal_spacing=0.05)
    for col in (1, 2, 3):
        fig.add_trace(plots.head_heatmap(np.eye(2), "v").data[0], row=1, col=col)
    fig.update_layout(width=1400, height=300)
    apply_style(fig, FigureStyle(venue="icml", span="full"))
    domains = [fig.layout[f"xaxis{'' if i == 0 else i + 1}"].domain for i in range(3)]
    size = fig.layout.font.size
    plot_px = fig.layout.width - fig.layout.margin.l - fig.layout.margin.r
    for i, (start, end) in enumerate(domains):
        bar = fig.data[i].colorbar
        assert end < bar.x  # each bar right of its own panel ...
        room = ((domains[i + 1][0] - bar.x) * plot_px if i < 2 else (1.0 - bar.x) * plot_px + fig.layout.margin.r)
        assert room >= bar.thickness + 5 * size  # ... with its labels clear of the next panel
        title = fig.layout.annotations[i]
        assert title.x == pytest.approx((start + end) / 2)  # subplot titles follow their panels


def test_screen_style_leaves_the_figure_as_drawn_and_bad_styles_name_the_field():
    fig, _ = _heatmaps()
    before = fig.to_json()
    assert apply_style(fig, "screen") is fig and apply_style(fig, None) is fig and fig.to_json() == before
    with pytest.raises(ValueError, match="style must be one of screen, paper"):
        apply_style(fig, "print")
    with pytest.raises(ValueError, match="venue must be one of neurips, iclr, icml, acl"):
        FigureStyle(venue="nature")
    with pytest.raises(ValueError, match="span must be column or full"):
        FigureStyle(span="half")


def test_reports_plot_in_paper_style(handbuilt_dir):
    from induction import jobs
    from induction.heads.config import ScoreConfig
    from induction.inputs.prompts import RepeatedTokensConfig

    report = jobs.scan(handbuilt_dir, jobs.ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=4),
                                                                           n_bootstrap=0), icl=None))
    screen, paper = report.plot(), report.plot(style="paper")
    assert screen.layout.width != paper.layout.width == FigureStyle().width_px
    assert len(screen.data) == len(paper.data)  # the same figure, only restyled
    assert all(np.array_equal(np.asarray(a.z, dtype=float), np.asarray(b.z, dtype=float))
               for a, b in zip(screen.data, paper.data) if a.type == "heatmap")


@pytest.mark.skipif(static_export_problem() is not None, reason="static export needs kaleido and Chromium")
def test_paper_pdf_is_the_venue_width_and_embeds_its_fonts(tmp_path):
    fig, _ = _heatmaps()
    apply_style(fig, FigureStyle(venue="icml", span="column"))
    path = plots.save_figure(fig, tmp_path / "fig.pdf")
    pdf = path.read_bytes()
    (box,) = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)[:1]
    assert float(box[0]) == pytest.approx(3.25 * 72, abs=1)  # 3.25 in, in points
    fonts = re.findall(rb"/BaseFont\s*/([A-Za-z0-9+\-]+)", pdf)
    descriptors = len(re.findall(rb"/Type\s*/FontDescriptor", pdf))
    embedded = len(re.findall(rb"/FontFile[23]?\s", pdf))
    assert fonts and descriptors >= 1 and embedded == descriptors, (fonts, descriptors, embedded)
    assert all(b"+" in name for name in fonts)  # subset-embedded (ABCDEF+Name), not referenced by name
    assert b"/Type3" not in pdf
    # The demo's batch export (README gallery) keeps each figure's own size too.
    assert plots.save_figures({"fig": fig}, tmp_path) == {}
    assert re.search(r'<svg[^>]* width="312" height="\d+"', (tmp_path / "fig.svg").read_text()[:400])
