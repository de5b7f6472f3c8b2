"""Head effects on the ICL score: metrics against independent computations, the hand-built circuit."""

from __future__ import annotations

import json

import torch
from helpers import ROLES, assert_close, build_induction_model

from induction.cli import main
from induction.loading.models import load_model
from induction.measures.icl import icl_score
from induction.measures.metrics import corrupt, icl_metric, repeat_loss_metric, stream_metric_setup


def test_icl_metric_equals_icl_score():
    model = build_induction_model()
    setup = stream_metric_setup(model, "icl", n_sequences=8, seed=3)
    with torch.no_grad():
        value = icl_metric(setup.tokens)(model(setup.tokens))
    assert_close(value, icl_score(model, tokens=setup.tokens, n_bootstrap=0).score, atol=1e-5)


def test_repeat_loss_counts_only_repeated_tokens():
    tokens = torch.tensor([[0, 1, 2, 1, 2]])  # BOS a b a b: the last two are repeats
    logits = torch.zeros(1, 5, 3)
    logits[0, 2, 1] = 5.0  # predicts token 1 at position 3 (a repeat): its loss is small
    metric = repeat_loss_metric(tokens, first_content_pos=1)
    lp = logits.log_softmax(-1)
    expected = -(lp[0, 2, 1] + lp[0, 3, 2]) / 2
    assert_close(metric(logits), expected, atol=1e-6)


def test_corrupted_run_keeps_bos_and_breaks_repeats():
    tokens = torch.zeros(4, 64, dtype=torch.long)
    out = corrupt(tokens, 1000, bos=True, generator=torch.Generator().manual_seed(0))
    assert (out[:, 0] == 0).all() and (out[:, 1:] > 0).all()


def test_ablation_ranks_the_induction_circuit_first(handbuilt_dir, tmp_path, capsys):
    out = tmp_path / "ablate.json"
    assert main(["ablate", str(handbuilt_dir), "--format", "json", "--out", str(out), "-q", "--sequences", "16"]) == 0
    report = json.loads(out.read_text())
    ranked = sorted(report["heads"], key=lambda h: -h["effect"])
    assert {(h["layer"], h["head"]) for h in ranked[:2]} == {ROLES.induction, ROLES.previous_token}
    anti = next(h for h in report["heads"] if (h["layer"], h["head"]) == ROLES.anti_induction)
    assert anti["effect"] < -0.1  # removing the anti-induction head improves in-context learning
    # The baseline is the unablated model's ICL score on the same sequences, computed independently,
    # and each value is a plain hooked run with that head zeroed.
    model = load_model(handbuilt_dir)
    setup = stream_metric_setup(model, "icl", n_sequences=16, seed=0)
    assert_close(report["baseline"], icl_score(model, tokens=setup.tokens, n_bootstrap=0).score, atol=1e-5)
    layer, head = ROLES.induction

    def zero(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    with torch.no_grad():
        logits = model.run_with_hooks(setup.tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])
    value = next(h["value"] for h in report["heads"] if (h["layer"], h["head"]) == ROLES.induction)
    assert_close(value, icl_metric(setup.tokens)(logits), atol=1e-5)


def test_patch_exact_and_attribution_agree_on_the_induction_head(handbuilt_dir, tmp_path):
    reports = {}
    for method in ("exact", "attribution"):
        out = tmp_path / f"{method}.json"
        assert main(["patch", str(handbuilt_dir), "--method", method, "--format", "json", "--out", str(out), "-q",
                     "--sequences", "16"]) == 0
        reports[method] = json.loads(out.read_text())
    for r in reports.values():
        best = min(r["heads"], key=lambda h: h["effect"])  # most negative: restores in-context learning
        assert (best["layer"], best["head"]) == ROLES.induction
        assert r["clean"] < r["baseline"]
    assert reports["exact"]["baseline"] == reports["attribution"]["baseline"]
