"""Attention patterns of chosen heads on the detector's own prompts, for looking at before trusting a score.

The prompts are the scan's repeated random tokens (`induction.heads.scores.build_prompts`): BOS, a
segment of P distinct tokens, then repeats of it. On them an induction head draws a stripe: a query
in a repeat attends to the token that followed the query token's earlier occurrence, P - 1
positions back (and 2P - 1, ... for older occurrences).

Long contexts are pooled into blocks of `block` positions so the picture stays legible: a pooled
row is the mean of the block's query rows and a pooled column the sum of the block's key columns,
so each pooled row is still a distribution over keys (row sums are kept, and the stripe stays a
diagonal band). Patterns are read from `hook_pattern` in one forward and held in float32 on the CPU.

Summary per head and prompt (`HeadPatterns.stripe_mass`): the attention mass that queries with an
earlier occurrence put on the induction stripes (keys that followed an earlier occurrence of the
query token), averaged over those queries: the detector's prefix-matching score on the shown prompts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits.hooks import pattern_name
from induction.heads.scores import build_prompts
from induction.inputs.prompts import RepeatedTokens, RepeatedTokensConfig, prefix_mask
from induction.loading.devices import model_device

_HEAD = re.compile(r"^\s*L(\d+)H(\d+)\s*$", re.IGNORECASE)


def parse_head(text: str) -> tuple[int, int]:
    """``"L1H0"`` -> ``(1, 0)``; ValueError naming the expected form otherwise."""
    match = _HEAD.match(text)
    if not match:
        raise ValueError(f"heads: {text!r} is not a head; write LxHy, e.g. L1H0")
    return int(match.group(1)), int(match.group(2))


def head_label(head: tuple[int, int]) -> str:
    return f"L{head[0]}H{head[1]}"


@dataclass
class PatternConfig:
    """Which patterns to read and how to pool them.

    Attributes:
        n_prompts: how many of the detector's prompts to show (the first ones; each is one forward row).
        max_positions: a prompt longer than this is pooled into blocks of ceil(positions / max_positions)
            positions (query rows averaged, key columns summed); 0 or None keeps every position.
    """

    n_prompts: int = 4
    max_positions: int | None = 128

    def __post_init__(self) -> None:
        if self.n_prompts < 1:
            raise ValueError(f"n_prompts must be >= 1, got {self.n_prompts}")
        if self.max_positions is not None and self.max_positions < 0:
            raise ValueError(f"max_positions must be >= 0 (0: no pooling), got {self.max_positions}")

    def block_for(self, seq_len: int) -> int:
        """Positions per pooled cell for a prompt of `seq_len` positions."""
        return 1 if not self.max_positions or seq_len <= self.max_positions else math.ceil(seq_len / self.max_positions)


@dataclass
class HeadPatterns:
    """The attention patterns of chosen heads on repeated-random-token prompts.

    Attributes:
        heads: the (layer, head) pairs, in the order of `patterns`' first axis.
        tokens: [batch, pos] the prompts' token ids.
        periods: [batch] each prompt's segment length P (its first repeat starts at first_content_pos + P).
        first_content_pos: 1 when position 0 is BOS, else 0.
        token_labels: per prompt, one display string per position.
        patterns: [head_index, batch, query_pos, key_pos] float32, pooled into `block`-position cells.
        block: positions per pooled cell (1: unpooled).
        stripe: [head_index, batch] the attention on the induction stripes (module docstring), from
            the unpooled patterns.
    """

    heads: list[tuple[int, int]]
    tokens: Int[Tensor, "batch pos"]
    periods: Int[Tensor, " batch"]
    first_content_pos: int
    token_labels: list[list[str]]
    patterns: Float[Tensor, "head_index batch query_pos key_pos"]
    block: int
    stripe: Float[Tensor, "head_index batch"]

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    def stripe_mass(self) -> dict[str, float]:
        """Head label -> mean stripe attention over the shown prompts."""
        return {head_label(h): float(self.stripe[i].mean()) for i, h in enumerate(self.heads)}

    def to_dict(self) -> dict[str, Any]:
        """The summary that goes into reports (not the patterns themselves)."""
        return {"heads": [{"layer": layer, "head": h, "stripe_mass": float(self.stripe[i].mean()),
                           "stripe_mass_per_prompt": [round(float(v), 6) for v in self.stripe[i]]}
                          for i, (layer, h) in enumerate(self.heads)],
                "n_prompts": int(self.tokens.shape[0]), "seq_len": self.seq_len, "block": self.block,
                "periods": [int(p) for p in self.periods]}


def check_heads(heads: Sequence[tuple[int, int] | str], n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """The heads as (layer, head) ints, or ValueError naming the field and the model's range."""
    out = []
    for item in heads:
        layer, head = parse_head(item) if isinstance(item, str) else (int(item[0]), int(item[1]))
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(f"heads: L{layer}H{head} is not in this model (layers 0-{n_layers - 1}, "
                             f"heads 0-{n_heads - 1})")
        out.append((layer, head))
    if not out:
        raise ValueError("heads: name at least one head")
    if len(set(out)) != len(out):
        raise ValueError(f"heads: repeated in {[head_label(h) for h in out]}")
    return out


