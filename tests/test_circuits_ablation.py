"""Ablation: against a plain `run_with_hooks` per head, and invariants each method must keep."""

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

import circuits
from circuits.ablation import _resample_rows


def naive_ablation(model, toks, metric, layer_heads, method, reference=None, rows=None):
    """One plain hooked forward with `layer_heads` ablated: the definition, written out."""
    reference = toks if reference is None else reference
    with torch.no_grad():
        _, clean = model.run_with_cache(toks)
        _, ref = model.run_with_cache(reference)

    def z_hook(layer):
        def hook(z, hook):
            z = z.clone()
            for l, h in layer_heads:
                if l != layer:
                    continue
                if method in ("zero", "pattern"):
                    z[:, :, h] = 0
                elif method == "mean":
                    z[:, :, h] = ref[f"blocks.{l}.attn.hook_z"][:, :, h].mean(0)
                else:
                    z[:, :, h] = ref[f"blocks.{l}.attn.hook_z"][rows][:, :, h]
            return z

        return hook

    fwd = [(f"blocks.{l}.attn.hook_z", z_hook(l)) for l in range(model.cfg.n_layers)]
    if method == "pattern":
        for l in range(model.cfg.n_layers):
            frozen = clean[f"blocks.{l}.attn.hook_pattern"]
            fwd.append((f"blocks.{l}.attn.hook_pattern", lambda p, hook, frozen=frozen: frozen))
    with torch.no_grad():
        return metric(model.run_with_hooks(toks, fwd_hooks=fwd)).item()


def naive_table(model, toks, metric, method, **kwargs):
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    return torch.tensor(
        [
            [naive_ablation(model, toks, metric, [(l, h)], method, **kwargs) for h in range(n_heads)]
            for l in range(n_layers)
        ]
    )


@pytest.mark.parametrize("ln_mlp", [False, True])
@pytest.mark.parametrize("method", ["zero", "mean", "pattern"])
def test_ablate_heads_equals_a_naive_hooked_run_per_head(ln_mlp, method):
    model = native_model(ln_mlp=ln_mlp)
    toks = tokens()
    metric = next_token_logprob(toks)
    expected = naive_table(model, toks, metric, method)
    actual = circuits.ablate_heads(model, toks, metric, method=method)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    baseline = metric(model(toks)).item()
    assert (actual - baseline).abs().max() > 1e-3  # the ablations do something


def test_resample_ablation_equals_the_naive_run_with_the_same_permutation():
    model = native_model(ln_mlp=True)
    toks = tokens(batch=5)
    rows = _resample_rows(5, 5, same_batch=True, seed=3)
    expected = naive_table(model, toks, logit_diff, "resample", rows=rows)
    actual = circuits.ablate_heads(model, toks, logit_diff, method="resample", seed=3)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_mean_and_resample_use_the_reference_batch():
    model = native_model()
    toks, reference = tokens(batch=3, seed=1), tokens(batch=6, seed=2)
    expected = naive_table(model, toks, logit_diff, "mean", reference=reference)
    actual = circuits.ablate_heads(model, toks, logit_diff, "mean", reference_tokens=reference)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    rows = _resample_rows(3, 6, same_batch=False, seed=0)
    expected = naive_table(model, toks, logit_diff, "resample", reference=reference, rows=rows)
    actual = circuits.ablate_heads(model, toks, logit_diff, "resample", reference_tokens=reference)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_resampling_never_gives_a_prompt_its_own_activations():
    for seed in range(20):
        rows = _resample_rows(4, 4, same_batch=True, seed=seed)
        assert sorted(rows.tolist()) == [0, 1, 2, 3]
        assert not (rows == torch.arange(4)).any()
    assert torch.equal(_resample_rows(4, 4, True, 7), _resample_rows(4, 4, True, 7))
    with pytest.raises(ValueError, match="at least 2"):
        _resample_rows(1, 1, same_batch=True, seed=0)


def test_zero_ablating_a_head_with_zero_output_weights_changes_nothing():
    model = native_model(ln_mlp=True)
    with torch.no_grad():
        model.blocks[0].attn.o.weight[:, 32:48] = 0  # head 2 of layer 0 writes nothing
    toks = tokens()
    baseline = logit_diff(model(toks)).item()
    for method in ("zero", "pattern"):
        actual = circuits.ablate_heads(model, toks, logit_diff, method=method)
        assert actual[0, 2].item() == pytest.approx(baseline, abs=1e-5)


def test_mean_ablation_of_a_last_layer_head_keeps_a_linear_batch_mean():
    """Attention-only, no LayerNorm: the last layer's z reaches the logits linearly, so replacing
    it by its batch mean leaves a batch-averaged logit unchanged."""
    model = native_model()
    toks = tokens()
    baseline = logit_diff(model(toks)).item()
    actual = circuits.ablate_heads(model, toks, logit_diff, method="mean")
    torch.testing.assert_close(actual[-1], torch.full((4,), baseline), atol=1e-5, rtol=0)


def test_pattern_ablation_differs_from_zero_ablation_only_upstream():
    """With nothing downstream to re-route, freezing patterns changes nothing (last layer);
    upstream, frozen patterns block re-routing, so the numbers differ."""
    model = native_model()
    toks = tokens()
    zero = circuits.ablate_heads(model, toks, logit_diff, method="zero")
    pattern = circuits.ablate_heads(model, toks, logit_diff, method="pattern")
    torch.testing.assert_close(pattern[-1], zero[-1], atol=1e-5, rtol=0)
    assert (pattern[0] - zero[0]).abs().max() > 1e-3


