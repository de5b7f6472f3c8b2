"""Figures: built from the report objects, exported to HTML always and to SVG where Chromium exists."""

from __future__ import annotations

import pytest
from helpers import ROLES, build_induction_model

from induction import plots
from induction.heads.config import ScoreConfig
from induction.heads.scores import score_heads
from induction.inputs.prompts import RepeatedTokensConfig
from induction.plots import export as plot_export
from induction.plots import track as plot_track
from induction.reports.scan import ScanReport


@pytest.fixture(scope="module")
def report():
    scores = score_heads(build_induction_model(), ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8), n_bootstrap=0))
    return ScanReport(model="handbuilt", checkpoint=None, scores=scores, icl=None)


def test_heatmap_shows_the_report_numbers(report):
    fig = report.plot("heatmap")
    prefix, copying = fig.data[0], fig.data[1]
    assert (prefix.z == report.scores.prefix_matching.numpy()).all()
    assert (copying.z == report.scores.copying.numpy()).all()
    outlined = {(round((s.y0 + s.y1) / 2), round((s.x0 + s.x1) / 2)) for s in fig.layout.shapes}
    assert outlined == {ROLES.induction}  # only the induction head is outlined (in both panels)


def test_scatter_places_each_head_at_its_scores(report):
    fig = report.plot("scatter")
    layer1 = fig.data[1]
    assert list(layer1.x) == report.scores.prefix_matching[1].tolist()
    assert list(layer1.y) == report.scores.copying[1].tolist()


def test_html_always_and_clear_error_without_chromium(report, tmp_path, monkeypatch):
    plots.save_figure(report.plot(), tmp_path / "f.html")
    assert "prefix matching" in (tmp_path / "f.html").read_text()
    monkeypatch.setattr(plot_export, "_find_chrome", lambda: None)
    with pytest.raises(plots.PlotExportError, match="apt-get install chromium"):
        plots.save_figure(report.plot(), tmp_path / "f.svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.html"]  # nothing half-written


@pytest.mark.skipif(plots.static_export_problem() is not None, reason="no Chromium for kaleido on this machine")
def test_svg_export_contains_the_figure(report, tmp_path):
    plots.save_figure(report.plot("scatter"), tmp_path / "f.svg")
    svg = (tmp_path / "f.svg").read_text()
    assert svg.startswith("<svg") and "prefix-matching score" in svg


def test_mosaic_brackets_the_phase_change():
    from induction.measures.formation import CheckpointScores, PhaseChange

    points = [CheckpointScores(step=s, tokens_seen=None, loss=None, held_out_loss=0.0, icl_score=None, heads=[])
              for s in (0, 1, 2, 5, 10, 50, 100, 400, 450, 500, 550, 600, 1000)]
    chosen = [c.step for c in plot_track._mosaic_checkpoints(points, PhaseChange(start_step=440, step=505, end_step=560), 6)]
    assert chosen[0] == 0 and chosen[-1] == 1000
    assert {450, 500, 550} <= set(chosen)  # the panels show the change itself, not just log-spaced steps
    flat = [c.step for c in plot_track._mosaic_checkpoints(points, None, 4)]
    assert flat == sorted(flat) and len(flat) == 4 and flat[-1] == 1000


def test_heatmap_marks_shifted_heads_and_labels_their_offset():
    """The third panel is offset prefix-matching, each cell labelled with its d; the shifted head is dashed."""
    from induction.bench.handbuilt import build_handbuilt
    from induction.bench.suite import SUITE

    spec = SUITE["attn-v20-h8"]()
    model = build_handbuilt(spec)
    scores = score_heads(model, ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=16), n_bootstrap=0))
    fig = ScanReport(model="suite", checkpoint=None, scores=scores, icl=None).plot("heatmap")
    (shifted,) = [(layer, h) for layer, rs in enumerate(spec.layers) for h, r in enumerate(rs) if r.role == "shifted_induction"]
    offset_panel = fig.data[2]
    assert (offset_panel.z == scores.offset_prefix_matching.numpy()).all()
    assert offset_panel.text[shifted[0]][shifted[1]].endswith("<br>d=3")
    dashed = {(round((s.y0 + s.y1) / 2), round((s.x0 + s.x1) / 2)) for s in fig.layout.shapes if s.line.dash == "dash"}
    assert dashed == {shifted}
