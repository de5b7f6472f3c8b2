"""The head detector against known answers (hand-built model) and a plain loop implementation."""

from __future__ import annotations

import json
from statistics import NormalDist

import pytest
import torch
from helpers import OFFSET, ROLES, LargestTensor, assert_close, build_induction_model, save_tiny_hf_gpt2

import induction.heads.copying
from induction.heads.config import ScoreConfig
from induction.heads.copying import copying_ov_scores
from induction.heads.offsets import DEFAULT_OFFSETS
from induction.heads.scores import build_prompts, score_heads
from induction.inputs.prompts import RepeatedTokens, RepeatedTokensConfig
from induction.loading.models import ModelInfo, load_model
from induction.loading.native import boot_native, native_config


@pytest.fixture(scope="module")
def handbuilt():
    return build_induction_model()


@pytest.fixture(scope="module")
def handbuilt_scores(handbuilt):
    return score_heads(handbuilt, ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=32), n_bootstrap=200))


def test_handbuilt_flags_exactly_the_induction_head(handbuilt_scores):
    assert handbuilt_scores.induction_heads() == [ROLES.induction]


def test_handbuilt_known_scores(handbuilt_scores):
    s = handbuilt_scores
    assert s.copying_method["method"] == "sampled"  # the known copying scores come from the default estimate
    assert s.prefix_matching[ROLES.induction] > 0.99
    assert s.prefix_matching[ROLES.anti_induction] > 0.99
    assert s.copying[ROLES.induction] > 0.99
    assert s.copying[ROLES.anti_induction] < -0.99  # suppresses what it attends to
    assert s.copying[ROLES.self_copy] > 0.99 and s.prefix_matching[ROLES.self_copy] < 0.01
    assert s.previous_token[ROLES.previous_token] > 0.99
    assert s.duplicate_token[ROLES.duplicate_token] > 0.99
    # The previous-token and duplicate-token heads rank first on their own scores.
    flat = lambda t: t.flatten().argmax().item()  # noqa: E731
    n_heads = s.n_heads
    assert flat(s.previous_token) == ROLES.previous_token[0] * n_heads + ROLES.previous_token[1]
    assert flat(s.duplicate_token) == ROLES.duplicate_token[0] * n_heads + ROLES.duplicate_token[1]


def test_fixed_offset_head_fakes_induction_only_with_a_fixed_period(handbuilt):
    fixed = RepeatedTokensConfig(n_prompts=16, min_period=OFFSET + 1, max_period=OFFSET + 1)
    s_fixed = score_heads(handbuilt, ScoreConfig(prompts=fixed, n_bootstrap=0))
    assert s_fixed.prefix_matching[ROLES.fixed_offset] > 0.9
    assert s_fixed.is_induction[ROLES.fixed_offset]  # the failure mode varied periods exist for
    s_varied = score_heads(handbuilt, ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=32), n_bootstrap=0))
    assert s_varied.prefix_matching[ROLES.fixed_offset] < 0.2
    assert not s_varied.is_induction[ROLES.fixed_offset]


def test_bootstrap_ci_width_matches_the_analytic_standard_error(handbuilt_scores):
    """95% percentile-bootstrap intervals over prompts are about mean -/+ 1.96 standard errors."""
    checked = 0
    for name, ci in handbuilt_scores.ci.items():
        per_prompt = handbuilt_scores.per_prompt[name].double()  # [prompt, layer, head]
        n = per_prompt.shape[0]
        se = per_prompt.std(0, unbiased=True) / n**0.5
        mean = per_prompt.mean(0)
        width = (ci[..., 1] - ci[..., 0]).double()
        varied = se > 1e-3
        assert torch.allclose(width[varied], 2 * 1.96 * se[varied], rtol=0.25), name
        assert (width[~varied] < 0.01).all(), name  # a score constant over prompts has no spread
        centre = (ci[..., 0] + ci[..., 1]).double() / 2
        assert ((centre - mean).abs()[varied] <= se[varied]).all(), name
        checked += int(varied.sum())
    assert checked >= 8  # enough heads vary over prompts for the check to mean something


