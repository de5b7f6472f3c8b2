"""Activation patching: TransformerLens' numbers, on every path the engine can take."""

import pytest
import torch
from test_circuits_models import (  # noqa: F401 (single_thread is an autouse fixture)
    hf_model,
    logit_diff,
    native_model,
    next_token_logprob,
    single_thread,
    tokens,
)
from transformer_lens import patching as tl_patching

import circuits
from circuits import engine, resume
from circuits.hooks import z_name


def tl_patch(model, clean, corrupted, metric, by_pos=False):
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
    if by_pos:  # TL orders [layer, pos, head]
        return tl_patching.get_act_patch_attn_head_out_by_pos(
            model, corrupted, clean_cache, metric
        ).permute(0, 2, 1)
    return tl_patching.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, metric)


MODELS = {
    "attn_only": lambda: native_model(),
    "ln_mlp": lambda: native_model(ln_mlp=True),
    "hf_gpt2": lambda: hf_model("gpt2")[0],
}


@pytest.mark.parametrize("name", list(MODELS))
def test_patch_heads_equals_transformer_lens(name):
    model = MODELS[name]()
    clean, corrupted = tokens(seed=1), tokens(seed=2)
    for metric in (logit_diff, next_token_logprob(clean)):
        expected = tl_patch(model, clean, corrupted, metric)
        actual = circuits.patch_heads(model, clean, corrupted, metric)
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
        # The numbers are not all alike (a broken patch would give the baseline everywhere).
        assert float(expected.std()) > 1e-3


@pytest.mark.parametrize("name", ["attn_only", "ln_mlp"])
def test_patch_heads_per_position_equals_transformer_lens(name):
    model = MODELS[name]()
    clean, corrupted = tokens(batch=3, pos=6, seed=1), tokens(batch=3, pos=6, seed=2)
    expected = tl_patch(model, clean, corrupted, logit_diff, by_pos=True)
    actual = circuits.patch_heads(model, clean, corrupted, logit_diff, per_position=True)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_every_batching_gives_the_same_numbers():
    model = native_model(ln_mlp=True, n_layers=3)
    clean, corrupted = tokens(seed=1), tokens(seed=2)
    reference = circuits.patch_heads(model, clean, corrupted, logit_diff, runs_per_forward=1)
    for k in (2, 5, 64):
        actual = circuits.patch_heads(model, clean, corrupted, logit_diff, runs_per_forward=k)
        torch.testing.assert_close(actual, reference, atol=1e-5, rtol=0)


def test_resumed_runs_equal_full_forwards():
    """The in-layer shortcut and plain hooked forwards agree (and the shortcut is taken)."""
    model = native_model(ln_mlp=True, n_layers=3)
    clean, corrupted = tokens(seed=1), tokens(seed=2)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
    runs = [(engine.ZEdit(l, h, p),) for l in range(3) for h in range(4) for p in (None, 0, -1)]
    args = (model, corrupted, logit_diff, runs, lambda layer: cache[z_name(layer)])
    fast = engine.sweep_head_z(*args)
    slow = engine.sweep_head_z(*args, resume=False)
    assert fast.resumed and not slow.resumed
    torch.testing.assert_close(fast.values, slow.values, atol=1e-5, rtol=0)
    assert fast.baseline == pytest.approx(slow.baseline)


def test_bridges_that_cannot_resume_fall_back_to_full_forwards(monkeypatch):
    """A soft-capped unembedding breaks the shortcut's final step: it must be detected."""
    model = native_model()
    clean, corrupted = tokens(seed=1), tokens(seed=2)
    expected = tl_patch(model, clean, corrupted, logit_diff)
    original = resume.run_from_resid_pre

    def capped(model, resid, layer, inputs=None):  # what the model's own forward would not do
        return 30 * torch.tanh(original(model, resid, layer, inputs) / 30)

    monkeypatch.setattr(resume, "run_from_resid_pre", capped)
    with torch.no_grad():
        logits, cache = model.run_with_cache(corrupted)
    assert not resume.resume_check(model, cache, logits, [0, 1])
    actual = circuits.patch_heads(model, clean, corrupted, logit_diff)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_clean_equal_to_corrupted_gives_the_baseline_everywhere():
    model = native_model(ln_mlp=True)
    toks = tokens()
    baseline = logit_diff(model(toks)).item()
    actual = circuits.patch_heads(model, toks, toks, logit_diff)
    torch.testing.assert_close(actual, torch.full_like(actual, baseline), atol=1e-5, rtol=0)


def test_swapping_the_arguments_patches_the_other_way():
    """Noising = patch_heads(corrupted, clean): entry (l, h) patches corrupted z into the clean run."""
    model = native_model()
    clean, corrupted = tokens(seed=1), tokens(seed=2)
    expected = tl_patch(model, corrupted, clean, logit_diff)
    torch.testing.assert_close(
        circuits.patch_heads(model, corrupted, clean, logit_diff), expected, atol=1e-5, rtol=0
    )


def test_a_head_with_zero_output_weights_patches_to_the_baseline():
    model = native_model()
    with torch.no_grad():
        model.blocks[0].attn.o.weight[:, 16:32] = 0  # head 1 of layer 0: W_O = 0
    clean, corrupted = tokens(seed=1), tokens(seed=2)
    baseline = logit_diff(model(corrupted)).item()
    actual = circuits.patch_heads(model, clean, corrupted, logit_diff)
    assert actual[0, 1].item() == pytest.approx(baseline, abs=1e-5)
    assert (actual - baseline).abs().max() > 1e-2


def test_metric_must_return_a_scalar():
    model = native_model()
    with pytest.raises(ValueError, match="0-d tensor"):
        circuits.patch_heads(model, tokens(seed=1), tokens(seed=2), lambda lg: lg[:, -1, 0])


def test_training_mode_is_refused():
    model = native_model().train()
    with pytest.raises(ValueError, match="eval"):
        circuits.patch_heads(model, tokens(seed=1), tokens(seed=2), logit_diff)


def test_library_code_prints_nothing_unless_asked(capsys):
    model = native_model()
    clean, corrupted = tokens(seed=1), tokens(seed=2)
    quiet = circuits.patch_heads(model, clean, corrupted, logit_diff)
    assert capsys.readouterr() == ("", "")
    loud = circuits.patch_heads(model, clean, corrupted, logit_diff, progress=True)
    assert "intervened forwards" in capsys.readouterr().err
    torch.testing.assert_close(loud, quiet, atol=0, rtol=0)


def test_clean_and_corrupted_must_match_in_shape():
    model = native_model()
    with pytest.raises((ValueError, TypeError), match="shape|batch|pos"):
        circuits.patch_heads(model, tokens(pos=12), tokens(pos=10), logit_diff)
