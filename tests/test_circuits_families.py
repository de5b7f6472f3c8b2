"""The causal tools on every common architecture: GPT-2, GPT-NeoX, Llama and GPT-Neo (tests/hf_models.py).

Each family is a tiny random Hugging Face model booted through `TransformerBridge.boot_transformers`.
Every number is checked against an independent computation: TransformerLens' own patching, plain
hooked forwards, or finite differences; and the engine's in-layer resume path (`circuits.engine`)
must be taken on every family (rotary tables, parallel blocks, grouped-query attention, local
attention) and agree with full forwards.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hf_models import FAMILIES
from test_circuits_models import single_thread  # noqa: F401 (an autouse fixture)
from transformer_lens import patching as tl_patching

import circuits
from circuits import engine, resume
from circuits.ablation import derangement
from circuits.hooks import pattern_name, z_name

PATTERN_FAMILIES = ("gpt2", "neox", "llama")  # GPT-Neo's attention discards hook_pattern edits


def family_tokens(model, batch: int = 4, pos: int = 24, seed: int = 0) -> torch.Tensor:
    """Random non-special tokens; 24 positions, beyond GPT-Neo's local window of 16."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, int(model.cfg.d_vocab), (batch, pos), generator=generator)


def next_token_logprob(tokens: torch.Tensor):
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None]).mean()

    return metric


def logit_diff(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, 5] - logits[:, -1, 9]).mean()


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def test_the_families_are_what_the_tests_assume(hf_bridges):
    """The builders' premises: parallel blocks and partial RoPE (NeoX), RoPE with grouped-query
    attention (Llama), learned positions (GPT-2, Neo), pattern edits ignored only by GPT-Neo."""
    expected = {  # positional embedding type, parallel block, key/value heads (None: all)
        "gpt2": ("standard", False, None),
        "neox": ("rotary", True, None),
        "llama": ("rotary", False, 2),
        "neo": ("standard", False, None),
    }
    for name, (positions, parallel, kv_heads) in expected.items():
        model = hf_bridges[name]
        assert model.cfg.positional_embedding_type == positions, name
        assert resume.is_parallel(model, 0) == parallel, name
        assert model.cfg.n_key_value_heads == kv_heads, name
        tokens = family_tokens(model)
        if name in PATTERN_FAMILIES:
            engine.check_pattern_edits(model, tokens)
        else:
            with pytest.raises(RuntimeError, match="hook_pattern"):
                engine.check_pattern_edits(model, tokens)
    with torch.no_grad():  # Llama's keys and values have 2 heads, its queries and z 4
        _, cache = hf_bridges["llama"].run_with_cache(family_tokens(hf_bridges["llama"]))
    assert cache["blocks.0.attn.hook_k"].shape[2] == 2 and cache[z_name(0)].shape[2] == 4


def test_the_bridge_reproduces_the_hugging_face_model(hf_dirs, hf_bridges, family):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_dirs[family], attn_implementation="eager").eval()
    tokens = family_tokens(hf_bridges[family])
    with torch.no_grad():
        torch.testing.assert_close(hf_bridges[family](tokens), hf(tokens).logits, atol=1e-4, rtol=0)


def test_resumed_runs_equal_full_forwards_on_every_family(hf_bridges, family):
    """The in-layer shortcut is taken (rotary tables and masks replayed, parallel blocks finished
    from the cached MLP output) and gives the full forwards' numbers, however the runs are stacked."""
    model = hf_bridges[family]
    clean, corrupted = family_tokens(model, seed=1), family_tokens(model, seed=2)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
    runs = [(engine.ZEdit(l, h, p),) for l in range(2) for h in range(4) for p in (None, 13)]
    runs += [(engine.ZEdit(1, 0), engine.ZEdit(1, 3))]  # two heads in one run
    args = (model, corrupted, next_token_logprob(corrupted), runs, lambda layer: cache[z_name(layer)])
    slow = engine.sweep_head_z(*args, resume=False, runs_per_forward=1)
    assert not slow.resumed
    for k in (1, 3, 64):  # one run per forward, stacks that split a layer's runs, one stack per layer
        fast = engine.sweep_head_z(*args, runs_per_forward=k)
        assert fast.resumed, (family, k)
        torch.testing.assert_close(fast.values, slow.values, atol=1e-5, rtol=0)
    # The interventions matter: a shortcut that ignored them would give the baseline everywhere.
    assert float((slow.values - slow.baseline).abs().max()) > 0.05


