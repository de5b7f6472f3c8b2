"""Attribution patching: the first-order estimate of activation patching for every head at once."""

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits.hooks import Metric, capture_z, check_metric_value, n_layers_heads, require_eval, resid_pre_name, z_name


class _Stop(Exception):
    """Raised in a hook to end a forward once a segment's output is recorded."""

ATTRIBUTION_METHODS = ("attribution", "atp-star")


def attribute_heads(
    model: TransformerBridge,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    method: str = "attribution",
    layers_per_backward: int | None = None,
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
        layers_per_backward: None (default): one backward through the whole graph. A number k: the
            gradients are taken k layers at a time, from the last segment to the first, each backward
            holding only its segment's graph (the residual entering the segment is a leaf; the
            gradient arriving at the segment's end is the one the later segment computed). The
            numbers are the same (chain rule); the memory is one segment's graph instead of all
            layers' (`circuits.memory.backward_bytes`), at the cost of one forward per segment.

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
    if layers_per_backward is not None and layers_per_backward < 1:
        raise ValueError(f"layers_per_backward must be >= 1, got {layers_per_backward}")
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(
            clean_tokens, names_filter=lambda name: name.endswith("attn.hook_z")
        )

    if layers_per_backward is None or layers_per_backward >= n_layers:
        z, grads = _whole_graph_gradients(model, corrupted_tokens, metric, n_layers)
    else:
        z, grads = _segment_gradients(model, corrupted_tokens, metric, n_layers, layers_per_backward)
    rows = []
    for layer in range(n_layers):
        grad = grads.get(layer)
        if grad is None:  # this layer cannot reach the metric
            rows.append(torch.zeros(z[layer].shape[2], device=z[layer].device))
            continue
        rows.append(torch.einsum("bphd,bphd->h", clean_cache[z_name(layer)] - z[layer], grad))
    return torch.stack(rows).float()


def _whole_graph_gradients(model: TransformerBridge, tokens: Tensor, metric: Metric,
                           n_layers: int) -> tuple[dict[int, Tensor], dict[int, Tensor | None]]:
    """(z, d metric / d z) of every layer on the corrupted run, from one backward."""
    corrupted_z: dict[int, Tensor] = {}
    fwd_hooks = [(z_name(layer), capture_z(corrupted_z, layer)) for layer in range(n_layers)]
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd_hooks):
        value = check_metric_value(metric(model(tokens)))
        layers = list(range(n_layers))
        grads = torch.autograd.grad(value, [corrupted_z[l] for l in layers], allow_unused=True)
    return {l: z.detach() for l, z in corrupted_z.items()}, dict(zip(layers, grads))


def _segment_gradients(model: TransformerBridge, tokens: Tensor, metric: Metric, n_layers: int,
                       k: int) -> tuple[dict[int, Tensor], dict[int, Tensor | None]]:
    """`_whole_graph_gradients`, `k` layers per backward (`attribute_heads`' `layers_per_backward`).

    Parameters are frozen for the duration, so only what depends on the segment's input leaf (the
    residual entering it) is recorded; the forward is stopped where the segment ends.
    """
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    z_out: dict[int, Tensor] = {}
    grads: dict[int, Tensor | None] = {}
    downstream: Tensor | None = None  # d metric / d resid_pre of the later segment's first layer
    try:
        for start in reversed(range(0, n_layers, k)):
            end = min(start + k, n_layers)
            seg_z: dict[int, Tensor] = {}
            leaf: dict[str, Tensor] = {}

            def enter(resid: Tensor, hook: object) -> Tensor:
                leaf["in"] = resid.detach().requires_grad_(True)
                return leaf["in"]

            def leave(resid: Tensor, hook: object) -> Tensor:
                leaf["out"] = resid
                raise _Stop

            def keep_z(layer: int) -> Callable:
                def hook(z: Tensor, hook: object) -> Tensor:
                    seg_z[layer] = z
                    return z

                return hook

            fwd_hooks = [(resid_pre_name(start), enter)] + [(z_name(l), keep_z(l)) for l in range(start, end)]
            if end < n_layers:
                fwd_hooks.append((resid_pre_name(end), leave))
            with torch.enable_grad(), model.hooks(fwd_hooks=fwd_hooks):
                try:
                    value = check_metric_value(metric(model(tokens)))
                except _Stop:
                    value = None
            inputs = [seg_z[l] for l in range(start, end)] + [leaf["in"]]
            if value is not None:
                got = torch.autograd.grad(value, inputs, allow_unused=True)
            else:
                got = torch.autograd.grad(leaf["out"], inputs, grad_outputs=downstream, allow_unused=True)
            for layer, grad in zip(range(start, end), got[:-1]):
                grads[layer] = grad
                z_out[layer] = seg_z[layer].detach()
            downstream = got[-1] if got[-1] is not None else torch.zeros_like(leaf["in"])
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return z_out, grads
