"""Shifted induction (`induction.heads.offsets`) against known answers: a plain-loop definition of the keys,
exact offset-d attention patterns, the detector's own scores at d = 1 and d = 0, and hand-built
shifted-induction circuits whose layer-0 heads are known."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close, build_induction_model
from reference.offsets import score_offsets, target_copy_scores

import circuits
from induction.bench.handbuilt import HandBuiltSpec, build_handbuilt
from induction.bench.suite import SUITE
from induction.heads.config import ScoreConfig
from induction.heads.copying import CopyingMap
from induction.heads.implied import implied_circuit
from induction.heads.offsets import (
    DEFAULT_OFFSETS,
    OffsetScores,
    offset_attention,
    offset_keys,
    offset_mask,
)
from induction.heads.scores import build_prompts, score_heads
from induction.inputs.prompts import RepeatedTokensConfig, repeated_random_tokens


def role_heads(spec: HandBuiltSpec, role: str, **attrs) -> list[tuple[int, int]]:
    """(layer, head) of the heads of `spec` with `role` and the given attributes (lag=..., ...)."""
    return [(layer, h) for layer, heads in enumerate(spec.layers) for h, r in enumerate(heads)
            if r.role == role and all(getattr(r, k) == v for k, v in attrs.items())]


def loop_mask(tokens: torch.Tensor, d: int, first: int) -> torch.Tensor:
    """The offset-d keys by the definition, one (prompt, query, occurrence) at a time."""
    b, n = tokens.shape
    out = torch.zeros(b, n, n, dtype=torch.bool)
    for bi in range(b):
        t = tokens[bi].tolist()
        for q in range(first, n):
            for j in range(first, q):
                if t[j] != t[q]:
                    continue
                k = j + d
                between = range(j + 1, k + 1) if d > 0 else range(k, j)
                if first <= k < q and not any(t[i] == t[j] for i in between if first <= i < n):
                    out[bi, q, k] = True
    return out


def test_offset_keys_follow_the_definition_on_irregular_tokens():
    """Accidental repeats, adjacent repeats and a BOS whose id also occurs in the content."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (4, 23), generator=gen)
    tokens[:, 0] = 0  # BOS (position 0 is not content, even where token 0 recurs)
    offsets = (-3, -1, 0, 1, 2, 4, 7)
    keys = offset_keys(tokens, offsets, first_content_pos=1)
    for i, d in enumerate(offsets):
        expected = loop_mask(tokens, d, first=1)
        assert torch.equal(offset_mask(tokens, d, 1), expected), d
        assert keys.n_queries[i].tolist() == expected.any(-1).sum(-1).tolist(), d
        assert expected.any(), d  # the comparison is not vacuous


def exact_patterns(prompts, offsets_of_heads, lags, first=1):
    """[batch, head, q, k] patterns: head i attends the offset-d key of the latest earlier occurrence
    (offsets_of_heads[i]); then one head per lag c attending q - c; unmatched queries attend BOS."""
    tokens, periods = prompts.tokens, prompts.periods
    n = tokens.shape[1]
    pattern = torch.zeros(tokens.shape[0], len(offsets_of_heads) + len(lags), n, n)
    pattern[..., 0] = 1.0
    for i, d in enumerate(offsets_of_heads):
        for b, period in enumerate(periods.tolist()):
            if d < period:
                q = torch.arange(first + period, n)
                pattern[b, i, q, 0] = 0.0
                pattern[b, i, q, q - period + d] = 1.0
    for i, c in enumerate(lags, start=len(offsets_of_heads)):
        q = torch.arange(first + c, n)
        pattern[:, i, q, 0] = 0.0
        pattern[:, i, q, q - c] = 1.0
    return pattern