@pytest.mark.parametrize("name", ["neox", "llama"])
def test_the_self_check_catches_blocks_resumed_without_their_rotary_tables(hf_bridges, name):
    """The measured bug: called on the residual alone, rotary blocks skip RoPE. Without the
    recorded block inputs the check must fail; with them it passes."""
    model = hf_bridges[name]
    tokens = family_tokens(model)
    names = resume.resume_cache_names(model, [0, 1])
    with torch.no_grad(), resume.record_block_inputs(model) as inputs:
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    assert inputs.calls[1][1]["position_embeddings"] is not None
    with warnings.catch_warnings():  # the bridge warns that RoPE was not applied: the point here
        warnings.simplefilter("ignore", RuntimeWarning)
        assert not resume.resume_check(model, cache, logits, [0, 1], inputs=None)
    assert resume.resume_check(model, cache, logits, [0, 1], inputs=inputs, copies=2)


def test_a_parallel_block_is_finished_from_its_input(hf_bridges):
    """NeoX: resid_post = resid_pre + attn_out + mlp(ln2(resid_pre)); the MLP never sees attn_out."""
    model = hf_bridges["neox"]
    with torch.no_grad():
        _, cache = model.run_with_cache(family_tokens(model))
        pre, attn = cache["blocks.0.hook_resid_pre"], cache["blocks.0.hook_attn_out"]
        post = cache["blocks.1.hook_resid_pre"]
        torch.testing.assert_close(resume.finish_block(model, 0, pre, attn), post, atol=1e-5, rtol=0)
        sequential = pre + attn + model.blocks[0].mlp(model.blocks[0].ln2(pre + attn))
    assert float((sequential - post).abs().max()) > 1e-2  # the old rule, wrong here


def test_patch_heads_equals_transformer_lens_on_every_family(hf_bridges, family):
    model = hf_bridges[family]
    clean, corrupted = family_tokens(model, seed=1), family_tokens(model, seed=2)
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
    for metric in (logit_diff, next_token_logprob(clean)):
        expected = tl_patching.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, metric)
        actual = circuits.patch_heads(model, clean, corrupted, metric)
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
        assert float(expected.std()) > 1e-3


def naive_ablation(model, tokens, metric, source, freeze=None):
    """[layer, head] of `metric` with that head's z replaced by `source(layer)` in a plain hooked
    forward per head; `freeze`: every layer's attention pattern set to these values too."""
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    out = torch.empty(n_layers, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):
            def replace(z, hook, head=head, layer=layer):
                z = z.clone()
                z[:, :, head] = source(layer).expand_as(z)[:, :, head]
                return z

            hooks = [(z_name(layer), replace)]
            if freeze is not None:
                hooks += [(pattern_name(l), lambda p, hook, l=l: freeze[l]) for l in range(n_layers)]
            with torch.no_grad():
                out[layer, head] = metric(model.run_with_hooks(tokens, fwd_hooks=hooks))
    return out


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_ablate_heads_equals_plain_hooked_runs_on_every_family(hf_bridges, family, method):
    model = hf_bridges[family]
    tokens = family_tokens(model)
    metric = next_token_logprob(tokens)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    rows = derangement(tokens.shape[0], torch.Generator().manual_seed(7))
    source = {
        "zero": lambda layer: torch.zeros(1, 1, 1, 1),
        "mean": lambda layer: cache[z_name(layer)].mean(0, keepdim=True),
        "resample": lambda layer: cache[z_name(layer)][rows],
    }[method]
    expected = naive_ablation(model, tokens, metric, source)
    actual = circuits.ablate_heads(model, tokens, metric, method=method, seed=7)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        assert float((expected - metric(model(tokens))).abs().max()) > 1e-2


@pytest.mark.parametrize("name", PATTERN_FAMILIES)
def test_pattern_ablation_equals_plain_hooked_runs(hf_bridges, name):
    model = hf_bridges[name]
    tokens = family_tokens(model)
    metric = next_token_logprob(tokens)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    frozen = {l: cache[pattern_name(l)] for l in range(2)}
    expected = naive_ablation(model, tokens, metric, lambda layer: torch.zeros(1, 1, 1, 1), frozen)
    actual = circuits.ablate_heads(model, tokens, metric, method="pattern")
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    # Frozen patterns change layer 0's numbers (layer 1 cannot re-route around the missing head).
    zero = circuits.ablate_heads(model, tokens, metric, method="zero")
    assert float((actual[0] - zero[0]).abs().max()) > 1e-4


