"""AtP*: exact where the only nonlinearity is a softmax it recomputes; it recovers the previous-token head
behind a saturated softmax that attribution patching misses; GradDrop flags cancelling effects."""

import pytest
import torch
from helpers import ROLES, build_induction_model
from test_circuits_models import hf_model, single_thread  # noqa: F401 (single_thread: autouse)

import circuits
from circuits.atp import atp_star
from induction.bench.handbuilt import HandBuiltSpec, build_handbuilt
from induction.bench.handbuilt import HeadRole as R
from induction.bench.suite import SUITE
from induction.measures.metrics import stream_metric_setup


def next_token_logit(tokens):
    """A metric linear in the logits: the mean logit of each next token of `tokens`."""
    return lambda logits: logits[:, :-1].gather(-1, tokens[:, 1:, None].to(logits.device)).mean()


def test_atp_star_is_exact_where_the_only_nonlinearity_is_the_receivers_softmax():
    """Attention-only, no LayerNorm, a linear metric: a layer-0 head reaches the metric directly and
    through layer-1 patterns (the previous-token head only through the induction heads' keys), so the
    recomputed pattern makes AtP* equal exact patching, while attribution reads ~0 for that head."""
    model = build_induction_model()
    setup = stream_metric_setup(model, "icl", n_sequences=8, seed=0)
    metric = next_token_logit(setup.tokens)
    # Noising: the repeated stream (patched run) receives each head's output on fresh random tokens.
    with torch.no_grad():
        baseline = float(metric(model(setup.tokens)))
    exact = circuits.patch_heads(model, setup.corrupted, setup.tokens, metric) - baseline
    star = circuits.attribute_heads(model, setup.corrupted, setup.tokens, metric, method="atp-star")
    plain = circuits.attribute_heads(model, setup.corrupted, setup.tokens, metric)
    torch.testing.assert_close(star, exact, atol=1e-4, rtol=1e-4)
    prev = ROLES.previous_token
    assert exact[prev] < -1.0 and abs(float(plain[prev])) < 0.05 * abs(float(exact[prev]))


@pytest.mark.parametrize("noising", [False, True])
def test_atp_star_equals_exact_patching_on_a_bench_model_with_a_linear_metric(noising):
    """`attn-v20-h8`: shifted and canonical induction heads whose queries, keys and values read
    different layer-0 heads, BOS fallback, saturated softmaxes: with a logit metric every head's
    AtP* is its exact patching effect, whichever run is patched."""
    model = build_handbuilt(SUITE["attn-v20-h8"]())
    setup = stream_metric_setup(model, "icl", n_sequences=8, seed=0)
    source, patched = (setup.corrupted, setup.tokens) if noising else (setup.tokens, setup.corrupted)
    metric = next_token_logit(setup.tokens)
    with torch.no_grad():
        baseline = float(metric(model(patched)))
    exact = circuits.patch_heads(model, source, patched, metric) - baseline
    star = circuits.attribute_heads(model, source, patched, metric, method="atp-star")
    torch.testing.assert_close(star, exact, atol=1e-4, rtol=1e-4)
    assert float(exact.abs().max()) > 1.0


def test_atp_star_recovers_the_saturated_previous_token_head_on_the_bench_models():
    for name in ("attn-v20-h8", "lnmlp-v20-h8"):
        spec = SUITE[name]()
        model = build_handbuilt(spec)
        setup = stream_metric_setup(model, "icl", n_sequences=16, seed=0)
        (prev,) = spec.heads("previous_token")
        star = circuits.attribute_heads(model, setup.tokens, setup.corrupted, setup.metric, method="atp-star")
        plain = circuits.attribute_heads(model, setup.tokens, setup.corrupted, setup.metric)
        # Restoring the previous-token head lowers the ICL score; attribution sees nothing through the
        # induction heads' saturated softmax.
        assert abs(float(plain[prev])) < 0.01, name
        assert float(star[prev]) < -0.5, name
        layer0 = star[0].abs()
        assert float(layer0[prev[1]]) >= 0.5 * float(layer0.max()), name


def cancelling_model():
    """L0H0 writes the token two back into the unembedding's subspace (`fixed_offset`); L1H0 attends to
    its own position and writes minus what it reads there from that subspace: the direct path and the
    path through L1H0 cancel."""
    spec = HandBuiltSpec(layers=((R("fixed_offset", lag=2), R("inert")), (R("self_copy"), R("inert"))),
                         bos_fallback=False)
    model = build_handbuilt(spec)
    sd = model.state_dict()
    out = sd["unembed.weight"].argmax(-1)  # the subspace each token's logit reads
    v, o = sd["blocks.1.attn.v.weight"], sd["blocks.1.attn.o.weight"]
    for t in range(spec.d_vocab):
        v[t].zero_()
        v[t, out[t]] = 1.0
        o[:, t].zero_()
        o[out[t], t] = -1.0
    model.load_state_dict(sd)
    return model.eval()


def test_grad_drop_flags_a_head_whose_effects_cancel():
    model = cancelling_model()
    clean = torch.randint(1, 24, (8, 24), generator=torch.Generator().manual_seed(1))
    corrupted = torch.randint(1, 24, (8, 24), generator=torch.Generator().manual_seed(2))
    # The logit of the clean token two back: what L0H0 writes directly, and L1H0 takes away.
    metric = lambda logits: logits[:, 2:].gather(-1, clean[:, :-2, None]).mean()  # noqa: E731
    with torch.no_grad():
        baseline = float(metric(model(corrupted)))
    exact = circuits.patch_heads(model, clean, corrupted, metric) - baseline
    result = atp_star(model, clean, corrupted, metric)
    assert abs(float(exact[0, 0])) < 1e-3 and abs(float(result.estimate[0, 0])) < 1e-3
    # The direct path alone (layer 1's gradient dropped) is large; GradDrop keeps its magnitude.
    assert float(result.grad_drop[0, 0]) > 0.5
    assert float(result.grad_drop[0, 0]) > 20 * abs(float(result.estimate[0, 0]))
    assert float(result.grad_drop[0, 1]) == 0.0  # the inert head


def test_atp_star_on_gpt2_equals_exact_for_last_layer_heads_and_refuses_models_that_ignore_pattern_edits():
    model, _ = hf_model("gpt2")
    clean = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(1))
    corrupted = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(2))
    metric = lambda logits: logits[:, -1, 3].mean()  # noqa: E731
    star = atp_star(model, clean, corrupted, metric)
    plain = circuits.attribute_heads(model, clean, corrupted, metric)
    # Last-layer heads have no later pattern: AtP* is attribution there.
    torch.testing.assert_close(star.estimate[-1], plain[-1], atol=1e-5, rtol=1e-4)
    neo, _ = hf_model("neo")
    with pytest.raises(ValueError, match="hook_pattern"):
        atp_star(neo, clean, corrupted, metric)
    with pytest.raises(ValueError, match="method"):
        circuits.attribute_heads(model, clean, corrupted, metric, method="atp")