def _loop_scores(model, tokens, first):
    """Plain-loop reference implementation of the four prompt-based scores."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    _, cache = model.run_with_cache(tokens)
    W_U = model.W_U.detach()
    norm = (model.cfg.normalization_type or "").upper()
    ln_w = getattr(model.ln_final, "original_component", None)
    ln_w = getattr(ln_w, "weight", None)
    B, T = tokens.shape
    out = {k: torch.zeros(B, n_layers, n_heads) for k in ("prefix_matching", "duplicate_token", "previous_token", "copying")}
    for b in range(B):
        toks = tokens[b].tolist()
        for layer in range(n_layers):
            A = cache[f"blocks.{layer}.attn.hook_pattern"][b]
            v = cache[f"blocks.{layer}.attn.hook_v"][b]
            for h in range(n_heads):
                src = []
                for s in range(T):
                    o = v[s, h] @ model.W_O[layer, h]
                    if norm in ("LN", "LNPRE"):
                        o = o - o.mean()
                    if ln_w is not None:
                        o = o * ln_w
                    logit = o @ W_U
                    c = (logit - logit.mean()).detach()
                    own = float(c[toks[s]])
                    src.append(own / float(c.max()) if own > 0 else own / float(-c.min()) if own < 0 else 0.0)
                pm = dm = 0.0
                rows = 0
                num = den = 0.0
                for q in range(first, T):
                    earlier = [k for k in range(first, q) if toks[k] == toks[q]]
                    if not earlier:
                        continue
                    rows += 1
                    pm += sum(float(A[h, q, k + 1]) for k in earlier)
                    dm += sum(float(A[h, q, k]) for k in earlier)
                    for k in range(first, q + 1):
                        num += float(A[h, q, k]) * src[k]
                        den += float(A[h, q, k])
                out["prefix_matching"][b, layer, h] = pm / max(rows, 1)
                out["duplicate_token"][b, layer, h] = dm / max(rows, 1)
                out["copying"][b, layer, h] = num / den
                prev = [float(A[h, q, q - 1]) for q in range(first + 1, T)]
                out["previous_token"][b, layer, h] = sum(prev) / len(prev)
    return out


@pytest.mark.parametrize("gpt2_style", [False, True])
def test_batched_scores_match_plain_loop(gpt2_style):
    cfg = native_config(n_layers=2, d_model=32, n_heads=4, n_ctx=24, d_vocab=20, seed=1,
                        attn_only=not gpt2_style, normalization_type="LN" if gpt2_style else None)
    model = boot_native(cfg)
    model.induction_info = ModelInfo(spec="x", kind="memory", bos_token_id=0)
    # Random tokens (with accidental repeats) exercise the masks beyond the tidy prompts.
    tokens = torch.randint(1, 20, (3, 24))
    tokens[:, 0] = 0
    prompts = RepeatedTokens(tokens=tokens, periods=torch.zeros(3, dtype=torch.long), bos=True)
    s = score_heads(model, ScoreConfig(batch_size=2, n_bootstrap=0, copying_sources=0), prompts=prompts)
    ref = _loop_scores(model, tokens, first=1)
    for name, values in ref.items():
        assert_close(s.per_prompt[name], values, atol=1e-5, msg=name)


def test_copying_ov_matches_full_vocab_eigenvalues():
    model = boot_native(native_config(n_layers=2, d_model=32, n_heads=4, n_ctx=16, d_vocab=40, seed=3))
    got = copying_ov_scores(model)
    for layer in range(2):
        for h in range(4):
            full = (model.W_E @ model.W_V[layer, h] @ model.W_O[layer, h] @ model.W_U).double().detach()
            eig = torch.linalg.eigvals(full)
            assert_close(got[layer, h], eig.sum().real / eig.abs().sum(), atol=1e-4, msg=f"L{layer}H{h}")


def test_scores_are_reproducible_and_seed_dependent(handbuilt):
    cfg = lambda seed: ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8, seed=seed), n_bootstrap=0)  # noqa: E731
    model = boot_native(native_config(n_layers=1, n_ctx=32, seed=0))
    a, b, c = score_heads(model, cfg(1)), score_heads(model, cfg(1)), score_heads(model, cfg(2))
    assert torch.equal(a.prefix_matching, b.prefix_matching)
    assert not torch.equal(a.prefix_matching, c.prefix_matching)


def test_threshold_validation_names_allowed_values():
    with pytest.raises(ValueError, match=r"prefix_threshold must be in \[0, 1\]"):
        ScoreConfig(prefix_threshold=1.5)


@pytest.mark.parametrize("d_vocab, n_ctx, bos", [(24, 48, 0), (24, 48, None), (10, 64, 0), (60, 20, None)])
def test_detector_is_robust_to_vocabulary_context_and_bos(d_vocab, n_ctx, bos):
    model = build_induction_model(d_vocab=d_vocab, n_ctx=n_ctx, bos_token_id=bos)
    s = score_heads(model, ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=32), n_bootstrap=0))
    assert s.induction_heads() == [ROLES.induction]
    assert s.prefix_matching[ROLES.fixed_offset] < 0.3


# ---- the copying estimate: agreement with the exhaustive score, bounded memory -------------------

@pytest.fixture(scope="module")
def tiny_hf_gpt2(tmp_path_factory):
    """A tiny random HF GPT-2 whose final LayerNorm has non-trivial weights (so the norm matters)."""
    path = tmp_path_factory.mktemp("gpt2") / "model"
    save_tiny_hf_gpt2(path, with_tokenizer=False)
    model = load_model(path)
    with torch.no_grad():
        norm = model.ln_final.original_component
        norm.weight.copy_(torch.linspace(0.5, 1.5, norm.weight.numel()))
        norm.bias.copy_(torch.linspace(-0.2, 0.2, norm.bias.numel()))
    return model


def test_exhaustive_copying_on_a_hf_model_matches_plain_loop(tiny_hf_gpt2):
    tokens = torch.randint(1, 60, (2, 20))
    tokens[:, 0] = 0
    prompts = RepeatedTokens(tokens=tokens, periods=torch.zeros(2, dtype=torch.long), bos=True)
    s = score_heads(tiny_hf_gpt2, ScoreConfig(n_bootstrap=0, copying_sources=None), prompts=prompts)
    ref = _loop_scores(tiny_hf_gpt2, tokens, first=1)
    for name, values in ref.items():
        assert_close(s.per_prompt[name], values, atol=1e-5, msg=name)
    assert torch.equal(s.copying_se, torch.zeros_like(s.copying_se))
    assert s.copying_method["method"] == "exhaustive"


def _default_toy():
    from induction.training.defaults import default_model

    return default_model("2l", progress=False)


@pytest.mark.parametrize("which", ["toy", "hf_gpt2"])
def test_sampled_copying_agrees_with_exhaustive_within_its_intervals(which, tiny_hf_gpt2):
    """Over 10 sampling seeds x 8 heads on the same 64 prompts: the exhaustive score lies inside the
    estimate's 95% intervals (est +- 1.96 SE, and the bootstrap interval) about as often as it
    should, and the standardised errors look like N(0, 1): an unbiased estimate with an honest SE."""
    model = _default_toy() if which == "toy" else tiny_hf_gpt2
    prompts = build_prompts(model, RepeatedTokensConfig(n_prompts=64))
    exact = score_heads(model, ScoreConfig(copying_sources=0, n_bootstrap=0), prompts=prompts)
    z95 = NormalDist().inv_cdf(0.975)
    inside_se, inside_ci, z = [], [], []
    for seed in range(10):
        est = score_heads(model, ScoreConfig(copying_seed=seed, n_bootstrap=200), prompts=prompts)
        for name in ("prefix_matching", "duplicate_token", "previous_token"):  # exact either way
            assert torch.equal(getattr(est, name), getattr(exact, name)), name
        error = est.copying - exact.copying
        assert (est.copying_se > 0).all()
        inside_se.append(error.abs() <= z95 * est.copying_se)
        ci = est.ci["copying"]
        inside_ci.append((ci[..., 0] <= exact.copying) & (exact.copying <= ci[..., 1]))
        z.append(error / est.copying_se)
    z = torch.stack(z)
    # On the toy at toy seeds 0-4 (pytest --toy-seed N): coverage 0.94-0.99 (SE) and 0.90-0.98 (bootstrap),
    # z std 0.89-1.19, |z mean| <= 0.24.
    assert torch.stack(inside_se).float().mean() >= 0.8
    assert torch.stack(inside_ci).float().mean() >= 0.8
    assert 0.6 <= float(z.std()) <= 1.5  # an SE off by sqrt(m) either way fails here
    assert abs(float(z.mean())) < 0.5
    if which == "toy":  # the trained model's induction heads copy; the estimate says so too
        # The recipe guarantees copying induction heads in layer 1, not how well the weakest of the four
        # copies: over toy seeds 0-4 the weakest copies 0.82-0.97 exact and 0.80-0.96 estimated (seed 3:
        # 0.816 / 0.798; another machine's seed-0 run gave 0.789), the strongest 0.989-0.998 either way.
        # So: the strongest copies > 0.9 (0.09 below the lowest measured), every layer-1 head clears the
        # detector's copying threshold (0.5, 0.3 below the lowest measured), and the estimate flags
        # exactly the heads the exhaustive score flags (layer 0 copies at most 0.25 exact, so no head is near 0.5).
        threshold = exact.config.copying_threshold
        for scores in (est, exact):
            assert float(scores.copying[1].max()) > 0.9 and (scores.copying[1] >= threshold).all(), scores.copying
        assert torch.equal(est.copying >= threshold, exact.copying >= threshold), (est.copying, exact.copying)


@pytest.mark.parametrize("sources", [4, 0])
def test_copying_memory_does_not_grow_with_vocabulary_heads_and_positions(sources, monkeypatch):
    """No intermediate of the detector scales with d_vocab x heads x positions: with a vocabulary
    much larger than the chunk budget, the largest tensor any operation makes stays within the
    budget, the attention pattern and the weights. Without the budget (a huge one) the same probe
    sees [heads, sources, d_vocab] logit blocks (sources: prompts x 4 sampled, or prompts x positions),
    so it would catch an unchunked implementation."""
    d_vocab, d_model, n_heads, seq, n_prompts = 4096, 16, 4, 64, 8
    cfg = native_config(n_layers=1, d_model=d_model, n_heads=n_heads, n_ctx=seq, d_vocab=d_vocab, seed=0,
                        attn_only=True, normalization_type="LN")
    model = boot_native(cfg).eval()
    model.induction_info = ModelInfo(spec="x", kind="memory", bos_token_id=0)
    score_cfg = ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=n_prompts, seq_len=seq), batch_size=n_prompts,
                            copying_sources=sources, n_bootstrap=0)
    budget = 2**12
    allowed = max(budget, n_prompts * n_heads * seq * seq, d_model * d_vocab)
    assert allowed * 4 <= d_vocab * n_heads * seq  # the check has room to fail
    monkeypatch.setattr(induction.heads.copying, "COPYING_CHUNK_ELEMENTS", budget)
    with LargestTensor() as probe:
        bounded = score_heads(model, score_cfg)
    assert probe.numel <= allowed, probe.shape
    monkeypatch.setattr(induction.heads.copying, "COPYING_CHUNK_ELEMENTS", 2**40)
    with LargestTensor() as probe:
        unbounded = score_heads(model, score_cfg)
    assert probe.numel >= 4 * allowed and probe.shape[-1] == d_vocab, probe.shape  # [heads, sources, d_vocab]
    assert_close(bounded.copying, unbounded.copying, atol=1e-5)  # chunking changes no number


def test_copying_sources_validation_names_allowed_values():
    with pytest.raises(ValueError, match=r"copying_sources must be >= 2 .* or 0 for the exhaustive score"):
        ScoreConfig(copying_sources=1)
    assert ScoreConfig(copying_sources=None).copying_method()["method"] == "exhaustive"
    assert ScoreConfig(copying_sources=8, prompts=RepeatedTokensConfig(seed=3)).copying_method()["seed"] == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_detector_on_cuda_matches_cpu():
    cpu = build_induction_model()
    cfg = ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=16), copying_sources=0, n_bootstrap=0)
    expected = score_heads(cpu, cfg)
    got = score_heads(build_induction_model().to("cuda"), cfg)
    for name in ("prefix_matching", "copying", "previous_token", "duplicate_token", "copying_ov"):
        assert getattr(got, name).device.type == "cuda"
        assert_close(getattr(got, name).cpu(), getattr(expected, name), atol=1e-4, msg=name)
    sampled = score_heads(build_induction_model().to("cuda"), ScoreConfig(prompts=cfg.prompts, n_bootstrap=0))
    assert_close(sampled.copying.cpu(), expected.copying, atol=1e-3)  # near one-hot attention: ~exact


def test_a_head_without_direct_logit_effect_copies_nothing():
    """Heads that write only to directions the unembedding ignores have a logit change of rounding
    errors; their copying score is 0, not a ratio of that noise (which read +-1 before)."""
    from induction.bench.handbuilt import build_handbuilt
    from induction.bench.suite import SUITE

    model = build_handbuilt(SUITE["lnmlp-v20-h8"]())
    direct = torch.einsum("lhdm,mv->lhdv", model.W_O.detach().double(), model.W_U.detach().double())
    written = model.W_O.detach().flatten(2).norm(dim=-1) > 0
    nil = written & (direct.flatten(2).abs().amax(-1) < 1e-9)  # output, but none of it reaches the logits
    assert nil.sum() >= 3
    scores = score_heads(model, ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8), n_bootstrap=0, copying_sources=0))
    assert scores.copying[nil].eq(0).all(), scores.copying[nil]
    assert scores.copying[~nil & written].abs().max() > 0.5  # the others still score
# ---- shifted induction in the detector ------------------------------------------------------------

@pytest.fixture(scope="module")
def suite_scan():
    """The LayerNorm + MLP hand-built model with a canonical head and a shifted head at d = 3, scored
    by the detector (exhaustive copying) and, independently, by `tests/reference/offsets.py`'s `score_offsets`."""
    from reference.offsets import score_offsets

    from induction.bench.handbuilt import build_handbuilt
    from induction.bench.suite import SUITE

    spec = SUITE["lnmlp-v20-h8"]()
    model = build_handbuilt(spec)
    cfg = ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=24, seed=2), n_bootstrap=0, copying_sources=0)
    prompts = build_prompts(model, cfg.prompts)
    return spec, model, cfg, prompts, score_heads(model, cfg, prompts=prompts), score_offsets(model, prompts, batch_size=7)


