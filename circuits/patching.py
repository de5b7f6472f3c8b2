"""Activation patching of attention heads' outputs (exact, one intervened run per head)."""

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits.engine import ZEdit, sweep_head_z
from circuits.hooks import Metric, n_layers_heads, z_name


def patch_heads(
    model: TransformerBridge,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    per_position: bool = False,
    *,
    runs_per_forward: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer head_index"] | Float[Tensor, "layer head_index pos"]:
    """Activation patching of each head's output from the clean run into the corrupted run.

    Entry `(l, h)` is `metric(logits)` of the corrupted run with head `(l, h)`'s `hook_z`
    (`[batch, pos, head_index, d_head]`, the head's output before `W_O`) replaced, at all
    positions, by its value on the clean run (Meng et al. 2022; Wang et al. 2022; Heimersheim &
    Nanda 2024). The numbers are those of TransformerLens'
    `patching.get_act_patch_attn_head_out_all_pos(model, corrupted_tokens, clean_cache, metric)`;
    with `per_position=True`, entry `(l, h, p)` patches position `p` only, the numbers of
    `get_act_patch_attn_head_out_by_pos` rearranged from its `[layer, pos, head]` order.

    Direction: this is "denoising" (clean into corrupted: which heads suffice to restore the
    behaviour). For "noising" (corrupted into clean: which heads are necessary), swap the
    arguments, `patch_heads(model, corrupted_tokens, clean_tokens, metric)`.

    The runs are not full forwards: each resumes inside the patched layer from the cached
    corrupted run and several share a forward (see `circuits.engine`), with the same numbers.

    Args:
        model: A TransformerBridge in eval mode.
        clean_tokens: Tokens of the clean run, the source of the patched values.
        corrupted_tokens: Tokens of the corrupted run, the run that is patched; same shape.
        metric: Logits `[batch, pos, d_vocab]` to a 0-d tensor.
        per_position: Patch one position at a time (`[layer, head_index, pos]` result).
        runs_per_forward: Patched runs stacked into one forward (default:
            `circuits.engine.default_runs_per_forward`, sized by free memory on CUDA).
        progress: Show a progress bar.

    Returns:
        `[layer, head_index]` (or `[layer, head_index, pos]`) tensor of metric values.
    """
    if clean_tokens.shape != corrupted_tokens.shape:
        raise ValueError(
            f"clean and corrupted tokens must have the same shape, got "
            f"{tuple(clean_tokens.shape)} and {tuple(corrupted_tokens.shape)}"
        )
    n_layers, n_heads = n_layers_heads(model)
    n_pos = corrupted_tokens.shape[1]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(
            clean_tokens, names_filter=lambda name: name.endswith("attn.hook_z")
        )
    positions: list[int | None] = list(range(n_pos)) if per_position else [None]
    cells = [(l, h, p) for l in range(n_layers) for h in range(n_heads) for p in positions]
    result = sweep_head_z(
        model,
        corrupted_tokens,
        metric,
        [(ZEdit(l, h, p),) for l, h, p in cells],
        lambda layer: clean_cache[z_name(layer)],
        runs_per_forward=runs_per_forward,
        progress=progress,
    )
    shape = (n_layers, n_heads, n_pos) if per_position else (n_layers, n_heads)
    return result.values.reshape(shape)
