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


def test_demo_pages_open_with_the_summary_read_from_the_reports(demo_dir):
    scan2 = json.loads((demo_dir / "scan_2l.json").read_text())
    track2 = json.loads((demo_dir / "track_2l.json").read_text())
    fewshot = json.loads((demo_dir / "fewshot.json").read_text())
    md = (demo_dir / "report.md").read_text()
    headings = re.findall(r"^## (.+)$", md, re.M)
    assert headings[0] == "Summary"
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    icl = scan2["icl"]
    assert f"**ICL score: {icl['score']:+.2f} nats** (95% CI {icl['ci'][0]:+.2f} to {icl['ci'][1]:+.2f})" in summary
    pc = track2["phase_change"]
    assert f"**Phase change: step {pc['step']}** (window: steps {pc['start_step']} to {pc['end_step']}" in summary
    heads = [f"L{h['layer']}H{h['head']}" for h in sorted(scan2["heads"], key=lambda h: -h["prefix_matching"]) if h["is_induction"]]
    assert f"**Induction heads: {', '.join(heads)}**" in summary
    gold8 = next(s for s in fewshot["shots"] if s["labels"] == "gold" and s["k"] == 8)
    assert f"**Few-shot accuracy (lookup): {gold8['accuracy']:.3f}** (95% CI {gold8['accuracy_ci'][0]:.3f}" in summary
    control = json.loads((demo_dir / "ablate_zero.json").read_text())["control"]
    assert f"**Ablating the induction heads: {control['effect']:+.2f} nats on the ICL score**" in summary
    found = json.loads((demo_dir / "demo.json").read_text())["summary"]  # the same findings, machine-readable
    assert [f["key"] for f in found] == ["induction_heads", "icl_score", "phase_change", "causal_effect", "fewshot"]
    assert all(f"**{f['title']}: {f['value']}** ({f['interval']}). {f['sentence']}" in summary for f in found)
    page = (demo_dir / "index.html").read_text()
    # the summary before any figure; the raw numbers only inside the disclosure at the end
    assert page.index("id='summary'") < page.index("<figure") < page.index("<details id='raw'>") < page.index("<pre>")
    assert page.count("<pre>") == 1


def test_demo_track_viewer_shows_the_stripe_forming(demo_dir):
    from browser import embedded_all

    views = embedded_all((demo_dir / "index.html").read_text())
    assert {"patterns_2l", "patterns_1l", "patterns_track_2l"} <= set(views)
    track = views["patterns_track_2l"]
    scan2 = json.loads((demo_dir / "scan_2l.json").read_text())
    assert sorted(track["heads"]) == sorted(f"L{h['layer']}H{h['head']}" for h in scan2["heads"] if h["is_induction"])
    stripe = [max(sum(p) / len(p) for p in frame["stripe"]) for frame in track["frames"]]
    assert stripe[0] < 0.2 and stripe[-1] > 0.6, stripe  # no stripe at initialisation, a clear one at the end
    assert track["frames"][-1]["label"].startswith("step 1000")
    track2 = json.loads((demo_dir / "track_2l.json").read_text())
    pc = track2["phase_change"]
    window = [f"step {c['step']} (phase change)" for c in track2["checkpoints"] if pc["start_step"] <= c["step"] <= pc["end_step"]]
    assert [f["label"] for f in track["frames"] if "(phase change)" in f["label"]] == window  # every one of them shown
    assert track["cells"] == 64 and track["block"] == 2 and len(track["frames"]) <= 24 + len(window)
    # every head of each model in the viewers its heatmap links to, starting on the strongest
    assert len(views["patterns_2l"]["heads"]) == 8 and views["patterns_2l"]["heads"][views["patterns_2l"]["initial"]] == "L1H1"


@pytest.mark.parametrize("width", [1400, 1000])
def test_demo_page_in_headless_chromium(demo_dir, width):
    """The page at two window widths: nothing overflows, every figure and viewer drew, the summary
    comes first, and nothing was requested from the network."""
    import browser

    if browser.chromium() is None:
        pytest.skip("no chromium binary (apt-get install chromium; scripts/setup.sh does it best-effort)")
    seen = browser.render(demo_dir / "index.html", width)
    assert seen["innerWidth"] == width
    assert seen["scrollWidth"] <= seen["innerWidth"] and not seen["wide"], seen["wide"]
    assert len(seen["figures"]) == len(FIGURES)
    for fig in seen["figures"]:
        assert fig["drawn"] and fig["left"] >= 0 and fig["right"] <= width, fig
    assert len(seen["views"]) == 3
    for view in seen["views"]:
        assert view["drawn"] and view["ink"] > 200 and view["right"] <= width, view
    assert seen["sections"][:2] == ["h1", "summary"]
    assert all(url.startswith(("data:", "blob:", "file:")) for url in seen["resources"]), seen["resources"]