def pool_pattern(pattern: Float[Tensor, "*batch query_pos key_pos"], block: int) -> Float[Tensor, "*batch qb kb"]:
    """Pool a pattern into `block` x `block` cells: query rows averaged, key columns summed.

    Row sums are kept: a pooled row is the mean of distributions, each summed over all its keys. A
    last, partial block averages over the rows it has and sums the columns it has.
    """
    if block == 1:
        return pattern
    *lead, nq, nk = pattern.shape
    qb, kb = math.ceil(nq / block), math.ceil(nk / block)
    padded = pattern.new_zeros(*lead, qb * block, kb * block)
    padded[..., :nq, :nk] = pattern
    summed = padded.reshape(*lead, qb, block, kb, block).sum(dim=(-3, -1))  # [..., qb, kb]
    rows = torch.full((qb,), float(block), dtype=pattern.dtype, device=pattern.device)
    rows[-1] = nq - (qb - 1) * block
    return summed / rows[:, None]


def stripe_attention(
    pattern: Float[Tensor, "batch query_pos key_pos"], tokens: Int[Tensor, "batch pos"], first_content_pos: int
) -> Float[Tensor, " batch"]:
    """Per prompt: the attention on keys that followed earlier occurrences of the query token,
    summed over those keys and averaged over queries that have such keys."""
    mask = prefix_mask(tokens, first_content_pos)
    has = mask.any(-1)  # [batch, query_pos]
    per_query = (pattern * mask).sum(-1)
    return (per_query * has).sum(-1) / has.sum(-1).clamp_min(1)


def token_labels(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], bos: bool) -> list[list[str]]:
    """Display strings: the tokenizer's pieces where the model has one, else the token ids; BOS as "BOS"."""
    tok = getattr(model, "tokenizer", None)
    out = []
    for row in tokens.tolist():
        if tok is not None and hasattr(tok, "convert_ids_to_tokens"):
            labels = [str(t) for t in tok.convert_ids_to_tokens(row)]
        else:
            labels = [str(t) for t in row]
        if bos:
            labels[0] = "BOS"
        out.append(labels)
    return out


@torch.no_grad()
def head_patterns(
    model: TransformerBridge,
    heads: Sequence[tuple[int, int] | str],
    prompts: RepeatedTokens | RepeatedTokensConfig | None = None,
    cfg: PatternConfig | None = None,
) -> HeadPatterns:
    """The patterns of `heads` on the first `cfg.n_prompts` of `prompts` (module docstring).

    Args:
        model: the model.
        heads: (layer, head) pairs or "LxHy" strings.
        prompts: the prompts, or the settings that build them (`build_prompts`, as the scan does);
            None: the scan's default prompts.
        cfg: how many prompts and how to pool (`PatternConfig`).
    """
    cfg = cfg or PatternConfig()
    chosen = check_heads(heads, int(model.cfg.n_layers), int(model.cfg.n_heads))
    if not isinstance(prompts, RepeatedTokens):
        prompts = build_prompts(model, prompts or RepeatedTokensConfig())
    tokens = prompts.tokens[: cfg.n_prompts]
    periods = prompts.periods[: cfg.n_prompts]
    layers = sorted({layer for layer, _ in chosen})
    names = {pattern_name(layer) for layer in layers}
    _, cache = model.run_with_cache(tokens.to(model_device(model)), names_filter=lambda n: n in names)
    missing = sorted(names - set(cache.keys()))
    if missing:
        raise RuntimeError(f"the attention pattern hooks did not fire on this model ({', '.join(missing)}); "
                           "its attention does not expose hook_pattern")
    full = torch.stack([cache[pattern_name(layer)][:, h].float().cpu() for layer, h in chosen])  # [head_index, batch, query_pos, key_pos]
    del cache
    first = prompts.first_content_pos
    stripe = torch.stack([stripe_attention(full[i], tokens.cpu(), first) for i in range(len(chosen))])
    block = cfg.block_for(int(tokens.shape[1]))
    return HeadPatterns(heads=chosen, tokens=tokens.cpu(), periods=periods.cpu(), first_content_pos=first,
                        token_labels=token_labels(model, tokens, prompts.bos), patterns=pool_pattern(full, block),
                        block=block, stripe=stripe)


def offset_profile(pattern: Float[Tensor, "query_pos key_pos"], from_pos: int = 0) -> Float[Tensor, " distance"]:
    """Mean attention at each query-key distance q - k (0 .. pos - 1) over queries q >= from_pos:
    an induction head on a prompt of period P peaks at P - 1."""
    n = pattern.shape[0]
    q = torch.arange(n, device=pattern.device)[:, None]
    k = torch.arange(n, device=pattern.device)[None, :]
    dist = (q - k).clamp_min(0)
    keep = (q >= from_pos) & (k <= q)
    out = torch.zeros(n, dtype=torch.float32, device=pattern.device)
    out.index_add_(0, dist[keep], pattern.float()[keep])
    return out / max(n - from_pos, 1)
