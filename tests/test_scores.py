"""The head detector against known answers (hand-built model) and a plain loop implementation."""

from __future__ import annotations

import pytest
import torch
from helpers import OFFSET, ROLES, assert_close, build_induction_model

from induction.checkpoint import boot_native, native_config
from induction.models import ModelInfo
from induction.prompts import RepeatedTokensConfig
from induction.scores import ScoreConfig, copying_ov_scores, score_heads


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
    from induction.prompts import RepeatedTokens

    prompts = RepeatedTokens(tokens=tokens, periods=torch.zeros(3, dtype=torch.long), bos=True)
    s = score_heads(model, ScoreConfig(batch_size=2, n_bootstrap=0), prompts=prompts)
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
