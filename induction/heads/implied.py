"""The circuit a (shifted) induction head implies: which layer-below heads its key, query and value read.

By attention lag (`lag_attention`: where each earlier head attends relative to the query) and by
K/Q/V composition (`circuits.composition_scores`); `implied_circuit` names both for every offset-d head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

import circuits
from circuits.hooks import pattern_name


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
