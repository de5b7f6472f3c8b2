"""Path patching: a hooks-only two-forward implementation's numbers, on every family the engine resumes;
exactly the planted paths on hand-built models; the key path on the trained default model."""

import pytest
import torch
from helpers import build_induction_model
from reference.path_patching import naive_patch_path
from test_circuits_models import native_model, single_thread, tokens  # noqa: F401 (single_thread: autouse)

import circuits
from circuits.paths import HeadPath, all_paths, patch_paths
from induction.bench.handbuilt import build_handbuilt
from induction.bench.suite import SUITE
from induction.measures.metrics import stream_metric_setup


def last_logprob(logits):
    return logits[:, -1].log_softmax(-1)[:, 3].mean()


def sample(paths, n, seed=0):
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed))[:n]
    return [paths[i] for i in sorted(order.tolist())]


def check_against_naive(model, n_paths=12):
    vocab = int(model.cfg.d_vocab)
    clean, corrupted = tokens(seed=1) % vocab, tokens(seed=2) % vocab
    paths = sample(all_paths(model), n_paths)
    fast = patch_paths(model, clean, corrupted, last_logprob, paths, runs_per_forward=3)
    full = patch_paths(model, clean, corrupted, last_logprob, paths, resume=False)
    naive = torch.tensor([naive_patch_path(model, clean, corrupted, last_logprob, p.sender, p.receiver, p.input)
                          for p in paths])
    scale = float((naive - fast.baseline).abs().max())
    assert scale > 1e-2, "the paths must move the metric for the comparison to mean anything"
    assert fast.resumed and not full.resumed
    torch.testing.assert_close(fast.values, naive, atol=1e-4, rtol=0)
    torch.testing.assert_close(full.values, naive, atol=1e-4, rtol=0)
    return fast


@pytest.mark.parametrize("ln_mlp", [False, True])
def test_path_patching_equals_the_hooked_two_forward_definition_on_native_models(ln_mlp):
    check_against_naive(native_model(ln_mlp=ln_mlp, n_layers=3))


@pytest.mark.parametrize("family", ["gpt2", "llama", "neox"])
def test_path_patching_equals_the_hooked_definition_on_hf_families(hf_bridges, family):
    """GPT-2 (learned positions), Llama (RoPE, RMSNorm, grouped key/value heads), NeoX (partial
    rotary, parallel blocks): the resumed receiver layer gets the rotary tables it got in the model."""
    check_against_naive(hf_bridges[family])


def test_named_paths_are_exactly_the_planted_ones_on_the_suite():
    """Every planted path moves the repeat loss; every other path moves it by nothing (its sender
    writes a subspace the receiver's input does not read)."""
    for name in ("attn-v20-h8", "lnmlp-v20-h8"):
        spec = SUITE[name]()
        model = build_handbuilt(spec)
        setup = stream_metric_setup(model, "repeat-loss", n_sequences=8, seed=0)
        paths = all_paths(model)
        # Noising: the senders' outputs on the corrupted stream reach the receivers of the clean one.
        effects = patch_paths(model, setup.corrupted, setup.tokens, setup.metric, paths).effects
        named = {(p.sender, p.receiver, p.input) for p, e in zip(paths, effects) if abs(float(e)) > 1e-4}
        assert named == set(spec.paths()), name
        assert float(effects.abs().max()) > 0.5


def test_previous_token_head_reaches_the_induction_head_through_its_key_only():
    model = build_induction_model()
    setup = stream_metric_setup(model, "repeat-loss", n_sequences=8, seed=0)
    paths = all_paths(model, receivers=[(1, 0)])
    effects = dict(zip(paths, patch_paths(model, setup.corrupted, setup.tokens, setup.metric, paths).effects.tolist()))
    assert effects[HeadPath((0, 0), (1, 0), "k")] > 1.0  # without the previous token the head finds no key
    for path, effect in effects.items():
        if path != HeadPath((0, 0), (1, 0), "k"):
            assert abs(effect) < 1e-4, path.label()


def test_key_path_carries_the_effect_on_the_default_model():
    """The trained default 2-layer model: the previous-token heads' outputs matter to the induction
    heads through their keys; the query and value paths from the same senders carry far less."""
    from induction.heads.scores import ScoreConfig, score_heads
    from induction.training.defaults import default_model

    model = default_model("2l", progress=False)
    scores = score_heads(model, ScoreConfig())
    receivers = [tuple(h) for h in scores.is_induction.nonzero().tolist()]
    assert receivers, "the default model has induction heads"
    setup = stream_metric_setup(model, "repeat-loss", n_sequences=16, seed=0)
    paths = all_paths(model, senders=[(0, h) for h in range(model.cfg.n_heads)], receivers=receivers)
    effects = patch_paths(model, setup.corrupted, setup.tokens, setup.metric, paths).effects
    by_input = {x: sum(float(e) for p, e in zip(paths, effects) if p.input == x) for x in "qkv"}
    other = sum(abs(float(e)) for p, e in zip(paths, effects) if p.input != "k")
    assert by_input["k"] > 0.1 and by_input["k"] > 3 * other, by_input
    top = max(zip(paths, effects.tolist()), key=lambda pe: abs(pe[1]))[0]
    prev = scores.previous_token[0]
    assert top.input == "k" and prev[top.sender[1]] >= 0.5 * float(prev.max())


def test_paths_are_validated():
    with pytest.raises(ValueError, match="later layer"):
        HeadPath((1, 0), (1, 1), "k")
    with pytest.raises(ValueError, match="q, k, v"):
        HeadPath((0, 0), (1, 1), "o")
    model = native_model(n_layers=2)
    with pytest.raises(ValueError, match="out of range"):
        patch_paths(model, tokens(), tokens(), last_logprob, [HeadPath((0, 0), (1, 9), "q")])
    assert len(all_paths(model)) == 4 * 4 * 3 and circuits.patch_heads  # every layer-0 head into every layer-1 head
