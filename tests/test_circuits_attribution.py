"""Attribution patching: exact where the model is linear in z, and the gradient it claims to use."""

import pytest
import torch
from test_circuits_models import (  # noqa: F401 (single_thread is an autouse fixture)
    logit_diff,
    native_model,
    next_token_logprob,
    single_thread,
    tokens,
)

import circuits


def test_exact_where_the_metric_is_linear_in_the_heads_output():
    """Attention-only without LayerNorm, a logit metric, heads of the last layer: the metric is
    linear in their z, so the first-order estimate is the patching effect itself."""
    model = native_model(n_layers=3)
    clean, corrupted = tokens(seed=1), tokens(seed=2)
    baseline = logit_diff(model(corrupted)).item()
    effect = circuits.patch_heads(model, clean, corrupted, logit_diff) - baseline
    estimate = circuits.attribute_heads(model, clean, corrupted, logit_diff)
    torch.testing.assert_close(estimate[-1], effect[-1], atol=1e-5, rtol=1e-5)
    assert effect[-1].abs().max() > 0.1
    # Earlier heads act through later attention patterns: only approximately linear.
    assert (estimate[0] - effect[0]).abs().max() > 1e-4


def reference_attribution(model, clean, corrupted, metric):
    """The same estimate written with TransformerLens' backward hooks and `.backward()`."""
    n_layers = model.cfg.n_layers
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
    z, grad = {}, {}

    def keep(store, layer):
        def hook(tensor, hook):
            store[layer] = tensor.detach()

        return hook

    names = [f"blocks.{l}.attn.hook_z" for l in range(n_layers)]
    with model.hooks(
        fwd_hooks=[(n, keep(z, l)) for l, n in enumerate(names)],
        bwd_hooks=[(n, keep(grad, l)) for l, n in enumerate(names)],
    ):
        metric(model(corrupted)).backward()
    model.zero_grad(set_to_none=True)
    return torch.stack(
        [((clean_cache[names[l]] - z[l]) * grad[l]).sum((0, 1, 3)) for l in range(n_layers)]
    )


@pytest.mark.parametrize("ln_mlp", [False, True])
def test_equals_the_backward_hook_computation(ln_mlp):
    model = native_model(ln_mlp=ln_mlp)
    clean, corrupted = tokens(seed=1), tokens(seed=2)
    metric = next_token_logprob(clean)
    expected = reference_attribution(model, clean, corrupted, metric)
    actual = circuits.attribute_heads(model, clean, corrupted, metric)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)
    assert expected.abs().max() > 1e-3


def test_leaves_no_gradients_and_works_with_frozen_weights():
    model = native_model(ln_mlp=True)
    clean, corrupted = tokens(seed=1), tokens(seed=2)
    expected = circuits.attribute_heads(model, clean, corrupted, logit_diff)
    assert all(p.grad is None for p in model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    torch.testing.assert_close(
        circuits.attribute_heads(model, clean, corrupted, logit_diff), expected, atol=1e-6, rtol=0
    )


def test_is_zero_when_clean_equals_corrupted():
    model = native_model(ln_mlp=True)
    toks = tokens()
    assert circuits.attribute_heads(model, toks, toks, logit_diff).abs().max() == 0


def test_heads_that_cannot_reach_the_metric_get_zero():
    """The metric reads position 0, which attends only to itself; a head's value there is
    fixed, so nothing patched elsewhere matters: every estimate is 0 except through position 0."""
    model = native_model()
    clean, corrupted = tokens(seed=1), tokens(seed=2)
    corrupted[:, 0] = clean[:, 0]  # position 0 identical in both runs
    first = lambda logits: logits[:, 0, 3].mean()  # noqa: E731
    assert circuits.attribute_heads(model, clean, corrupted, first).abs().max() < 1e-6
