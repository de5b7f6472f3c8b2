"""Prompts: repeated random tokens (Olsson et al. 2022), with the repeat period varied per prompt.

A prompt is [BOS] + a segment of P distinct random tokens tiled to the prompt length, so every token
after the first P has earlier occurrences. P is drawn per prompt from [min_period, max_period]: a head
that attends at a fixed offset k only lines up with "the token after the previous occurrence" when
P = k + 1, so it cannot pass for an induction head on average.

The masks that the scores use (`duplicate_mask`, `prefix_mask`) are computed from the tokens alone,
so they stay right for any token sequence, including accidental repeats.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from induction.common.checks import check_min
from induction.inputs.repeated import distinct_random_tokens, segment_cap, tile_segments


class PromptError(ValueError):
    """Prompt settings that cannot be satisfied by this model (too long, too few tokens, ...)."""


DEFAULT_SEQ_LEN = 256  # the prompt length when seq_len is None (or the model's context, if shorter)


@dataclass
class RepeatedTokensConfig:
    """How to build repeated-random-token prompts.

    Attributes:
        n_prompts: number of prompts (the unit of the bootstrap confidence intervals).
        seq_len: tokens per prompt, BOS included; None means min(model context, 256).
        min_period: shortest segment; None means max(3, min(body // 8, max_period - 5)) where
            body = seq_len - BOS. Periods of 1 or 2 would let a previous-token head score as
            prefix-matching; the cap keeps >= 6 distinct periods when the vocabulary is small.
        max_period: longest segment; None means min(body // 2, usable tokens): at least two
            occurrences of each token, and distinct tokens within a segment.
        exclude_top: with a frequency table, drop this many most frequent tokens (Olsson et al.
            avoid very common tokens, whose embeddings are atypical).
        exclude_bottom: with a frequency table, drop this many least frequent tokens (under-trained).
        seed: seeds the token draws.
    """

    n_prompts: int = 64
    seq_len: int | None = None
    min_period: int | None = None
    max_period: int | None = None
    exclude_top: int = 0
    exclude_bottom: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_min("n_prompts", self.n_prompts, 1, PromptError)
        if self.seq_len is not None and self.seq_len < 5:
            raise PromptError(f"seq_len must be >= 5, got {self.seq_len}")
        if self.exclude_top < 0 or self.exclude_bottom < 0:
            raise PromptError("exclude_top and exclude_bottom must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RepeatedTokens:
    """A batch of repeated-random-token prompts.

    Attributes:
        tokens: [n_prompts, seq_len] token ids.
        periods: [n_prompts] the segment length of each prompt.
        bos: whether position 0 is a BOS token (excluded from every score).
    """

    tokens: Int[Tensor, "batch pos"]
    periods: Int[Tensor, " batch"]
    bos: bool

    @property
    def first_content_pos(self) -> int:
        return int(self.bos)


def resolve_seq_len(cfg: RepeatedTokensConfig, n_ctx: int) -> int:
    seq_len = cfg.seq_len if cfg.seq_len is not None else min(n_ctx, DEFAULT_SEQ_LEN)
    if seq_len > n_ctx:
        raise PromptError(f"prompt length {seq_len} exceeds the model's context of {n_ctx} tokens")
    return seq_len


def allowed_tokens(
    d_vocab: int,
    bos_token_id: int | None,
    token_freqs: Tensor | None = None,
    exclude_top: int = 0,
    exclude_bottom: int = 0,
    special_ids: tuple[int, ...] = (),
) -> Int[Tensor, " n_allowed"]:
    """Token ids prompts may use: the vocabulary less BOS, specials, and the excluded frequency tails."""
    excluded = set(special_ids) | ({bos_token_id} if bos_token_id is not None else set())
    if token_freqs is not None:
        if token_freqs.shape != (d_vocab,):
            raise PromptError(f"token frequency table has shape {tuple(token_freqs.shape)}, expected ({d_vocab},)")
        order = token_freqs.argsort(descending=True).tolist()
        excluded |= set(order[:exclude_top])
        if exclude_bottom:
            excluded |= set(order[-exclude_bottom:])
    elif exclude_top or exclude_bottom:
        raise PromptError("exclude_top/exclude_bottom need a token frequency table")
    return torch.tensor([t for t in range(d_vocab) if t not in excluded], dtype=torch.long, device="cpu")


def repeated_random_tokens(
    cfg: RepeatedTokensConfig,
    d_vocab: int,
    n_ctx: int,
    bos_token_id: int | None = None,
    token_freqs: Tensor | None = None,
    special_ids: tuple[int, ...] = (),
) -> RepeatedTokens:
    """Build the prompts described in the module docstring, reproducibly from `cfg.seed`."""
    seq_len = resolve_seq_len(cfg, n_ctx)
    body = seq_len - (bos_token_id is not None)
    allowed = allowed_tokens(d_vocab, bos_token_id, token_freqs, cfg.exclude_top, cfg.exclude_bottom, special_ids)
    max_p = cfg.max_period if cfg.max_period is not None else segment_cap(allowed.numel(), body)
    # Default shortest period: body/8, but low enough that at least ~6 distinct periods are drawn
    # (a small vocabulary caps max_p), so no single fixed offset lines up with most prompts.
    min_p = cfg.min_period if cfg.min_period is not None else max(3, min(body // 8, max_p - 5))
    if not 2 <= min_p <= max_p:
        raise PromptError(
            f"no valid repeat period: need 2 <= min_period ({min_p}) <= max_period ({max_p}) "
            f"for prompts of {seq_len} tokens over {allowed.numel()} usable tokens"
        )
    if max_p > allowed.numel():
        raise PromptError(f"max_period {max_p} exceeds the {allowed.numel()} usable tokens (periods need distinct tokens)")
    if 2 * max_p > body:
        raise PromptError(f"max_period {max_p} leaves no repeat in a prompt of {body} content tokens")
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    periods = torch.randint(min_p, max_p + 1, (cfg.n_prompts,), generator=gen, device="cpu")
    segments = distinct_random_tokens(cfg.n_prompts, max_p, allowed, gen)
    tokens = tile_segments(segments, periods, seq_len, bos_token_id)
    return RepeatedTokens(tokens=tokens, periods=periods, bos=bos_token_id is not None)


def duplicate_mask(tokens: Int[Tensor, "batch pos"], first_content_pos: int = 0) -> Bool[Tensor, "batch query_pos key_pos"]:
    """mask[b, q, k]: key k < q holds the same token as query q (an earlier occurrence)."""
    same = tokens[:, :, None] == tokens[:, None, :]
    seq = tokens.shape[1]
    earlier = torch.ones(seq, seq, dtype=torch.bool, device=tokens.device).tril(-1)
    content = torch.arange(seq, device=tokens.device) >= first_content_pos
    return same & earlier & content[None, None, :] & content[None, :, None]


def prefix_mask(tokens: Int[Tensor, "batch pos"], first_content_pos: int = 0) -> Bool[Tensor, "batch query_pos key_pos"]:
    """mask[b, q, k]: key k follows an earlier occurrence of q's token (tokens[k-1] == tokens[q], k-1 < q)."""
    dup = duplicate_mask(tokens, first_content_pos)
    out = torch.zeros_like(dup)
    out[:, :, 1:] = dup[:, :, :-1]  # key k is "the token after" occurrence k-1
    return out


def previous_mask(seq: int, first_content_pos: int = 0, device: torch.device | str = "cpu") -> Bool[Tensor, "query_pos key_pos"]:
    """mask[q, k]: k = q - 1, for queries whose previous token is content (not BOS)."""
    mask = torch.zeros(seq, seq, dtype=torch.bool, device=device)
    q = torch.arange(first_content_pos + 1, seq, device=device)
    mask[q, q - 1] = True
    return mask


def read_token_freqs(path: str | os.PathLike[str]) -> Tensor:
    """A token frequency table from a JSON list of counts, one per token id."""
    path = Path(path)
    try:
        counts = json.loads(path.read_text())
    except FileNotFoundError:
        raise PromptError(f"freqs = {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise PromptError(f"freqs = {path} is not a JSON list of counts ({str(exc).splitlines()[0]})") from None
    if not isinstance(counts, list) or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in counts):
        raise PromptError(f"freqs = {path} must hold a JSON list of numbers, one per token id")
    bad = next((i for i, c in enumerate(counts) if not (math.isfinite(c) and c >= 0)), None)
    if bad is not None:
        raise PromptError(f"freqs = {path}: token {bad} has count {counts[bad]!r}; counts must be finite and >= 0")
    return torch.tensor(counts, dtype=torch.float, device="cpu")
