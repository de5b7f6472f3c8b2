"""Shifted induction: per head, the attention paid d positions after earlier occurrences of the current token.

Definitions (on repeated-random-token prompts, `induction.inputs.prompts`; BOS never counts):
- offset-d key: for a query q whose token occurred earlier at j < q, the key k = j + d, counted
  only when no other occurrence of that token lies between j and k (d > 0: none in (j, k];
  d < 0: none in [k, j)), k is content and k < q. With a period-P prompt this means |d| < P: a key
  that wraps into the next repetition (j + d holds the token of j + d - P) never counts, so offset
  d never aliases d - P; like `induction.inputs.prompts.prefix_mask`, the rule reads the tokens alone.
- offset attention a_d: per prompt, the attention from each query to its offset-d keys, summed
  over those keys and averaged over the queries that have one; then the mean over the prompts that
  have any (prompts with a period <= |d| have none). On these prompts a_1 is the prefix-matching
  score and a_0 the duplicate-token score of `induction.heads.scores`. An offset that fewer than
  `min_support` (half) of the prompts can score is left unscored (NaN): a mean over a few prompts
  would let a fixed-offset head whose lag happens to suit one of their periods pass for a shifted head.
- `induction_offset`: argmax_d a_d; `offset_prefix_matching`: that a_d.
- offset copying (d >= 1): the copying score of `induction.heads.scores` (the ReLU ratio of the
  mean-centred direct logit change a source causes, attention-weighted over repeated queries) read
  on the token the head should predict, tok[k - d + 1] (= tok[j + 1] = tok[q + 1]), instead of
  the source's own token tok[k]; at d = 1 they coincide. A shifted head predicts from what
  layer-below heads wrote at j + d, so own-token copying reads ~0 or below on it.
- `is_shifted_induction` (the shifted case's own flag; `is_induction` stays the canonical one):
  induction_offset >= 2, offset_prefix_matching >= the prefix threshold and offset copying at
  that offset >= the copying threshold. (d <= 0 reads positions at or before j, which cannot know
  tok[j + 1]; d = 1 is canonical induction.)

A head attending a fixed distance c back meets an offset-d key only in prompts whose period divides
c + d, so it scores about (its share at c) x (those prompts) / (all): at most 0.14 at any d with
32 prompts of the default periods, far under the 0.4 threshold.

The circuit a shifted head implies (`implied_circuit`): if its query reads tok[q - c_Q] and its key
reads tok[k - c_K] (c = 0: the token itself; c > 0: what a layer-below head attending c back wrote),
they match at k = j + d with d = c_K - c_Q; to predict tok[q + 1] = tok[j + 1] the value at k must
carry tok[k - (d - 1)], so c_V = d - 1. Canonical induction: c_Q = 0, c_K = 1 (a previous-token
head), c_V = 0.

Everything is computed on the patterns' device, batched over heads and offsets. The gathers of
attention at the keys and the per-source logits are chunked to `max_elements` entries; the other
intermediates are at most `[batch, pos, pos]` booleans, smaller than the attention pattern itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from induction.inputs.prompts import duplicate_mask

DEFAULT_OFFSETS: tuple[int, ...] = tuple(range(-4, 17))
"""Offsets scored by default: -4..16 (1 = canonical induction, 0 = duplicate token)."""


MIN_SUPPORT = 0.5
"""The smallest fraction of prompts that must have offset-d keys for offset d to be scored."""


MIN_SHIFT = 2
"""The smallest offset a shifted-induction head may have (1 is canonical, <= 0 cannot predict)."""


_MAX_ELEMENTS = 2**24


@dataclass
class OffsetKeys:
    """Every (prompt, query, offset-d key) of a batch, flattened.

    Attributes:
        offsets: the offsets d, in order.
        batch, query, key, offset_index: `[n]` indices of each (prompt, query, key, d) entry.
        n_queries: `[offset, batch]` how many queries have at least one offset-d key.
    """

    offsets: tuple[int, ...]
    batch: Int[Tensor, " n"]
    query: Int[Tensor, " n"]
    key: Int[Tensor, " n"]
    offset_index: Int[Tensor, " n"]
    n_queries: Int[Tensor, "offset batch"]


def next_and_previous_occurrence(
    tokens: Int[Tensor, "batch pos"], first_content_pos: int = 0
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """(next, previous) `[batch, pos]`: the position of the next / previous content position holding
    the same token, or `pos`-many past the end / `-pos`-many before the start when there is none.

    Sorting by (token, position) puts each token's occurrences side by side: O(n log n) memory-light.
    """
    batch, n = tokens.shape
    pos = torch.arange(n, device=tokens.device)
    content = pos >= first_content_pos
    # Non-content positions get distinct sentinel tokens (below every real id) so that they never match.
    keyed = torch.where(content[None, :], tokens.long(), -1 - pos[None, :])
    order = torch.sort(keyed, dim=1, stable=True).indices  # within a token, positions stay ascending
    ordered = torch.gather(keyed, 1, order)
    same_next = ordered[:, 1:] == ordered[:, :-1]  # [batch, n - 1]: sorted neighbour s+1 shares s's token
    nxt_sorted = torch.where(same_next, order[:, 1:], 2 * n)
    prv_sorted = torch.where(same_next, order[:, :-1], -2 * n)
    nxt = torch.full((batch, n), 2 * n, dtype=torch.long, device=tokens.device)
    prv = torch.full((batch, n), -2 * n, dtype=torch.long, device=tokens.device)
    nxt.scatter_(1, order[:, :-1], nxt_sorted)
    prv.scatter_(1, order[:, 1:], prv_sorted)
    return nxt, prv


def offset_keys(
    tokens: Int[Tensor, "batch pos"], offsets: Sequence[int] = DEFAULT_OFFSETS, first_content_pos: int = 0
) -> OffsetKeys:
    """The offset-d keys of every query of `tokens` (module docstring), for each d in `offsets`."""
    offsets = tuple(int(d) for d in offsets)
    if not offsets:
        raise ValueError("offsets must name at least one offset")
    if len(set(offsets)) != len(offsets):
        raise ValueError(f"offsets repeated in {list(offsets)}")
    device = tokens.device
    batch, n = tokens.shape
    b, q, j = duplicate_mask(tokens, first_content_pos).nonzero(as_tuple=True)  # earlier occurrences j of q's token
    nxt, prv = next_and_previous_occurrence(tokens, first_content_pos)
    d = torch.tensor(offsets, dtype=torch.long, device=device)
    key = j[:, None] + d[None, :]  # [m, offset]
    after, before = (nxt[b, j] - j)[:, None], (j - prv[b, j])[:, None]
    clear = torch.where(d[None, :] > 0, after > d[None, :], torch.where(d[None, :] < 0, before > -d[None, :], True))
    valid = clear & (key >= first_content_pos) & (key < q[:, None])
    m, i = valid.nonzero(as_tuple=True)
    entry_b, entry_q, entry_k = b[m], q[m], key[m, i]
    has = torch.zeros(len(offsets), batch * n, dtype=torch.bool, device=device)
    has[i, entry_b * n + entry_q] = True
    return OffsetKeys(offsets=offsets, batch=entry_b, query=entry_q, key=entry_k, offset_index=i,
                      n_queries=has.view(len(offsets), batch, n).sum(-1))


def offset_mask(
    tokens: Int[Tensor, "batch pos"], offset: int, first_content_pos: int = 0
) -> Bool[Tensor, "batch query_pos key_pos"]:
    """mask[b, q, k]: k is an offset-`offset` key of query q (dense; for checks and small inputs)."""
    keys = offset_keys(tokens, (offset,), first_content_pos)
    n = tokens.shape[1]
    mask = torch.zeros(tokens.shape[0], n, n, dtype=torch.bool, device=tokens.device)
    mask[keys.batch, keys.query, keys.key] = True
    return mask


def offset_attention(
    pattern: Float[Tensor, "batch head_index query_pos key_pos"], keys: OffsetKeys, max_elements: int = _MAX_ELEMENTS
) -> Float[Tensor, "batch head_index offset"]:
    """Per prompt and head, the offset attention a_d (module docstring); NaN where no query has an offset-d key."""
    batch, n_heads = pattern.shape[:2]
    n_offsets = len(keys.offsets)
    sums = torch.zeros(batch * n_offsets, n_heads, device=pattern.device, dtype=torch.float32)
    slot = keys.batch * n_offsets + keys.offset_index
    chunk = max(1, max_elements // n_heads)
    for start in range(0, keys.batch.numel(), chunk):
        part = slice(start, start + chunk)
        values = pattern[keys.batch[part], :, keys.query[part], keys.key[part]].float()  # [chunk, head_index]
        sums.index_add_(0, slot[part], values)
    sums = sums.view(batch, n_offsets, n_heads).transpose(1, 2)
    counts = keys.n_queries.T[:, None, :].float()  # [batch, 1, offset]
    return torch.where(counts > 0, sums / counts.clamp_min(1.0), float("nan"))


@dataclass
class OffsetScores:
    """Per-head offset attention and offset copying (module docstring).

    Attributes:
        offsets: the offsets d scored.
        support: `[offset]` the fraction of prompts that have offset-d keys.
        attention: `[layer, head_index, offset]` offset attention a_d, mean over those prompts (NaN
            where the support is under `min_support`).
        copying: `[layer, head_index, offset]` offset copying (NaN for d < 1).
        per_prompt: {"attention", "copying"}: `[prompt, layer, head_index, offset]` (NaN where undefined).
    """

    offsets: tuple[int, ...]
    support: Float[Tensor, " offset"]
    attention: Float[Tensor, "layer head_index offset"]
    copying: Float[Tensor, "layer head_index offset"]
    per_prompt: dict[str, Tensor] = field(repr=False)

    @classmethod
    def from_per_prompt(
        cls, offsets: Sequence[int], attention: Float[Tensor, "prompt layer head_index offset"],
        copying: Float[Tensor, "prompt layer head_index offset"], min_support: float = MIN_SUPPORT,
    ) -> "OffsetScores":
        """Means over the prompts that have offset-d keys (`offset_batch_scores`' NaN marks the others);
        offsets fewer than `min_support` of the prompts can score are NaN."""
        if not 0.0 < min_support <= 1.0:
            raise ValueError(f"min_support must be in (0, 1], got {min_support}")
        # Whether a prompt has offset-d keys depends on its tokens only: read it off any head.
        support = (~attention[:, 0, 0].isnan()).float().mean(0)
        scored = support >= min_support
        return cls(offsets=tuple(int(d) for d in offsets), support=support,
                   attention=torch.where(scored, attention.nanmean(0), float("nan")),
                   copying=torch.where(scored, copying.nanmean(0), float("nan")),
                   per_prompt={"attention": attention, "copying": copying})

    def best(self) -> tuple[Int[Tensor, "layer head_index"], Float[Tensor, "layer head_index"],
                            Float[Tensor, "layer head_index"]]:
        """(induction_offset, offset_prefix_matching, offset copying at that offset), per head.

        Offsets that no prompt could score (NaN) are skipped; a head with none gets d = 1 and NaN scores.
        """
        filled = torch.nan_to_num(self.attention, nan=-1.0)
        index = filled.argmax(-1)
        d = torch.tensor(self.offsets, device=index.device)[index]
        none = (filled.amax(-1) < 0)
        d = torch.where(none, torch.ones_like(d), d)
        score = self.attention.gather(-1, index[..., None])[..., 0]
        copying = self.copying.gather(-1, index[..., None])[..., 0]
        return d, score, copying

    def is_shifted_induction(self, prefix_threshold: float, copying_threshold: float) -> Bool[Tensor, "layer head_index"]:
        """induction_offset >= 2, offset_prefix_matching >= prefix_threshold, offset copying >= copying_threshold."""
        d, score, copying = self.best()
        return (d >= MIN_SHIFT) & (score >= prefix_threshold) & (copying >= copying_threshold)

    def shifted_margin(self, prefix_threshold: float, copying_threshold: float) -> Float[Tensor, "layer head_index"]:
        """How far into the shifted flag's region each head gets at its best offset >= 2:
        max over d >= 2 of min(a_d - prefix_threshold, copying_d - copying_threshold) (>= 0 where a
        shifted offset passes both thresholds); -inf for a head with no scored offset >= 2."""
        shifted = torch.tensor([d >= MIN_SHIFT for d in self.offsets], device=self.attention.device)
        margin = torch.minimum(self.attention - prefix_threshold, self.copying - copying_threshold)
        margin = torch.where(shifted & ~margin.isnan(), margin, float("-inf"))
        return margin.amax(-1)

    def index(self, offset: int) -> int:
        if offset not in self.offsets:
            raise ValueError(f"offset {offset} was not scored (scored: {self.offsets[0]}..{self.offsets[-1]})")
        return self.offsets.index(offset)
