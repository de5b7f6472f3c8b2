"""The attention-pattern viewer: its data is the model's pattern, the stripe sits where induction puts it,
pooling keeps row sums, the default model's layer-1 heads draw the stripe and the 1-layer control's don't."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from browser import embedded
from helpers import ROLES, assert_close, build_induction_model

from induction.heads.patterns import (
    PatternConfig,
    check_heads,
    head_patterns,
    offset_profile,
    parse_head,
    pool_pattern,
)
from induction.inputs.prompts import RepeatedTokensConfig, prefix_mask
from induction.plots.patterns import decode, pattern_view_html, viewer_data

PROMPTS = RepeatedTokensConfig(n_prompts=4, seq_len=40, min_period=5, max_period=12, seed=3)


@pytest.fixture(scope="module")
def hand():
    return build_induction_model()


def test_viewer_data_is_the_models_pattern(hand):
    heads = [ROLES.induction, ROLES.previous_token, ROLES.fixed_offset]
    patterns = head_patterns(hand, heads, PROMPTS)
    with torch.no_grad():
        _, cache = hand.run_with_cache(patterns.tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    data = embedded(pattern_view_html(patterns))
    assert data["heads"] == ["L1H0", "L0H0", "L0H2"] and data["block"] == 1 and data["cells"] == 40
    for i, (layer, h) in enumerate(heads):
        for b in range(PROMPTS.n_prompts):
            expected = cache[f"blocks.{layer}.attn.hook_pattern"][b, h].float().numpy()
            shown = decode(data["frames"][0]["patterns"][i][b], "float32", 40)
            assert np.array_equal(shown, expected), (layer, h, b)
    # the labels and periods are the prompts' own
    assert [p["period"] for p in data["prompts"]] == patterns.periods.tolist()
    assert data["prompts"][0]["labels"] == ["BOS"] + [str(t) for t in patterns.tokens[0, 1:].tolist()]
    # uint8 travels within half a step of 1/255
    small = embedded(pattern_view_html(patterns, encoding="uint8"))
    shown = decode(small["frames"][0]["patterns"][0][0], "uint8", 40)
    expected = cache["blocks.1.attn.hook_pattern"][0, 0].float().numpy()
    assert np.abs(shown - expected).max() <= 0.5 / 255 + 1e-7


def test_stripe_sits_period_minus_one_back_on_the_hand_built_model(hand):
    patterns = head_patterns(hand, [ROLES.induction, ROLES.previous_token, ROLES.fixed_offset], PROMPTS)
    for b, period in enumerate(patterns.periods.tolist()):
        start = patterns.first_content_pos + period  # the first repeated token
        induction = offset_profile(patterns.patterns[0, b], from_pos=start)
        previous = offset_profile(patterns.patterns[1, b], from_pos=start)
        fixed = offset_profile(patterns.patterns[2, b], from_pos=start)
        assert int(induction.argmax()) == period - 1, (b, period)
        assert int(previous.argmax()) == 1 and int(fixed.argmax()) == 5  # helpers.OFFSET
    # stripe mass: the induction head is on the stripe, the previous-token head only where P - 1 = 1 (never here)
    assert patterns.stripe[0].min() > 0.95 and patterns.stripe[1].max() < 0.05
    # ... and equals the detector's definition computed independently on these prompts
    mask = prefix_mask(patterns.tokens, 1)
    has = mask.any(-1)
    manual = [(patterns.patterns[0, b] * mask[b]).sum(-1)[has[b]].mean() for b in range(4)]
    assert_close(patterns.stripe[0], torch.stack(manual), atol=1e-6)


def reference_pool(p: torch.Tensor, block: int) -> torch.Tensor:
    """Slow pooling: mean over a block's query rows of the sum over a block's key columns."""
    n = p.shape[-1]
    cells = -(-n // block)
    out = torch.zeros(cells, cells)
    for qi in range(cells):
        rows = range(qi * block, min((qi + 1) * block, n))
        for ki in range(cells):
            cols = range(ki * block, min((ki + 1) * block, n))
            out[qi, ki] = sum(float(p[r, c]) for r in rows for c in cols) / len(rows)
    return out


def test_pooling_keeps_row_sums_and_matches_a_slow_reference():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 50, 50, generator=gen)
    scores = scores.masked_fill(torch.ones(50, 50, dtype=torch.bool).triu(1), float("-inf"))
    p = scores.softmax(-1)  # causal patterns: every row sums to 1
    pooled = pool_pattern(p, 3)  # 50 = 16 * 3 + 2: a partial last block
    assert pooled.shape == (2, 17, 17)
    assert_close(pooled.sum(-1), torch.ones(2, 17), atol=1e-5)
    assert_close(pooled[1], reference_pool(p[1], 3), atol=1e-5)
    assert PatternConfig(max_positions=16).block_for(50) == 4 and PatternConfig(max_positions=0).block_for(500) == 1


def test_pooled_view_of_a_long_prompt(hand):
    patterns = head_patterns(hand, ["L1H0"], PROMPTS, PatternConfig(n_prompts=2, max_positions=16))
    assert patterns.block == 3 and patterns.patterns.shape == (1, 2, 14, 14)
    assert_close(patterns.patterns.sum(-1), torch.ones(1, 2, 14), atol=1e-5)
    data = viewer_data([("", patterns)])
    assert data["cells"] == 14 and data["block"] == 3 and data["seq_len"] == 40


def test_heads_are_checked_by_field():
    assert parse_head("l1h0") == (1, 0)
    with pytest.raises(ValueError, match="heads: 'X1' is not a head"):
        parse_head("X1")
    with pytest.raises(ValueError, match=r"heads: L2H0 is not in this model \(layers 0-1"):
        check_heads([(2, 0)], 2, 4)
    with pytest.raises(ValueError, match="heads: repeated"):
        check_heads(["L1H0", (1, 0)], 2, 4)


def test_default_model_draws_the_stripe_in_layer_1_and_the_control_does_not():
    from induction.training.defaults import default_model

    two = default_model("2l", progress=False)
    one = default_model("1l", progress=False)
    cfg = PatternConfig(n_prompts=4)
    layer1 = head_patterns(two, [(1, h) for h in range(4)], None, cfg).stripe_mass()
    layer0 = head_patterns(two, [(0, h) for h in range(4)], None, cfg).stripe_mass()
    control = head_patterns(one, [(0, h) for h in range(4)], None, cfg).stripe_mass()
    assert min(layer1.values()) > 0.6, layer1
    assert max(layer0.values()) < 0.1 and max(control.values()) < 0.1, (layer0, control)


def test_scan_cli_keeps_patterns_in_json_and_writes_the_linked_viewer(handbuilt_dir, tmp_path, capsys):
    from induction.cli import main
    from induction.heads.scores import build_prompts
    from induction.loading.models import load_model

    out, page = tmp_path / "scan.json", tmp_path / "patterns.html"
    assert main(["scan", str(handbuilt_dir), "--patterns", "L1H0,L0H0", "--pattern-prompts", "2", "--prompts", "8",
                 "--no-icl", "--format", "json", "--out", str(out), "--plot", str(page), "-q"]) == 0
    report = json.loads(out.read_text())
    model = load_model(handbuilt_dir)
    prompts = build_prompts(model, RepeatedTokensConfig(n_prompts=8, seed=0))
    expected = head_patterns(model, [(1, 0), (0, 0)], prompts, PatternConfig(n_prompts=2))
    got = {(h["layer"], h["head"]): h["stripe_mass"] for h in report["patterns"]["heads"]}
    assert got == {(1, 0): pytest.approx(float(expected.stripe[0].mean())), (0, 0): pytest.approx(float(expected.stripe[1].mean()))}
    assert got[(1, 0)] > 0.95 and report["patterns"]["n_prompts"] == 2
    html = page.read_text()
    data = embedded(html)
    assert np.array_equal(decode(data["frames"][0]["patterns"][0][1], "float32", data["cells"]), expected.patterns[0, 1].numpy())
    assert "plotly_click" in html and "id=\"heatmap\"" in html  # the heatmap links to the viewer
    for bad, message in ((["--patterns", "L5H0"], "--patterns L5H0: this model has layers 0-1"),
                         (["--patterns", "H1"], "--patterns 'H1' is not a head"),
                         (["--patterns", "L1H0", "--plot", str(tmp_path / "x.png")], "name a .html file")):
        capsys.readouterr()
        assert main(["scan", str(handbuilt_dir), "--no-icl", "-q", *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_probe_sees_overflow_and_network_requests(tmp_path):
    """The browser check can fail: a too-wide element and a remote image are both reported."""
    import browser

    if browser.chromium() is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    page = tmp_path / "bad.html"
    page.write_text("<html><body><div id='w' style='width:1500px'>x</div><img src='http://example.com/x.png'></body></html>")
    seen = browser.render(page, 1000)
    assert seen["scrollWidth"] > seen["innerWidth"] and any("#w." in w for w in seen["wide"])
    assert seen["resources"] == ["http://example.com/x.png"]


def test_scan_viewer_page_in_headless_chromium(hand, tmp_path):
    import browser

    from induction.heads.scores import ScoreConfig
    from induction.jobs import ScanConfig, scan
    from induction.plots.patterns import save_pattern_view

    if browser.chromium() is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    report = scan(hand, ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8)), icl=None,
                                   patterns=("L1H0", "L0H0")))
    page = save_pattern_view(report.patterns, tmp_path / "p.html", heatmap=report.plot("heatmap"))
    data = embedded(page.read_text())
    period = data["prompts"][0]["period"]
    q, k = period + 5, 6  # a query in the first repeat, on the induction stripe (k = q - period + 1)
    # hover that cell, then click heatmap cell L0H0: the tooltip names both tokens and the weight, the viewer switches
    hover = f"""var v = InductionPatterns.views['patterns'], g = v.geometry(), c = v.root.querySelector('canvas'),
        b = c.getBoundingClientRect();
      c.dispatchEvent(new MouseEvent('mousemove', {{clientX: b.left + g.L + {k + 0.5} * g.cell,
                                                   clientY: b.top + g.T + {q + 0.5} * g.cell, bubbles: true}}));
      var tip = v.root.querySelector('.ip-tip').textContent;
      document.getElementById('heatmap').emit('plotly_click', {{points: [{{x: 0, y: 0}}]}});
      return {{tip: tip, after_click: v.root.getAttribute('data-drawn')}};"""
    seen = browser.render(page, 1000, actions=hover)
    weight = decode(data["frames"][0]["patterns"][0][0], "float32", data["cells"])[q, k]
    labels = data["prompts"][0]["labels"]
    assert weight > 0.9 and seen["actions"]["tip"] == f"query {q} \u201c{labels[q]}\u201d \u2192 key {k} \u201c{labels[k]}\u201d: {weight:.4f}"
    assert seen["actions"]["after_click"] == "L0H0/0/0"
    assert seen["scrollWidth"] <= seen["innerWidth"] and not seen["wide"], seen["wide"]
    assert [f["drawn"] for f in seen["figures"]] == [True] and seen["figures"][0]["right"] <= 1000
    (view,) = seen["views"]
    assert view["drawn"] == "L0H0/0/0" and view["ink"] > 200 and view["right"] <= 1000  # after the click
    assert seen["resources"] == []


@pytest.fixture(scope="module")
def two_revisions(tmp_path_factory):
    """A folder of two revisions: layer 1 inert at step 1, induction heads (L1H0, L1H1) at step 100."""
    from helpers import build_redundant_induction_model

    from induction.bench.handbuilt import HandBuiltSpec, build_handbuilt
    from induction.bench.handbuilt import HeadRole as R
    from induction.loading.native import save_checkpoint

    run = tmp_path_factory.mktemp("revisions") / "run"
    inert = build_handbuilt(HandBuiltSpec(layers=((R("previous_token"),) + (R("inert"),) * 3, (R("inert"),) * 4),
                                          d_vocab=24, n_ctx=48, bos_fallback=False))
    trained = build_redundant_induction_model()
    save_checkpoint(inert, run / "step1", {"bos_token_id": 0})
    save_checkpoint(trained, run / "step100", {"bos_token_id": 0})
    return run, inert, trained


def test_track_cli_draws_the_stripe_appearing_across_checkpoints(two_revisions, tmp_path, capsys):
    """The slider's frames are each checkpoint's own patterns, and the stripe appears between them."""
    from induction.cli import main
    from induction.heads.scores import build_prompts
    from induction.jobs.patterns import TRACK_VIEW

    run, inert, trained = two_revisions
    page = tmp_path / "track.html"
    argv = ["track", str(run), "-q", "--prompts", "8", "--bootstrap", "0", "--icl-sequences", "8",
            "--held-out-sequences", "8", "--no-cache", "--patterns", "L1H0", "--plot", str(page)]
    assert main([*argv, "--format", "json", "--out", str(tmp_path / "t.json")]) == 0
    data = embedded(page.read_text())
    assert [f["label"].split(" (")[0] for f in data["frames"]] == ["step 1", "step 100"]
    prompts = build_prompts(trained, RepeatedTokensConfig(n_prompts=8, seed=0))
    for frame, model in zip(data["frames"], (inert, trained)):
        expected = head_patterns(model, ["L1H0"], prompts, TRACK_VIEW)
        assert np.abs(decode(frame["patterns"][0][0], "uint8", data["cells"]) - expected.patterns[0, 0].numpy()).max() <= 0.5 / 255 + 1e-6
    assert data["frames"][0]["stripe"][0][0] < 0.2 < 0.9 < data["frames"][1]["stripe"][0][0]
    for bad, message in ((["--patterns", "L1H0", "--plot", str(tmp_path / "x.svg")], "name a .html file"),
                         (["--patterns", "L7H0", "--plot", str(page)], "--patterns L7H0 is not in this model")):
        capsys.readouterr()
        assert main(["track", str(run), "-q", "--no-cache", *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_hugging_face_model_patterns_match_transformers_and_label_tokens(tmp_path):
    """On a tiny GPT-2 directory: the patterns equal transformers' own attention probabilities (an
    independent implementation), and the axes carry the tokenizer's pieces."""
    from helpers import save_tiny_hf_gpt2
    from transformers import GPT2LMHeadModel

    from induction.loading.models import load_model

    save_tiny_hf_gpt2(tmp_path / "gpt2")
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2", attn_implementation="eager").eval()
    model = load_model(tmp_path / "gpt2")
    patterns = head_patterns(model, ["L1H2", "L0H1"], RepeatedTokensConfig(n_prompts=2, seq_len=40, seed=1))
    with torch.no_grad():
        attentions = hf(patterns.tokens, output_attentions=True).attentions  # per layer [batch, head_index, query_pos, key_pos]
    assert_close(patterns.patterns[0], attentions[1][:, 2], atol=1e-5)
    assert_close(patterns.patterns[1], attentions[0][:, 1], atol=1e-5)
    pieces = model.tokenizer.convert_ids_to_tokens(patterns.tokens[1].tolist())
    assert patterns.token_labels[1] == ["BOS"] + pieces[1:] and pieces[1].startswith("w")


