"""Hook names and per-head outputs: what every tool in `circuits` reads and writes.

Every tool in `circuits` intervenes on one activation, a head's `hook_z`
(`# [batch, pos, head_index, d_head]`, the input of `W_O`), and reads the output of the
intervened run. This module names the hooks (`z_name`, `pattern_name`, ...; TL's module paths)
and computes `head_outputs`, a head's write into the residual stream from `hook_z` and `W_O`
(TransformerBridge 4.3 has no per-head `hook_result` on native models), plus the small checks
the tools share. The engine that runs many intervened forwards is `circuits.engine`.
"""

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Tensor]
"""A metric maps logits `[batch, pos, d_vocab]` to a 0-d tensor (the contract of every public
tool). The engine (`circuits.engine`) and `ablate_head_sets` also take per-prompt metrics, which
return one value per prompt, `[batch]`."""

Head = tuple[int, int]
"""`(layer, head_index)`."""

FLOAT32_TOLERANCE = 1e-4
"""Relative tolerance of the engine's self-checks (float32 reorderings stay far below it)."""


# ---- hook names -------------------------------------------------------------------------------


def z_name(layer: int) -> str:
    """`blocks.{layer}.attn.hook_z`: `# [batch, pos, head_index, d_head]`."""
    return f"blocks.{layer}.attn.hook_z"


def pattern_name(layer: int) -> str:
    """`blocks.{layer}.attn.hook_pattern`: `# [batch, head_index, query_pos, key_pos]`.

    On native 4.3 bridges `hook_attn_scores` carries the post-softmax pattern too; this is the
    hook whose edits re-weight the values.
    """
    return f"blocks.{layer}.attn.hook_pattern"


def v_name(layer: int) -> str:
    """`blocks.{layer}.attn.hook_v`: `# [batch, pos, kv_head, d_head]` (fewer kv heads under GQA)."""
    return f"blocks.{layer}.attn.hook_v"


def resid_pre_name(layer: int) -> str:
    """`blocks.{layer}.hook_resid_pre`: `# [batch, pos, d_model]`."""
    return f"blocks.{layer}.hook_resid_pre"


def resid_post_name(layer: int) -> str:
    """`blocks.{layer}.hook_resid_post`: `# [batch, pos, d_model]`, the block's output (fires after
    every hook inside the block, on every bridge)."""
    return f"blocks.{layer}.hook_resid_post"


def attn_out_name(layer: int) -> str:
    """`blocks.{layer}.hook_attn_out`: `# [batch, pos, d_model]`, what attention adds to the stream."""
    return f"blocks.{layer}.hook_attn_out"


def mlp_out_name(layer: int) -> str:
    """`blocks.{layer}.hook_mlp_out`: `# [batch, pos, d_model]`, what the MLP adds to the stream."""
    return f"blocks.{layer}.hook_mlp_out"


FINAL_RESID = "ln_final.hook_in"  # [batch, pos, d_model]
FINAL_SCALE = "ln_final.hook_scale"  # [batch, pos, 1]
UNEMBED_IN = "unembed.hook_in"  # [batch, pos, d_model]: a slice here unembeds only those positions


# ---- small shared helpers ---------------------------------------------------------------------


def n_layers_heads(model: TransformerBridge) -> tuple[int, int]:
    """`(n_layers, n_heads)` of the model."""
    return int(model.cfg.n_layers), int(model.cfg.n_heads)


def require_eval(model: TransformerBridge) -> None:
    """Raise unless the model is in eval mode (dropout would make every number noise)."""
    if model.training:
        raise ValueError("the model is in training mode; call model.eval() before measuring")


def check_heads(model: TransformerBridge, heads: Sequence[Head]) -> list[Head]:
    """Validate `(layer, head)` pairs against the model and return them as a list of tuples."""
    n_layers, n_heads = n_layers_heads(model)
    out = []
    for layer, head in heads:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(
                f"head ({layer}, {head}) out of range for a model with {n_layers} layers "
                f"of {n_heads} heads"
            )
        out.append((int(layer), int(head)))
    return out


def check_metric_value(value: object) -> Tensor:
    """`value`, raising unless it is a 0-d tensor (what every `metric` must return)."""
    if not isinstance(value, Tensor) or value.ndim != 0:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"metric must return a 0-d tensor, got {shape}")
    return value


def apply_metric(metric: Metric, logits: Float[Tensor, "batch pos d_vocab"]) -> Tensor:
    """`metric(logits)`, checked to be a 0-d tensor, detached."""
    return check_metric_value(metric(logits)).detach()


def check_per_prompt_value(value: object, n_batch: int) -> Tensor:
    """`value`, raising unless it is 0-d or has one entry per prompt along its first axis
    (`[batch]`, or `[batch, quantity]` for several per-prompt quantities)."""
    if not isinstance(value, Tensor) or not (value.ndim == 0 or value.shape[0] == n_batch):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"metric must return a 0-d tensor or one value per prompt [{n_batch}], got {shape}")
    return value


def head_outputs(
    z: Float[Tensor, "batch pos head_index d_head"],
    W_O: Float[Tensor, "head_index d_head d_model"],
) -> Float[Tensor, "batch pos head_index d_model"]:
    """Each head's write into the residual stream, `z[..., h, :] @ W_O[h]` (bias excluded).

    `hook_attn_out = sum_h head_outputs[..., h, :] + b_O` (Elhage et al. 2021, "attention heads
    are independent and additive").
    """
    return torch.einsum("bphd,hdm->bphm", z, W_O.to(z.dtype))


def allclose(actual: Tensor, expected: Tensor, rtol: float = FLOAT32_TOLERANCE) -> bool:
    """Agreement up to reordering (float32 by default), relative to the size of `expected`."""
    if actual.shape != expected.shape:
        return False
    scale = max(1.0, float(expected.abs().max()))
    return float((actual.float() - expected.float()).abs().max()) <= rtol * scale


def kv_head_index(n_heads: int, n_kv_heads: int, device: torch.device | str = "cpu") -> Tensor:
    """The key/value head each query head reads under grouped-query attention: h // (n_heads / n_kv_heads)
    (the identity when every query head has its own)."""
    if n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv_heads} key/value heads evenly")
    return torch.arange(n_heads, device=device) // (n_heads // n_kv_heads)


def per_query_head(x: Tensor, n_heads: int, dim: int) -> Tensor:
    """`x` with its key/value-head axis `dim` expanded to one entry per query head (`kv_head_index`)."""
    return x if x.shape[dim] == n_heads else x.index_select(dim, kv_head_index(n_heads, x.shape[dim], x.device))


def capture_z(store: dict[int, Tensor], layer: int) -> Callable[[Tensor, object], Tensor]:
    """A `hook_z` hook that keeps layer `layer`'s z in `store`, as a tensor gradients reach: when
    nothing upstream needs a gradient (frozen weights), z itself becomes the leaf."""

    def hook(z: Tensor, hook: object) -> Tensor:
        if not z.requires_grad:
            z = z.detach().requires_grad_(True)
        store[layer] = z
        return z

    return hook