def roles_of(spec, role):
    return [(layer, h) for layer, heads in enumerate(spec.layers) for h, r in enumerate(heads) if r.role == role]


def test_detector_names_the_shifted_head_with_its_offset_and_the_canonical_one_at_offset_one(suite_scan):
    spec, _, _, _, scores, _ = suite_scan
    (shifted,) = roles_of(spec, "shifted_induction")
    (canonical,) = roles_of(spec, "induction")
    assert spec.layers[shifted[0]][shifted[1]].offset == 3
    assert scores.shifted_induction_heads() == [shifted] and scores.induction_heads() == [canonical]
    assert int(scores.induction_offset[shifted]) == 3 and not scores.is_induction[shifted]
    assert float(scores.offset_prefix_matching[shifted]) > 0.9 and float(scores.offset_copying[shifted]) > 0.9
    assert int(scores.induction_offset[canonical]) == 1 and not scores.is_shifted_induction[canonical]
    records = {(r["layer"], r["head"]): r for r in scores.to_records()}
    assert (records[shifted]["induction_offset"], records[shifted]["is_shifted_induction"],
            records[shifted]["is_induction"]) == (3, True, False)
    assert (records[canonical]["induction_offset"], records[canonical]["is_shifted_induction"]) == (1, False)
    # The duplicate-token head peaks at d = 0, where offset copying is undefined: null, never NaN.
    (duplicate,) = roles_of(spec, "duplicate_token")
    assert records[duplicate]["induction_offset"] == 0 and records[duplicate]["offset_copying"] is None
    json.dumps(scores.to_records(), allow_nan=False)


