"""Repeated-random-token prompts and the masks the scores use."""

from __future__ import annotations

import pytest
import torch

from induction.inputs.prompts import (
    PromptError,
    RepeatedTokensConfig,
    duplicate_mask,
    prefix_mask,
    previous_mask,
    repeated_random_tokens,
)


def test_prompts_tile_a_segment_of_distinct_tokens_with_varied_periods():
    p = repeated_random_tokens(RepeatedTokensConfig(n_prompts=64, seed=0), d_vocab=100, n_ctx=65, bos_token_id=0)
    assert p.tokens.shape == (64, 65) and (p.tokens[:, 0] == 0).all()
    body = p.tokens[:, 1:]
    for row, period in zip(body, p.periods.tolist()):
        seg = row[:period]
        assert len(set(seg.tolist())) == period and 0 not in seg.tolist()
        assert torch.equal(row, seg.repeat(64 // period + 1)[:64])
    assert len(set(p.periods.tolist())) >= 10  # varied, so fixed-offset heads cannot fake induction
    assert p.periods.min() >= 8 and p.periods.max() <= 32


def test_prompts_are_seeded():
    cfg = RepeatedTokensConfig(n_prompts=4, seed=7)
    a = repeated_random_tokens(cfg, 50, 32, None).tokens
    b = repeated_random_tokens(cfg, 50, 32, None).tokens
    c = repeated_random_tokens(RepeatedTokensConfig(n_prompts=4, seed=8), 50, 32, None).tokens
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_frequency_exclusion_removes_both_tails():
    freqs = torch.arange(30, dtype=torch.float)  # token 29 most frequent, token 0 least
    cfg = RepeatedTokensConfig(n_prompts=32, exclude_top=3, exclude_bottom=4, max_period=10)
    p = repeated_random_tokens(cfg, 30, 32, None, token_freqs=freqs)
    used = set(p.tokens.flatten().tolist())
    assert used.isdisjoint({29, 28, 27, 0, 1, 2, 3})


def test_too_long_prompts_are_refused():
    with pytest.raises(PromptError, match="exceeds the model's context"):
        repeated_random_tokens(RepeatedTokensConfig(seq_len=100), 50, 64, None)


def test_masks_on_a_known_sequence():
    # BOS a b c a b a
    t = torch.tensor([[0, 1, 2, 3, 1, 2, 1]])
    dup, pre, prev = duplicate_mask(t, 1)[0], prefix_mask(t, 1)[0], previous_mask(7, 1)
    assert dup.nonzero().tolist() == [[4, 1], [5, 2], [6, 1], [6, 4]]
    assert pre.nonzero().tolist() == [[4, 2], [5, 3], [6, 2], [6, 5]]
    assert prev.nonzero().tolist() == [[2, 1], [3, 2], [4, 3], [5, 4], [6, 5]]
