"""The synthetic token stream the toy models train on, and on which their ICL score is measured.

Each sequence is BOS followed by a random segment of random length tiled to the context. Within a
sequence the segment's tokens are distinct, so after its first occurrence every token is predicted
exactly by "find the earlier occurrence of the current token and copy what followed" (induction),
and by nothing else: the segment length, hence the repeat period, varies from sequence to sequence,
so a head attending at a fixed offset cannot fake it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor


@dataclass
class ToyDataConfig:
    """Settings of the synthetic stream.

    Attributes:
        d_vocab: vocabulary size, BOS included.
        seq_len: tokens per sequence, BOS included (the model's context).
        min_segment: shortest repeated segment (>= 2).
        max_segment: longest repeated segment; None means `segment_cap(d_vocab - BOS, seq_len - 1)`:
            at least two occurrences of the segment per sequence, and no more tokens than the
            vocabulary's distinct non-BOS tokens.
        bos_token_id: the token at position 0, or None for no BOS. Segment tokens never use it.
    """

    d_vocab: int = 128
    seq_len: int = 128
    min_segment: int = 4
    max_segment: int | None = None
    bos_token_id: int | None = 0

    def __post_init__(self) -> None:
        n_tokens = self.n_tokens
        if self.seq_len < 4:
            raise ValueError(f"seq_len must be >= 4, got {self.seq_len}")
        if self.bos_token_id is not None and not 0 <= self.bos_token_id < self.d_vocab:
            raise ValueError(f"bos_token_id must be in [0, d_vocab={self.d_vocab}), got {self.bos_token_id}")
        if not 2 <= self.min_segment <= self.resolved_max_segment:
            raise ValueError(
                f"need 2 <= min_segment ({self.min_segment}) <= max_segment ({self.resolved_max_segment})"
            )
        if self.resolved_max_segment > n_tokens:
            raise ValueError(
                f"max_segment ({self.resolved_max_segment}) exceeds the {n_tokens} distinct tokens available"
            )

    @property
    def n_tokens(self) -> int:
        """Distinct tokens a segment may use (the vocabulary less BOS)."""
        return self.d_vocab - (self.bos_token_id is not None)

    @property
    def resolved_max_segment(self) -> int:
        return self.max_segment if self.max_segment is not None else segment_cap(self.n_tokens, self.seq_len - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ToyDataConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def segment_cap(n_tokens: int, body: int) -> int:
    """The longest segment of distinct tokens that occurs at least twice in `body` positions:
    min(body // 2, n_tokens). The one rule for the synthetic stream's and the prompts' periods."""
    return max(0, min(body // 2, n_tokens))


def tile_segments(
    segments: Int[Tensor, "batch max_len"],
    lengths: Int[Tensor, " batch"],
    seq_len: int,
    bos_token_id: int | None,
) -> Int[Tensor, "batch seq_len"]:
    """Tile row b's first lengths[b] tokens to fill the row; BOS first when given."""
    body = seq_len - (bos_token_id is not None)
    idx = torch.arange(body, device=segments.device)[None, :] % lengths[:, None]
    tokens = torch.gather(segments, 1, idx)
    if bos_token_id is not None:
        bos = torch.full((segments.shape[0], 1), bos_token_id, dtype=tokens.dtype, device=tokens.device)
        tokens = torch.cat([bos, tokens], dim=1)
    return tokens


def distinct_random_tokens(
    n: int, length: int, allowed: Int[Tensor, " n_allowed"], generator: torch.Generator
) -> Int[Tensor, "n length"]:
    """n rows of `length` distinct tokens drawn uniformly from `allowed`."""
    if length > allowed.numel():
        raise ValueError(f"cannot draw {length} distinct tokens from {allowed.numel()} allowed tokens")
    keys = torch.rand(n, allowed.numel(), generator=generator, device="cpu")
    return allowed[keys.argsort(dim=1)[:, :length]]


def sample_batch(
    cfg: ToyDataConfig, batch: int, generator: torch.Generator
) -> Int[Tensor, "batch seq_len"]:
    """A batch of the synthetic stream (see module docstring), reproducible from `generator`."""
    allowed = torch.tensor([t for t in range(cfg.d_vocab) if t != cfg.bos_token_id], dtype=torch.long, device="cpu")
    max_seg = cfg.resolved_max_segment
    lengths = torch.randint(cfg.min_segment, max_seg + 1, (batch,), generator=generator, device="cpu")
    segments = distinct_random_tokens(batch, max_seg, allowed, generator)
    return tile_segments(segments, lengths, cfg.seq_len, cfg.bos_token_id)