def test_detector_offset_scores_agree_with_score_offsets(suite_scan):
    """Same forward, same numbers: the streamed offset attention and offset copying of the detector
    against `score_offsets` (cached patterns, `target_copy_scores` through the final norm) on the same prompts."""
    *_, scores, independent = suite_scan
    ours = scores.offsets
    assert ours.offsets == independent.offsets == DEFAULT_OFFSETS
    for name in ("attention", "copying"):
        a, b = getattr(ours, name), getattr(independent, name)
        assert torch.equal(a.isnan(), b.isnan()) and a.isnan().any() and (~a.isnan()).any(), name
        assert_close(a.nan_to_num(0.0), b.nan_to_num(0.0), atol=1e-5, msg=name)
    d, score, copying = independent.best()
    assert torch.equal(scores.induction_offset, d)
    assert_close(scores.offset_prefix_matching.nan_to_num(-9), score.nan_to_num(-9), atol=1e-5)
    assert_close(scores.offset_copying.nan_to_num(-9), copying.nan_to_num(-9), atol=1e-5)
    assert torch.equal(scores.is_shifted_induction, independent.is_shifted_induction(0.4, 0.5))
    # a_1 is prefix-matching, and offset copying at d = 1 the copying score.
    assert_close(ours.attention[..., ours.index(1)], scores.prefix_matching, atol=1e-6)
    assert_close(ours.copying[..., ours.index(1)], scores.copying, atol=1e-6)