def test_pattern_ablation_refuses_bridges_that_discard_pattern_edits():
    neo, _ = hf_model("neo")
    toks = tokens()
    with pytest.raises(RuntimeError, match="hook_pattern"):
        circuits.ablate_heads(neo, toks, logit_diff, method="pattern")
    # The other methods work there (through full forwards if need be): check one head.
    expected = naive_ablation(neo, toks, logit_diff, [(1, 2)], "zero")
    actual = circuits.ablate_heads(neo, toks, logit_diff, heads=[(1, 2)])
    assert actual[1, 2].item() == pytest.approx(expected, abs=1e-5)
    assert torch.isnan(actual[0]).all()


def test_pattern_ablation_works_where_the_bridge_recomputes_attention():
    gpt2, _ = hf_model("gpt2")
    toks = tokens()
    expected = naive_table(gpt2, toks, logit_diff, "pattern")
    actual = circuits.ablate_heads(gpt2, toks, logit_diff, method="pattern")
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["zero", "mean", "pattern"])
def test_ablate_head_set_equals_the_naive_run(method):
    model = native_model(ln_mlp=True)
    toks = tokens()
    heads = [(0, 1), (0, 3), (1, 0)]
    expected = naive_ablation(model, toks, logit_diff, heads, method)
    actual = circuits.ablate_head_set(model, toks, logit_diff, heads, method=method)
    assert actual == pytest.approx(expected, abs=1e-5)
    single = circuits.ablate_head_set(model, toks, logit_diff, [(1, 0)], method=method)
    assert single == pytest.approx(
        circuits.ablate_heads(model, toks, logit_diff, method=method)[1, 0].item(), abs=1e-5
    )
    assert circuits.ablate_head_set(model, toks, logit_diff, [], method=method) == pytest.approx(
        logit_diff(model(toks)).item(), abs=1e-5
    )


def test_layer_matched_random_heads():
    model = native_model(n_layers=3)
    heads = [(0, 1), (2, 0), (2, 3)]
    draws = circuits.layer_matched_random_heads(model, heads, n_draws=30, seed=5)
    assert len(draws) == 30
    for drawn in draws:
        assert sorted(l for l, _ in drawn) == [0, 2, 2]
        assert not set(drawn) & set(heads)
        assert len(set(drawn)) == 3
    # Seeded, and actually random: more than one distinct set.
    assert draws == circuits.layer_matched_random_heads(model, heads, n_draws=30, seed=5)
    assert len({tuple(d) for d in draws}) > 1
    assert {h for d in draws for l, h in d if l == 2} == {1, 2}
    with pytest.raises(ValueError, match="too few"):
        circuits.layer_matched_random_heads(model, [(1, 0), (1, 1), (1, 2)])


def test_random_head_control_ablates_each_draw():
    model = native_model(ln_mlp=True)
    toks = tokens()
    heads = [(0, 0), (1, 1)]
    values = circuits.random_head_control(model, toks, logit_diff, heads, n_draws=4, seed=2)
    draws = circuits.layer_matched_random_heads(model, heads, n_draws=4, seed=2)
    expected = torch.tensor([naive_ablation(model, toks, logit_diff, d, "zero") for d in draws])
    torch.testing.assert_close(values, expected, atol=1e-5, rtol=0)


def test_unknown_method_names_the_allowed_ones():
    """A ValueError naming the methods; under the suite's runtime type checking the Literal
    annotation rejects it first (TypeError), naming them too."""
    model = native_model()
    with pytest.raises((ValueError, TypeError)) as raised:
        circuits.ablate_heads(model, tokens(), logit_diff, method="mode")
    assert "resample" in str(raised.value)


@pytest.mark.parametrize("method", ["zero", "resample"])
def test_ablate_head_sets_returns_per_prompt_values_of_the_naive_run(method):
    """A per-prompt metric gives one row per set, each equal to the naive hooked run's values."""
    model = native_model(ln_mlp=True)
    toks = tokens()
    per_prompt = lambda logits: logits[:, -1].log_softmax(-1)[:, 0]  # noqa: E731  [batch]
    sets = [[], [(0, 1), (1, 3)], [(1, 0)]]
    rows = _resample_rows(toks.shape[0], toks.shape[0], same_batch=True, seed=0)
    values = circuits.ablate_head_sets(model, toks, per_prompt, sets, method=method)
    assert values.shape == (3, toks.shape[0])
    for i, heads in enumerate(sets):
        expected = torch.tensor(_naive_per_prompt(model, toks, per_prompt, heads, method, rows))
        torch.testing.assert_close(values[i], expected, atol=1e-5, rtol=0)
    assert (values[1] - values[0]).abs().max() > 1e-3  # the ablation changes prompts' values
    with pytest.raises(ValueError, match="0-d tensor"):  # the one-head sweep keeps the scalar contract
        circuits.ablate_heads(model, toks, per_prompt)


def _naive_per_prompt(model, toks, per_prompt, heads, method, rows):
    """naive_ablation's hooked run, returning the per-prompt values instead of a scalar."""
    captured = []
    naive_ablation(model, toks, lambda lg: captured.append(per_prompt(lg)) or per_prompt(lg).mean(), heads, method,
                   rows=rows)
    return captured[0].tolist()


def test_derangement_has_no_fixed_point_and_is_seeded():
    for seed in range(20):
        perm = circuits.derangement(5, torch.Generator().manual_seed(seed))
        assert sorted(perm.tolist()) == list(range(5)) and not (perm == torch.arange(5)).any()
    same = [circuits.derangement(6, torch.Generator().manual_seed(1)).tolist() for _ in range(2)]
    assert same[0] == same[1]
    with pytest.raises(ValueError, match="at least 2"):
        circuits.derangement(1, torch.Generator())
