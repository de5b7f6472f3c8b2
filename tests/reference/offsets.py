"""An independent implementation of the offset scores, for the tests to compare the detector against.

It caches every layer's attention pattern and value vectors and scores each source's offset copying
through the final norm applied to the source's output (`target_copy_scores`), where the detector
streams one forward and uses `induction.heads.copying.CopyingMap`. Slow and memory-hungry by design:
clarity over speed.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from circuits import through_final_norm
from circuits.hooks import FINAL_SCALE, pattern_name, v_name
from induction.heads.copying import flat_logits
from induction.heads.offsets import (
    _MAX_ELEMENTS,
    DEFAULT_OFFSETS,
    MIN_SUPPORT,
    OffsetScores,
    offset_attention,
    offset_keys,
)
from induction.inputs.prompts import RepeatedTokens, duplicate_mask


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
