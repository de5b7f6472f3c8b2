"""`induction demo` end to end on the embedded default models (trained once into the test cache)."""

from __future__ import annotations

import json
import re

import pytest

from induction.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--out", str(out), "-q", "--draws", "3"]) == 0
    return out


FIGURES = ("scan_2l", "scatter_2l", "scan_1l", "formation_2l", "formation_1l", "mosaic_2l", "ablate_zero",
           "ablate_mean", "patch_exact", "patch_vs_attribution", "fewshot", "fewshot_ablation")


def test_demo_writes_every_report_and_figure(demo_dir):
    for name in ("scan_2l", "scan_1l", "track_2l", "track_1l", "ablate_zero", "ablate_mean", "patch_exact",
                 "patch_attribution", "fewshot", "demo"):
        report = json.loads((demo_dir / f"{name}.json").read_text())
        prov = report["provenance"]
        assert prov["seed"] == 0 and prov["runtime_s"] > 0 and "torch" in prov["versions"], name
        assert prov["device"] == "cpu" and prov["dtype"] == "float32", name
    html = (demo_dir / "index.html").read_text()
    assert html.count("<figure") == len(FIGURES) and "plotly" in html.lower()
    demo = json.loads((demo_dir / "demo.json").read_text())
    md = (demo_dir / "report.md").read_text()
    linked = re.findall(r"\(figures/(\w+)\.svg\)", md)
    if demo["static_figures"] == "ok":  # Chromium present: every figure is an SVG the report links to
        assert sorted(linked) == sorted(FIGURES)
        for name in FIGURES:
            assert (demo_dir / "figures" / f"{name}.svg").read_text().lstrip().startswith("<svg")
    else:  # no Chromium: the report says so and links no missing file
        assert linked == [] and "Static figures were not written" in md


def test_demo_numbers_are_the_reports_numbers(demo_dir):
    key = json.loads((demo_dir / "demo.json").read_text())["key_numbers"]
    scan2 = json.loads((demo_dir / "scan_2l.json").read_text())
    scan1 = json.loads((demo_dir / "scan_1l.json").read_text())
    flagged = [f"L{h['layer']}H{h['head']}" for h in scan2["heads"] if h["is_induction"]]
    assert sorted(key["2l_induction_heads"]) == sorted(flagged) and flagged  # the 2-layer model has induction heads
    assert not any(h["is_induction"] for h in scan1["heads"])  # the 1-layer control has none
    assert key["2l_icl_score"] == scan2["icl_score"]
    md = (demo_dir / "report.md").read_text()
    assert f"ICL score {scan2['icl_score']:.3f}" in md
    track2 = json.loads((demo_dir / "track_2l.json").read_text())
    track1 = json.loads((demo_dir / "track_1l.json").read_text())
    assert track2["phase_change"] is not None and track1["phase_change"] is None
    assert key["2l_phase_change"] == track2["phase_change"]
    fewshot = json.loads((demo_dir / "fewshot.json").read_text())
    flipped = {s["k"]: s["accuracy"] for s in fewshot["shots"] if s["labels"] == "flipped"}
    assert flipped[4] > 0.8 > flipped[0]  # lookup follows flipped in-context labels, and needs them