def test_slider_moves_the_viewer_across_checkpoints_in_chromium(two_revisions, tmp_path):
    import browser

    from induction.jobs.patterns import run_patterns
    from induction.plots.patterns import save_pattern_view

    if browser.chromium() is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    run, _, _ = two_revisions
    frames = run_patterns(run, ["L1H0"], RepeatedTokensConfig(n_prompts=2), max_frames=2)
    page = save_pattern_view(frames, tmp_path / "slider.html", encoding="uint8")
    slide = """var v = InductionPatterns.views['patterns'], s = v.root.querySelector('input[type=range]'),
        cap = v.root.querySelector('.ip-caption'), seen = [[v.root.getAttribute('data-drawn'), cap.textContent]];
      s.value = 0; s.dispatchEvent(new Event('input'));
      seen.push([v.root.getAttribute('data-drawn'), cap.textContent]);
      return seen;"""
    seen = browser.render(page, 1000, actions=slide)
    (last, last_caption), (first, first_caption) = seen["actions"]
    assert (last, first) == ("L1H0/0/1", "L1H0/0/0")  # starts at the last checkpoint; the slider goes back
    for caption, (label, p) in ((last_caption, frames[1]), (first_caption, frames[0])):
        assert caption.startswith(f"L1H0, {label}, prompt 1: {float(p.stripe[0, 0]) * 100:.1f}% of the attention"), caption
    assert float(frames[0][1].stripe[0, 0]) < 0.2 < 0.9 < float(frames[1][1].stripe[0, 0])
    assert seen["resources"] == [] and seen["scrollWidth"] <= seen["innerWidth"]


def test_scan_patterns_of_named_head_sets(handbuilt_dir, tmp_path, capsys):
    """--patterns induction: the detected induction heads (here L1H0 only: L1H1 prefix-matches but
    does not copy); --patterns all: every head; a set name among heads is refused."""
    from induction.cli import main

    for name, expected in (("induction", [[1, 0]]), ("all", [[layer, h] for layer in range(2) for h in range(4)])):
        out = tmp_path / f"{name}.json"
        assert main(["scan", str(handbuilt_dir), "--patterns", name, "--prompts", "8", "--no-icl", "--format", "json",
                     "--out", str(out), "-q"]) == 0
        report = json.loads(out.read_text())
        assert [[h["layer"], h["head"]] for h in report["patterns"]["heads"]] == expected
        assert report["provenance"]["settings"]["patterns"]["heads"] == [name]
    capsys.readouterr()
    assert main(["scan", str(handbuilt_dir), "--patterns", "L1H0,induction", "--no-icl", "-q"]) == 2
    assert "--patterns 'induction' is not a head; write LxHy, e.g. L1H0; or one of induction, all" in capsys.readouterr().err