def test_exact_offset_heads_score_one_at_their_offset_and_fixed_offset_heads_stay_low():
    prompts = repeated_random_tokens(RepeatedTokensConfig(n_prompts=32, seed=0), 128, 128, 0)  # the scan's defaults
    exact, lags = (1, 3, 12), tuple(range(1, 41))
    per_prompt = []
    for start in range(0, 32, 8):  # 8 prompts at a time keeps the dense patterns small
        part = type(prompts)(prompts.tokens[start:start + 8], prompts.periods[start:start + 8], True)
        pattern = exact_patterns(part, exact, lags)
        per_prompt.append(offset_attention(pattern, offset_keys(part.tokens, DEFAULT_OFFSETS, 1)))
    attention = torch.cat(per_prompt)[:, None]  # [prompt, layer, head, offset]
    scores = OffsetScores.from_per_prompt(DEFAULT_OFFSETS, attention, torch.zeros_like(attention))
    for i, d in enumerate(exact):
        expected = torch.zeros(len(DEFAULT_OFFSETS))
        expected[DEFAULT_OFFSETS.index(d)] = 1.0
        assert_close(scores.attention[0, i], expected, atol=1e-6, msg=f"exact offset-{d} head")
    # A head that attends c back meets an offset-d key only where the period divides c + d.
    fixed = scores.attention[0, len(exact):]
    assert float(fixed.max()) < 0.15
    best, score, _ = scores.best()
    assert best[0, :len(exact)].tolist() == list(exact) and (score[0, :len(exact)] == 1).all()


def test_offsets_one_and_zero_reproduce_the_detector():
    """a_1 = prefix-matching, a_0 = duplicate-token, offset copying at 1 = copying, on two models
    (attention-only, and LayerNorm + MLP, where the copying score goes through the final norm)."""
    for model in (build_induction_model(), build_handbuilt(SUITE["lnmlp-v20-h8"]())):
        cfg = ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=16, seed=3), n_bootstrap=0, copying_sources=0)
        prompts = build_prompts(model, cfg.prompts)
        detector = score_heads(model, cfg, prompts=prompts)
        offsets = score_offsets(model, prompts, batch_size=5)
        assert_close(offsets.attention[..., offsets.index(1)], detector.prefix_matching, atol=1e-5)
        assert_close(offsets.attention[..., offsets.index(0)], detector.duplicate_token, atol=1e-5)
        assert_close(offsets.copying[..., offsets.index(1)], detector.copying, atol=1e-5)
        assert offsets.copying[..., offsets.index(0)].isnan().all()  # d < 1 cannot predict: no copying score


def copy_source_scores(model, layer, v, tokens):
    """The detector's per-source copying score (`CopyingMap`, streamed through ``W_O N W_U``) on `tokens`:
    [batch, head_index, key_pos]."""
    copying = CopyingMap(model)
    batch, seq, n_kv, _ = v.shape
    n_heads = model.cfg.n_heads
    per_head = v[:, :, copying.kv_head_of(n_kv)].float().permute(2, 0, 1, 3).reshape(n_heads, batch * seq, -1)
    own = tokens.reshape(1, -1).expand(n_heads, -1)
    return copying.source_scores(layer, per_head, own).view(n_heads, batch, seq).transpose(0, 1)


def test_target_copy_scores_read_any_target_and_chunk_exactly():
    """`target_copy_scores` (the final norm applied to each source's output) agrees with the detector's
    streamed per-head map on the sources' own tokens and on other targets."""
    model = build_handbuilt(SUITE["lnmlp-v20-h8"]())
    tokens = build_prompts(model, RepeatedTokensConfig(n_prompts=3)).tokens
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == "blocks.1.attn.hook_v")
    v = cache["blocks.1.attn.hook_v"]
    other = torch.roll(tokens, 1, dims=1)
    both = target_copy_scores(model, 1, v, torch.stack([tokens, other], -1))
    # Each source's logit change, to tell well-conditioned ratios from (near-)flat changes, where
    # float32 rounding decides the ratio (flat ones score 0 in both; near-flat ones may differ).
    out = torch.einsum("bkhd,hdm->hbkm", v, model.W_O[1])
    logits = (circuits.through_final_norm(model, out, torch.ones(*out.shape[1:3], 1)) @ model.W_U).transpose(0, 1)
    spread = logits.amax(-1) - logits.amin(-1)
    flat = spread <= 1e-5 * logits.abs().amax(-1)
    size = logits.abs().amax(-1)
    conditioned = (logits.amax(-1) - logits.mean(-1)).minimum(logits.mean(-1) - logits.amin(-1)) > 1e-2 * size
    assert flat.any() and conditioned.float().mean() > 0.5  # both kinds occur: the comparison is not vacuous
    for i, targets in enumerate((tokens, other)):
        detector = copy_source_scores(model, 1, v, targets)
        assert (both[..., i][flat] == 0).all() and (detector[flat] == 0).all()
        assert_close(both[..., i][conditioned], detector[conditioned], atol=1e-5)
    assert_close(target_copy_scores(model, 1, v, torch.stack([tokens, other], -1), max_elements=50), both, atol=1e-6)