def test_sampled_offset_copying_reads_the_copying_draws(suite_scan):
    """With the default sampled copying, offset copying at d = 1 is the copying estimate itself (the
    same draws), and the flags match the exhaustive ones."""
    spec, model, cfg, prompts, exhaustive, _ = suite_scan
    sampled = score_heads(model, ScoreConfig(prompts=cfg.prompts, n_bootstrap=0), prompts=prompts)
    assert_close(sampled.offsets.copying[..., sampled.offsets.index(1)], sampled.copying, atol=1e-6)
    assert torch.equal(sampled.offsets.attention.isnan(), exhaustive.offsets.attention.isnan())
    assert torch.equal(sampled.is_shifted_induction, exhaustive.is_shifted_induction)
    assert torch.equal(sampled.induction_offset, exhaustive.induction_offset)


def test_offsets_are_scored_only_where_the_prompts_periods_support_them(suite_scan):
    """Context 40 gives periods 4-19: d is scored only where at least half the prompts have a period > |d|."""
    *_, prompts, scores, _ = suite_scan
    periods = prompts.periods.float()
    expected = tuple(d for d in DEFAULT_OFFSETS if float((periods > abs(d)).float().mean()) >= 0.5)
    assert scores.scored_offsets() == expected and expected[-1] < 16
    assert scores.offsets.attention[..., scores.offsets.index(16)].isnan().all()


@pytest.mark.parametrize("field, value, message", [("min_offset", 2, "min_offset must be <= 1"),
                                                   ("max_offset", 0, "max_offset must be >= 1"),
                                                   ("offset_support", 0.0, "offset_support must be in")])
def test_offset_settings_are_validated(field, value, message):
    with pytest.raises(ValueError, match=message):
        ScoreConfig(**{field: value})
