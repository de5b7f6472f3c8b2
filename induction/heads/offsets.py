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

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

import circuits
from circuits import through_final_norm
from circuits.hooks import FINAL_SCALE, pattern_name, v_name
from induction.inputs.prompts import RepeatedTokens, duplicate_mask

DEFAULT_OFFSETS: tuple[int, ...] = tuple(range(-4, 17))
"""Offsets scored by default: -4..16 (1 = canonical induction, 0 = duplicate token)."""
MIN_SUPPORT = 0.5
"""The smallest fraction of prompts that must have offset-d keys for offset d to be scored."""
MIN_SHIFT = 2
"""The smallest offset a shifted-induction head may have (1 is canonical, <= 0 cannot predict)."""
_MAX_ELEMENTS = 2**24


# ---- the offset-d keys of a batch --------------------------------------------------------------


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


# ---- scores from attention patterns ------------------------------------------------------------


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


FLAT_LOGITS_RTOL = 1e-5
"""A logit change whose spread over the vocabulary is within this fraction of its size is flat."""


def flat_logits(top: Tensor, bottom: Tensor) -> Tensor:
    """Whether a source's direct logit change is flat: its largest minus its smallest entry within
    float32 rounding of their size. Such a change has no top token (a head writing only along the
    direction the final LayerNorm centres away), and its copying score is 0, not the sign of the
    rounding noise (which would read +-1)."""
    return (top - bottom) <= FLAT_LOGITS_RTOL * torch.maximum(top.abs(), bottom.abs())


