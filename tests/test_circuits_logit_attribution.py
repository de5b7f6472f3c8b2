"""Direct logit attribution: it decomposes the logit exactly, and matches the formula written out."""

import pytest
import torch
from test_circuits_models import (  # noqa: F401 (single_thread is an autouse fixture)
    hf_model,
    native_model,
    single_thread,
    tokens,
)

import circuits


def test_heads_of_a_layer_sum_to_what_the_layer_adds_to_the_logit():
    """No final norm: layer l's heads together add (attn_out - b_O) . W_U[:, answer]; and all
    terms (embeddings, b_O, heads, b_U) add up to the logit."""
    model = native_model(n_layers=3)
    toks = tokens()
    answers = toks[:, 0]
    dla = circuits.direct_logit_attribution(model, toks, answers)
    with torch.no_grad():
        logits, cache = model.run_with_cache(toks)
        W_u = model.W_U[:, answers].T  # [batch, d_model]
        for layer in range(3):
            added = cache[f"blocks.{layer}.hook_attn_out"][:, -1] - model.b_O[layer]
            expected = (added * W_u).sum(-1).mean()
            assert dla[layer].sum().item() == pytest.approx(expected.item(), abs=1e-5)
        rest = cache["hook_embed"][:, -1] + cache["hook_pos_embed"][:, -1] + model.b_O.sum(0)
        logit = logits[torch.arange(4), -1, answers]
        expected_total = (logit - (rest * W_u).sum(-1) - model.b_U[answers]).mean()
    assert dla.sum().item() == pytest.approx(expected_total.item(), abs=1e-4)
    assert dla.abs().max() > 0.1


@pytest.mark.parametrize("kind", ["native", "hf_gpt2"])
def test_layernorm_models_use_the_centred_frozen_scale_formula(kind):
    """DLA = ((z W_O) - mean) / scale * w_ln . W_U[:, answer], scale from ln_final.hook_scale."""
    model = native_model(ln_mlp=True) if kind == "native" else hf_model("gpt2")[0]
    toks = tokens()
    answers = toks[:, 2]
    with torch.no_grad():
        _, cache = model.run_with_cache(toks)
        scale = cache["ln_final.hook_scale"][:, -1]  # [batch, 1]
        directions = model.ln_final.weight * model.W_U[:, answers].T  # [batch, d_model]
        expected = torch.zeros(2, 4)
        for l in range(2):
            for h in range(4):
                out = cache[f"blocks.{l}.attn.hook_z"][:, -1, h] @ model.W_O[l, h]
                centred = out - out.mean(-1, keepdim=True)
                expected[l, h] = ((centred / scale) * directions).sum(-1).mean()
    actual = circuits.direct_logit_attribution(model, toks, answers)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)
    assert expected.abs().max() > 1e-3


def test_a_logit_direction_is_the_difference_of_two_answers():
    model = native_model(ln_mlp=True)
    toks = tokens()
    threes, sevens = torch.full((4,), 3), torch.full((4,), 7)
    direction = model.W_U[:, 3] - model.W_U[:, 7]
    torch.testing.assert_close(
        circuits.direct_logit_attribution(model, toks, logit_direction=direction),
        circuits.direct_logit_attribution(model, toks, threes)
        - circuits.direct_logit_attribution(model, toks, sevens),
        atol=1e-5,
        rtol=1e-4,
    )


def test_pos_none_averages_the_positions_that_have_an_answer():
    """Next-token answers (tokens[:, 1:]) cover positions 0..pos-2."""
    model = native_model(ln_mlp=True)
    toks = tokens(pos=6)
    nxt = toks[:, 1:]
    mean = circuits.direct_logit_attribution(model, toks, nxt, pos=None)
    each = [circuits.direct_logit_attribution(model, toks, nxt, pos=p) for p in range(5)]
    torch.testing.assert_close(mean, torch.stack(each).mean(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        each[4], circuits.direct_logit_attribution(model, toks, nxt[:, 4], pos=4), atol=0, rtol=0
    )


def test_bad_arguments_are_refused():
    model = native_model()
    toks = tokens()
    with pytest.raises(ValueError, match="exactly one"):
        circuits.direct_logit_attribution(model, toks)
    with pytest.raises(ValueError, match="per position"):
        circuits.direct_logit_attribution(model, toks, toks[:, 0], pos=None)
    with pytest.raises(ValueError, match="no answer"):
        circuits.direct_logit_attribution(model, toks, toks[:, 1:], pos=-1)