def test_offset_attention_chunking_is_exact():
    prompts = repeated_random_tokens(RepeatedTokensConfig(n_prompts=4, seed=1), 40, 48, 0)
    pattern = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(0)).tril().softmax(-1)
    keys = offset_keys(prompts.tokens, DEFAULT_OFFSETS, 1)
    chunked, whole = offset_attention(pattern, keys, max_elements=7), offset_attention(pattern, keys)
    assert torch.equal(chunked.isnan(), whole.isnan()) and whole.isnan().any()  # prompts with no offset-d keys
    assert_close(chunked.nan_to_num(-1.0), whole.nan_to_num(-1.0), atol=1e-6)


@pytest.fixture(scope="module", params=["attn-v20-h8", "attn-v32-h10"])
def shifted_model(request):
    spec = SUITE[request.param]()
    model = build_handbuilt(spec)
    prompts = build_prompts(model, RepeatedTokensConfig(n_prompts=32))
    return spec, model, prompts, score_offsets(model, prompts)


def test_handbuilt_shifted_head_is_flagged_by_its_offset_not_by_the_canonical_detector(shifted_model):
    spec, model, prompts, offsets = shifted_model
    (shifted,) = role_heads(spec, "shifted_induction")
    d = spec.layers[shifted[0]][shifted[1]].offset
    best, score, copying = offsets.best()
    assert int(best[shifted]) == d and float(score[shifted]) > 0.95 and float(copying[shifted]) > 0.95
    detector = score_heads(model, ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=32), n_bootstrap=0), prompts=prompts)
    # Its own-token copying (what it attends to is not what it predicts) and prefix matching are ~0.
    assert float(detector.copying[shifted]) < 0.1 and float(detector.prefix_matching[shifted]) < 0.05
    assert not detector.is_induction[shifted]
    flagged = offsets.is_shifted_induction(0.4, 0.5).nonzero().tolist()
    assert [tuple(h) for h in flagged] == [shifted]
    for head in role_heads(spec, "induction"):  # canonical heads: offset 1, not shifted
        assert int(best[head]) == 1 and detector.is_induction[head]
    # No layer-0 head (offset, fixed-offset, previous-token heads included) reaches 0.4 at any d != 0.
    layer0 = offsets.attention[0].clone()
    layer0[..., offsets.index(0)] = 0.0  # the duplicate-token head's own score
    assert float(layer0.nan_to_num(0.0).max()) < 0.4


def test_implied_circuit_names_the_layer_below_heads(shifted_model):
    spec, model, prompts, offsets = shifted_model
    (shifted,) = role_heads(spec, "shifted_induction")
    role = spec.layers[shifted[0]][shifted[1]]
    (prev,) = role_heads(spec, "previous_token")
    (key,) = role_heads(spec, "offset", lag=role.key_lag)
    (value,) = role_heads(spec, "offset", lag=role.value_lag)
    composition = circuits.composition_scores(model)
    circuit = implied_circuit(model, *shifted, role.offset, prompts.tokens, first_content_pos=1, composition=composition)
    assert circuit.key_by_lag == [key] and circuit.query_by_lag == [prev] and circuit.value_by_lag == [value]
    assert (circuit.key_by_composition, circuit.query_by_composition, circuit.value_by_composition) == (key, prev, value)
    for head in role_heads(spec, "induction"):
        canonical = implied_circuit(model, *head, 1, prompts.tokens, first_content_pos=1, composition=composition)
        # K-composition names the previous-token head; the lag rule lists it among the heads whose
        # lags are consistent with d = 1 (c_K - c_Q = 1 also pairs other lag heads).
        assert canonical.key_by_composition == prev and prev in canonical.key_by_lag
        assert canonical.value_by_lag == [] and canonical.value_by_composition is None  # the token itself
        assert canonical.query_by_composition is None
    with pytest.raises(ValueError, match="no layer below"):
        implied_circuit(model, 0, 0, 1, prompts.tokens, composition=composition)
    with pytest.raises(ValueError, match="must be >= 1"):
        implied_circuit(model, *shifted, 0, prompts.tokens, composition=composition)
