"""Attribution patching: the first-order estimate of activation patching for every head at once."""

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits.hooks import Metric, check_metric_value, n_layers_heads, require_eval, z_name

ATTRIBUTION_METHODS = ("attribution", "atp-star")


def attribute_heads(
    model: TransformerBridge,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    method: str = "attribution",
) -> Float[Tensor, "layer head_index"]:
    """Attribution patching of each head's output (Nanda 2023; Syed et al. 2023), or AtP*.

    Entry `(l, h)` is

        sum_{batch, pos, d_head} (z_clean - z_corrupted)[:, :, h] * d metric / d z[:, :, h]

    with `z = blocks.{l}.attn.hook_z` and the gradient taken on the corrupted run: the linear
    (first-order Taylor) estimate of `patch_heads(model, clean_tokens, corrupted_tokens, metric)
    - metric(corrupted run)`. It is exact where the metric is linear in the head's z (e.g. a
    logit of an attention-only model without LayerNorm, for a head in the last layer) and an
    approximation elsewhere, poor where a patch saturates a softmax. Cost: two forwards and one
    backward, whatever the number of heads.

    Args:
        model: A TransformerBridge in eval mode.
        clean_tokens: Tokens of the clean run.
        corrupted_tokens: Tokens of the corrupted run, same shape.
        metric: Logits `[batch, pos, d_vocab]` to a 0-d tensor, differentiable.
        method: ``attribution`` (the formula above) or ``atp-star`` (Kramár et al. 2024: the later
            heads' attention patterns recomputed exactly rather than linearised, `circuits.atp`;
            its GradDrop magnitudes come from `circuits.atp.atp_star`).

    Returns:
        `[layer, head_index]` tensor of estimated metric changes.
    """
    if method not in ATTRIBUTION_METHODS:
        raise ValueError(f"attribution method must be one of {', '.join(ATTRIBUTION_METHODS)}, got {method!r}")
    if method == "atp-star":
        from circuits.atp import atp_star

        return atp_star(model, clean_tokens, corrupted_tokens, metric, grad_drop=False).estimate
    require_eval(model)
    n_layers, _ = n_layers_heads(model)
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(
            clean_tokens, names_filter=lambda name: name.endswith("attn.hook_z")
        )

    corrupted_z: dict[int, Tensor] = {}

    def capture(layer: int) -> Callable:
        def hook(z: Tensor, hook: object) -> Tensor:
            if not z.requires_grad:
                # Nothing upstream needs a gradient (frozen weights): z itself becomes the leaf.
                z = z.detach().requires_grad_(True)
            corrupted_z[layer] = z
            return z

        return hook

    fwd_hooks = [(z_name(layer), capture(layer)) for layer in range(n_layers)]
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd_hooks):
        value = check_metric_value(metric(model(corrupted_tokens)))
        layers = list(range(n_layers))
        grads = torch.autograd.grad(value, [corrupted_z[l] for l in layers], allow_unused=True)

    rows = []
    for layer, grad in zip(layers, grads):
        z = corrupted_z[layer].detach()
        if grad is None:  # this layer cannot reach the metric
            rows.append(torch.zeros(z.shape[2], device=z.device))
            continue
        rows.append(torch.einsum("bphd,bphd->h", clean_cache[z_name(layer)] - z, grad))
    return torch.stack(rows).float()
