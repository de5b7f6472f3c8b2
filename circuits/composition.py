"""Composition scores between attention heads (Elhage et al. 2021), from the weights alone."""

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits.hooks import per_query_head

MODES: tuple[str, ...] = ("q", "k", "v")


def _gram(W: Tensor) -> Tensor:
    """`W^T W` over the last two axes."""
    return W.transpose(-1, -2) @ W


def _factored_norm2(G_left: Tensor, M: Tensor, G_right: Tensor) -> Tensor:
    """`||L M R^T||_F^2 = tr(L^T L M R^T R M^T)`, from the Gram matrices of `L` and `R`.

    Everything stays `[d_head, d_head]`: the `[d_model, d_model]` products are never formed.
    """
    return ((G_left @ M @ G_right) * M).sum(dim=(-1, -2))


def _pair_scores(
    W_V_src: Tensor, W_O_src: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, W_O: Tensor
) -> dict[str, Tensor]:
    """Q-, K- and V-composition scores of source heads into destination heads (broadcasting).

    In TransformerLens' row-vector convention (`x @ W`), with `W_OV = W_V W_O` and
    `W_QK = W_Q W_K^T` (`[d_model, d_model]`), the products are `W_OV^src W_QK^dst` (the source
    writes into the destination's queries), `W_OV^src (W_QK^dst)^T` (into its keys) and
    `W_OV^src W_OV^dst` (into its values). These are the paper's `W_QK^T W_OV`, `W_QK W_OV` and
    `W_OV W_OV` written in its column-vector convention, and what TL's
    `all_composition_scores("Q" | "K" | "V")` computes.
    """
    G_V_src = _gram(W_V_src)
    OO_src = W_O_src @ W_O_src.transpose(-1, -2)
    G_Q, G_K, G_V = _gram(W_Q), _gram(W_K), _gram(W_V)
    OO = W_O @ W_O.transpose(-1, -2)
    # Symmetric Gram matrices: tr(A B) = sum(A * B).
    ov_src = (G_V_src * OO_src).sum(dim=(-1, -2)).sqrt()
    qk_dst = (G_Q * G_K).sum(dim=(-1, -2)).sqrt()
    ov_dst = (G_V * OO).sum(dim=(-1, -2)).sqrt()
    q = _factored_norm2(G_V_src, W_O_src @ W_Q, G_K).sqrt() / (ov_src * qk_dst)
    k = _factored_norm2(G_V_src, W_O_src @ W_K, G_Q).sqrt() / (ov_src * qk_dst)
    v = _factored_norm2(G_V_src, W_O_src @ W_V, OO).sqrt() / (ov_src * ov_dst)
    return {"q": q, "k": k, "v": v}


def composition_baseline(
    d_model: int, d_head: int, n_samples: int = 200, seed: int = 0
) -> dict[str, float]:
    """Expected composition scores of random heads with the given shapes.

    The scores are scale-free, so for Gaussian weights they depend on the shapes only; this is
    the mean over `n_samples` pairs of heads with i.i.d. standard normal `W_Q, W_K, W_V`
    (`[d_model, d_head]`) and `W_O` (`[d_head, d_model]`), drawn from
    `torch.Generator("cpu").manual_seed(seed)`. Elhage et al. 2021 subtract such a baseline: a score
    is only meaningful above what unrelated subspaces give by chance, about `1 / sqrt(d_model)`
    (`||A B||_F ~ ||A||_F ||B||_F / sqrt(d_model)` for random `A`, `B`), not zero.

    Args:
        d_model: Residual stream width.
        d_head: Head width.
        n_samples: Number of random pairs.
        seed: Seed of the draw.

    Returns:
        `{"q", "k", "v"}` to the mean random score.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def draw(*shape: int) -> Tensor:
        return torch.randn(n_samples, *shape, generator=generator, dtype=torch.float64, device="cpu")

    W_V_src, W_O_src = draw(d_model, d_head), draw(d_head, d_model)
    W_Q, W_K, W_V = draw(d_model, d_head), draw(d_model, d_head), draw(d_model, d_head)
    W_O = draw(d_head, d_model)
    scores = _pair_scores(W_V_src, W_O_src, W_Q, W_K, W_V, W_O)
    return {mode: float(scores[mode].mean()) for mode in MODES}


def _per_query_head(W: Tensor, n_heads: int) -> Tensor:
    """Grouped key/value heads (GQA) repeated so that every query head has its own (`per_query_head`)."""
    return per_query_head(W, n_heads, dim=1)


def composition_scores(
    model: TransformerBridge,
    subtract_baseline: bool = True,
    baseline_samples: int = 200,
    seed: int = 0,
) -> dict[str, Float[Tensor, "layer_dst head_dst layer_src head_src"]]:
    """Q-, K- and V-composition scores of every earlier head into every later head.

    Elhage et al. 2021 ("A Mathematical Framework for Transformer Circuits"): the composition of
    source head `A` into destination head `B` is `||W_A W_B||_F / (||W_A||_F ||W_B||_F)` with
    `W_A = W_OV` of the source and `W_B` the destination's `W_QK^T` (Q-composition), `W_QK`
    (K-composition) or `W_OV` (V-composition), in the paper's column-vector convention (see
    `_pair_scores` for the row-vector products). The weights are the bridge's (`model.W_Q` ...),
    biases and LayerNorm excluded; with `subtract_baseline`, the random-matrix expectation
    `composition_baseline(d_model, d_head)` is subtracted, so unrelated heads score about 0.
    Computed in float64 from `[d_head, d_head]` Gram matrices.

    Args:
        model: A TransformerBridge.
        subtract_baseline: Subtract the random-matrix baseline.
        baseline_samples: Samples of the baseline estimate.
        seed: Seed of the baseline estimate.

    Returns:
        `{"q", "k", "v"}` to `[layer_dst, head_dst, layer_src, head_src]` tensors; entries with
        `layer_src >= layer_dst` are NaN, and so are pairs where one of the matrices is zero
        (a head with `W_O = 0`, say), for which the ratio is undefined.
    """
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    with torch.no_grad():
        W_Q = model.W_Q.detach().double()
        W_K = _per_query_head(model.W_K.detach().double(), n_heads)
        W_V = _per_query_head(model.W_V.detach().double(), n_heads)
        W_O = model.W_O.detach().double()
    shape = (n_layers, n_heads, n_layers, n_heads)
    out = {mode: torch.full(shape, float("nan"), dtype=torch.float64, device="cpu") for mode in MODES}
    for dst in range(1, n_layers):
        # Destination heads [head_dst, 1, 1] against source heads [layer_src < dst, head_src].
        scores = _pair_scores(
            W_V[:dst], W_O[:dst], *(W[dst][:, None, None] for W in (W_Q, W_K, W_V, W_O))
        )
        for mode in MODES:
            out[mode][dst, :, :dst] = scores[mode]
    if subtract_baseline:
        baseline = composition_baseline(
            int(model.cfg.d_model), int(model.cfg.d_head), baseline_samples, seed
        )
        out = {mode: out[mode] - baseline[mode] for mode in MODES}
    return {mode: out[mode].float() for mode in MODES}