def test_pattern_ablation_is_refused_where_pattern_edits_are_ignored(hf_bridges):
    model = hf_bridges["neo"]
    tokens = family_tokens(model)
    with pytest.raises(RuntimeError, match="hook_pattern") as info:
        circuits.ablate_heads(model, tokens, next_token_logprob(tokens), method="pattern")
    assert "\n" not in str(info.value)


def test_attribution_is_the_derivative_along_the_patch_on_every_family(hf_bridges, family):
    """attribute_heads(l, h) = d/dt metric(corrupted run with z_h moved t of the way to clean) at
    t = 0, checked by central differences through plain hooked forwards (RoPE, GQA and parallel
    blocks included). With a step of 3e-3 the differences agree with it to 3e-4 of the largest
    entry on every family (1e-2 leaves 1.5e-3 of curvature on GPT-Neo, 1e-3 as much of rounding)."""
    model = hf_bridges[family]
    clean, corrupted = family_tokens(model, seed=1), family_tokens(model, seed=2)
    metric = logit_diff
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        _, corrupted_cache = model.run_with_cache(corrupted)
    eps = 3e-3

    def moved(t: float):
        def source(layer):
            z = corrupted_cache[z_name(layer)]
            return z + t * (clean_cache[z_name(layer)] - z)

        return source

    plus = naive_ablation(model, corrupted, metric, moved(eps))
    minus = naive_ablation(model, corrupted, metric, moved(-eps))
    derivative = (plus - minus) / (2 * eps)
    estimate = circuits.attribute_heads(model, clean, corrupted, metric)
    scale = float(derivative.abs().max())
    assert scale > 1e-2
    torch.testing.assert_close(estimate, derivative, atol=2e-3 * scale, rtol=0)


@pytest.mark.parametrize("family", ["neox", "llama"])
def test_resume_tolerance_follows_the_dtype_so_bfloat16_resumes(hf_dirs, family):
    """bfloat16 rounds the shortcut and the model's forward differently (~1 epsilon); the check's
    tolerance follows the dtype, so the shortcut is still taken and agrees with full forwards to
    bfloat16 precision."""
    from induction.loading.models import load_model

    model = load_model(hf_dirs[family]).to(torch.bfloat16, print_details=False)
    assert resume.resume_tolerance(model) == pytest.approx(16 * 2**-7)
    tokens = family_tokens(model)
    runs = [(engine.ZEdit(l, h),) for l in range(2) for h in range(4)]
    zero = lambda layer: torch.zeros(1, 1, 1, 1)  # noqa: E731
    metric = next_token_logprob(tokens)
    fast = engine.sweep_head_z(model, tokens, metric, runs, zero)
    slow = engine.sweep_head_z(model, tokens, metric, runs, zero, resume=False)
    assert fast.resumed and fast.values.dtype == torch.float32
    torch.testing.assert_close(fast.values, slow.values, atol=0.1, rtol=0)


def test_runs_per_forward_is_sized_by_free_memory_on_cuda(hf_bridges, monkeypatch):
    """On CUDA the default stacks as many runs as fit in half the free memory at `forward_bytes`
    each; elsewhere it keeps a forward's attention patterns near 2**20 entries."""
    model = hf_bridges["gpt2"]
    per_run = engine.forward_bytes(model, 8, 64)
    logits = 8 * 64 * int(model.cfg.d_vocab) * 4
    assert per_run > 2 * logits  # the logits and their log-softmax, plus the activations
    assert engine.default_runs_per_forward(model, 8, 64) == max(1, 2**20 // (8 * 4 * 64 * 64))

    for free in (10 * per_run, 1000 * per_run, per_run // 3):
        monkeypatch.setattr(engine, "free_device_memory", lambda device, free=free: free)
        assert engine.default_runs_per_forward(model, 8, 64) == max(1, free // 2 // per_run)
    monkeypatch.undo()
    assert engine.free_device_memory(torch.device("cpu")) is None