def target_copy_scores(
    model: TransformerBridge,
    layer: int,
    v: Float[Tensor, "batch key_pos kv_head d_head"],
    targets: Int[Tensor, "batch key_pos target"],
    max_elements: int = _MAX_ELEMENTS,
) -> Float[Tensor, "batch head_index key_pos target"]:
    """Each source's copying score (`induction.heads.scores`' ReLU ratio) on each of several target tokens.

    The direct logit change of head h reading source (b, k) is ``l = norm(v W_O) W_U``, ``norm`` the
    final norm linearised with its scale at 1 (it drops out of the ratio); with ``c = l - mean(l)``,
    the score of target t is ``relu(c[t]) / max(relu(c)) - relu(-c[t]) / max(relu(-c))``. With
    `targets` = the sources' own tokens this is `induction.heads.scores.CopyingMap.source_scores`.
    """
    n_heads = model.cfg.n_heads
    if v.shape[2] != n_heads:  # grouped-query attention: each kv head serves n_heads / n_kv heads
        v = v.repeat_interleave(n_heads // v.shape[2], dim=2)
    W_O = model.W_O[layer].detach()  # [head_index, d_head, d_model]
    W_U = model.W_U.detach().float()  # [d_model, d_vocab]
    out = torch.einsum("bkhd,hdm->hbkm", v.float(), W_O.float())  # [head_index, batch, key_pos, d_model]
    scale = torch.ones(*out.shape[1:3], 1, device=out.device) if FINAL_SCALE in model.hook_dict else None
    out = through_final_norm(model, out.to(model.W_U.dtype), scale).float().transpose(0, 1)
    batch, _, seq, d_model = out.shape
    flat = out.reshape(-1, d_model)  # rows in (batch, head_index, key_pos) order
    n_targets = targets.shape[-1]
    idx_all = targets[:, None].expand(batch, n_heads, seq, n_targets).reshape(-1, n_targets).to(flat.device)
    scores = torch.empty(flat.shape[0], n_targets, device=flat.device)
    chunk = max(1, max_elements // W_U.shape[1])
    for i in range(0, flat.shape[0], chunk):
        logits = flat[i : i + chunk] @ W_U
        centred = logits - logits.mean(-1, keepdim=True)
        pos, neg = centred.clamp_min(0), (-centred).clamp_min(0)
        idx = idx_all[i : i + chunk]
        rel_pos = pos.gather(1, idx) / pos.amax(-1, keepdim=True).clamp_min(1e-30)
        rel_neg = neg.gather(1, idx) / neg.amax(-1, keepdim=True).clamp_min(1e-30)
        low, high = torch.aminmax(logits, dim=-1, keepdim=True)
        scores[i : i + chunk] = torch.where(flat_logits(high, low), 0.0, rel_pos - rel_neg)
    return scores.reshape(batch, n_heads, seq, n_targets)


def offset_copying(
    model: TransformerBridge,
    layer: int,
    pattern: Float[Tensor, "batch head_index query_pos key_pos"],
    v: Float[Tensor, "batch key_pos kv_head d_head"],
    tokens: Int[Tensor, "batch pos"],
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    first_content_pos: int = 0,
) -> Float[Tensor, "batch head_index offset"]:
    """Per prompt and head, the offset copying score at each d >= 1 (module docstring); NaN for d < 1."""
    offsets = tuple(int(d) for d in offsets)
    device = pattern.device
    tokens = tokens.to(device)
    n = tokens.shape[1]
    pos = torch.arange(n, device=device)
    repeated = duplicate_mask(tokens, first_content_pos).any(-1).float()  # [batch, query_pos]
    content = (pos >= first_content_pos).float()
    # Attention mass each source receives from repeated queries: the copying score's weights.
    weights = torch.einsum("bhqk,bq->bhk", pattern.float(), repeated) * content  # [batch, head_index, key_pos]
    positive = [i for i, d in enumerate(offsets) if d >= 1]
    out = torch.full((*weights.shape[:2], len(offsets)), float("nan"), device=device)
    if not positive:
        return out
    d = torch.tensor([offsets[i] for i in positive], device=device)
    predicted = pos[:, None] - d[None, :] + 1  # [key_pos, target]: the position of the token to predict
    valid = (predicted >= first_content_pos).float()
    targets = tokens[:, predicted.clamp_min(0)]  # [batch, key_pos, target]
    source = target_copy_scores(model, layer, v, targets)  # [batch, head_index, key_pos, target]
    num = torch.einsum("bhk,bhkt,kt->bht", weights, source, valid)
    den = torch.einsum("bhk,kt->bht", weights, valid)
    out[..., positive] = torch.where(den > 0, num / den.clamp_min(1e-12), float("nan"))
    return out


# ---- all heads of a model ----------------------------------------------------------------------


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


def offset_batch_scores(
    model: TransformerBridge,
    patterns: Sequence[Tensor],
    values: Sequence[Tensor],
    tokens: Int[Tensor, "batch pos"],
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    first_content_pos: int = 0,
) -> dict[str, Float[Tensor, "batch layer head_index offset"]]:
    """Per-prompt offset attention and copying of every head, from one forward's cached patterns and values.

    `patterns[l]` is layer l's `hook_pattern` `[batch, head_index, query_pos, key_pos]` and `values[l]`
    its `hook_v` `[batch, key_pos, kv_head, d_head]`: what `induction.heads.scores` caches, so the detector
    can add these scores without another forward.
    """
    tokens = tokens.to(patterns[0].device)
    keys = offset_keys(tokens, offsets, first_content_pos)
    attention = [offset_attention(p, keys) for p in patterns]
    copying = [offset_copying(model, layer, p, v, tokens, offsets, first_content_pos)
               for layer, (p, v) in enumerate(zip(patterns, values))]
    return {"attention": torch.stack(attention, 1), "copying": torch.stack(copying, 1)}


@torch.no_grad()
def score_offsets(
    model: TransformerBridge,
    prompts: RepeatedTokens,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    batch_size: int = 16,
    min_support: float = MIN_SUPPORT,
    progress: bool = False,
) -> OffsetScores:
    """Offset attention and offset copying of every head of `model` on `prompts`, `batch_size` per forward;
    offsets that fewer than `min_support` of the prompts can score are NaN (module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    offsets = tuple(int(d) for d in offsets)
    n_layers = model.cfg.n_layers
    names = {pattern_name(layer) for layer in range(n_layers)} | {v_name(layer) for layer in range(n_layers)}
    parts: dict[str, list[Tensor]] = {"attention": [], "copying": []}
    tokens_all = prompts.tokens
    for start in tqdm(range(0, tokens_all.shape[0], batch_size), desc="offset scores", disable=not progress, leave=False):
        tokens = tokens_all[start : start + batch_size]
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
        scores = offset_batch_scores(model, [cache[pattern_name(layer)] for layer in range(n_layers)],
                                     [cache[v_name(layer)] for layer in range(n_layers)], tokens, offsets,
                                     prompts.first_content_pos)
        for name, value in scores.items():
            parts[name].append(value)
    return OffsetScores.from_per_prompt(offsets, torch.cat(parts["attention"]), torch.cat(parts["copying"]), min_support)


# ---- the circuit a head implies ----------------------------------------------------------------


@torch.no_grad()
def lag_attention(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"], max_lag: int, first_content_pos: int = 0
) -> Float[Tensor, "layer head_index lag"]:
    """A[l, h, c]: mean attention of head (l, h) from query q to key q - c, c = 0..max_lag, over the
    queries whose key q - c is content."""
    n_layers = int(model.cfg.n_layers)
    n = tokens.shape[1]
    max_lag = min(max_lag, n - 1 - first_content_pos)
    out = torch.full((n_layers, model.cfg.n_heads, max_lag + 1), float("nan"), device="cpu")

    def reduce(layer: int):
        # Each layer's pattern is reduced as it appears: no cache of every layer's [batch, head, pos, pos].
        def hook(pattern: Tensor, hook: object) -> None:  # [batch, head_index, query_pos, key_pos]
            p = pattern.float()
            for c in range(max_lag + 1):
                diagonal = p.diagonal(offset=-c, dim1=-2, dim2=-1)  # [batch, head_index, n - c]: key k = q - c
                out[layer, :, c] = diagonal[..., first_content_pos:].mean((0, 2)).cpu()
        return hook

    with model.hooks(fwd_hooks=[(pattern_name(layer), reduce(layer)) for layer in range(n_layers)]):
        model(tokens)
    return out


@dataclass
class LayerBelowHead:
    """A layer-below head as `implied_circuit` sees it.

    Attributes:
        layer, head: the head.
        lag: the distance c it attends back most (argmax of its lag attention).
        share: its mean attention at that lag.
        k_composition, q_composition, v_composition: its composition scores into the head studied
            (`circuits.composition_scores`, baseline subtracted; NaN where undefined).
    """

    layer: int
    head: int
    lag: int
    share: float
    k_composition: float
    q_composition: float
    v_composition: float


@dataclass
class ImpliedCircuit:
    """The layer-below heads an offset-d (shifted or canonical) induction head implies (module docstring).

    Attributes:
        layer, head, offset: the head and its offset d.
        key_by_lag: heads attending c_K back, for a c_K with c_K - d = c_Q either 0 (the query reads
            the token itself) or another lag head's lag.
        query_by_lag: heads attending c_Q = c_K - d back for one of those c_K (empty: the token itself).
        value_by_lag: heads attending d - 1 back (empty when d = 1: the token itself).
        key_by_composition, query_by_composition, value_by_composition: the layer-below head with the
            largest K-, Q-, V-composition score into the head, when that score is above the random
            baseline (> 0); None otherwise (e.g. a query that reads the token itself). Weights alone
            cannot tell a small real composition from noise, so where the lag and composition
            names disagree, trust neither without a path ablation.
        below: every layer-below head's lag, share and composition scores.
    """

    layer: int
    head: int
    offset: int
    key_by_lag: list[tuple[int, int]]
    query_by_lag: list[tuple[int, int]]
    value_by_lag: list[tuple[int, int]]
    key_by_composition: tuple[int, int] | None
    query_by_composition: tuple[int, int] | None
    value_by_composition: tuple[int, int] | None
    below: list[LayerBelowHead]

    def to_dict(self) -> dict:
        def heads(hs):
            return [list(h) for h in hs]

        return {
            "layer": self.layer, "head": self.head, "offset": self.offset,
            "key_by_lag": heads(self.key_by_lag), "query_by_lag": heads(self.query_by_lag),
            "value_by_lag": heads(self.value_by_lag),
            "key_by_composition": None if self.key_by_composition is None else list(self.key_by_composition),
            "query_by_composition": None if self.query_by_composition is None else list(self.query_by_composition),
            "value_by_composition": None if self.value_by_composition is None else list(self.value_by_composition),
            # Composition scores are NaN where undefined (a head with W_O = 0): null in JSON, never NaN.
            "below": [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in vars(b).items()}
                      for b in self.below],
        }


def implied_circuit(
    model: TransformerBridge,
    layer: int,
    head: int,
    offset: int,
    tokens: Int[Tensor, "batch pos"],
    first_content_pos: int = 0,
    min_share: float = 0.2,
    max_lag: int | None = None,
    composition: dict[str, Tensor] | None = None,
) -> ImpliedCircuit:
    """The layer-below heads that give head (`layer`, `head`) its offset `offset` (module docstring):
    named by attention lag (d = c_K - c_Q, c_V = d - 1) and by K-, Q-, V-composition.

    Args:
        model: the model.
        layer, head: the (shifted or canonical) induction head; `layer` >= 1.
        offset: its induction offset d (`OffsetScores.best`), >= 1.
        tokens: prompts on which the layer-below heads' lags are measured (repeated random tokens,
            on which a duplicate-token or induction head has no single lag).
        first_content_pos: 1 when position 0 is BOS.
        min_share: a head counts as attending lag c when its mean attention there is at least this.
        max_lag: the largest lag considered (default: every lag the prompts allow).
        composition: `circuits.composition_scores(model)`, to reuse across heads (computed when None).
    """
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    if not (1 <= layer < n_layers and 0 <= head < n_heads):
        raise ValueError(f"head ({layer}, {head}) has no layer below it in a model of {n_layers} layers "
                         f"of {n_heads} heads (need 1 <= layer < {n_layers})")
    if offset < 1:
        raise ValueError(f"an induction offset must be >= 1 to predict the next token, got {offset}")
    lags = lag_attention(model, tokens, max_lag or tokens.shape[1], first_content_pos)
    comp = composition if composition is not None else circuits.composition_scores(model)
    below = []
    for gl in range(layer):
        for g in range(n_heads):
            c = int(lags[gl, g].argmax())
            below.append(LayerBelowHead(
                layer=gl, head=g, lag=c, share=float(lags[gl, g, c]),
                k_composition=float(comp["k"][layer, head, gl, g]), q_composition=float(comp["q"][layer, head, gl, g]),
                v_composition=float(comp["v"][layer, head, gl, g]),
            ))
    strong = [b for b in below if b.share >= min_share and b.lag >= 1]
    strong_lags = {b.lag for b in strong}
    key = [b for b in strong if b.lag - offset == 0 or (b.lag - offset) in strong_lags]
    query_lags = {b.lag - offset for b in key} - {0}
    query = [b for b in strong if b.lag in query_lags]
    value = [b for b in strong if b.lag == offset - 1]

    def argmax(name: str) -> tuple[int, int] | None:
        scored = [b for b in below if getattr(b, name) > 0]  # above the random baseline (and not NaN)
        best = max(scored, key=lambda b: getattr(b, name), default=None)
        return None if best is None else (best.layer, best.head)

    def names(bs: list[LayerBelowHead]) -> list[tuple[int, int]]:
        return sorted((b.layer, b.head) for b in bs)

    return ImpliedCircuit(
        layer=layer, head=head, offset=offset, key_by_lag=names(key), query_by_lag=names(query),
        value_by_lag=names(value), key_by_composition=argmax("k_composition"),
        query_by_composition=argmax("q_composition"), value_by_composition=argmax("v_composition"), below=below,
    )
