"""AtP* (Kramár et al. 2024): attribution patching with the QK fix and GradDrop, per attention head.

Attribution patching (`circuits.attribute_heads`) estimates the effect of patching head `n`'s
`hook_z` from the clean run into the corrupted run by `(z_n^clean - z_n^corrupted) . dM/dz_n`. Two
failures motivate AtP*:

- Attention saturation. Much of an early head's effect reaches the metric through later heads'
  attention patterns (the previous-token head through the induction head's keys). Where a later
  softmax is saturated its gradient is ~0, so the linear estimate misses the head entirely, while
  patching moves the pattern from one key to another. The QK fix computes that step exactly: for
  every later head `m`, the pattern `A_m'` that `m` has when its queries and keys are computed from
  the corrupted residual plus `n`'s change `delta_n = (z_n^clean - z_n^corrupted) W_O[n]` (through the
  block's own LayerNorm and RoPE), and contributes `sum (A_m' - A_m) . dM/dA_m`. The rest stays
  linear: the gradient `dM/dz_n` is taken with every attention pattern held fixed (`hook_pattern`
  replaced by a detached leaf), so the query/key route is not counted twice.

      AtP*(n) = (z_n^clean - z_n^corrupted) . dM/dz_n |_(patterns fixed)
                + sum_{m in later layers} sum_{batch, query, key} (A_m'(n) - A_m) . dM/dA_m

  It is exact when the only nonlinearity between `n` and the metric is the softmax of heads whose
  values `n` does not feed (an attention-only model without LayerNorm and a metric linear in the
  logits, e.g. a previous-token head read through keys): `tests/test_circuits_atp.py`. Only the direct
  route from `n` into `m`'s queries and keys is recomputed; routes through intermediate MLPs into
  them are not counted (their gradient is cut with the pattern).
- Cancellation. A head whose direct and indirect effects cancel has a total estimate of ~0. GradDrop
  repeats the estimate `n_layers` times, each time with the gradient through one layer's residual
  contribution (its `hook_attn_out` and `hook_mlp_out`) zeroed, and reports

      GradDrop(n) = 1 / (n_layers - 1) * sum_l |AtP*_l(n)|

  (the paper's normalisation: dropping a head's own layer always gives 0). A head with a large
  GradDrop and a small `AtP*` is one whose effects cancel on these inputs; GradDrop is a magnitude
  for finding such heads, not a signed estimate.

Cost: one forward with gradients and `n_layers + 1` backwards, plus, per pair of layers `l < L`, one
call of block `L` on `n_heads` stacked residuals (`circuits.paths.patched_layer`). Models whose
attention discards `hook_pattern` edits (GPT-Neo through its Hugging Face module) are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits.engine import check_pattern_edits, default_runs_per_forward
from circuits.hooks import (
    Metric,
    attn_out_name,
    capture_z,
    check_metric_value,
    head_outputs,
    mlp_out_name,
    n_layers_heads,
    pattern_name,
    require_eval,
    resid_pre_name,
    z_name,
)
from circuits.paths import INPUTS, block_check, input_name, patched_layer
from circuits.resume import record_block_inputs


@dataclass
class AtPStar:
    """Per-head AtP* estimates (module docstring).

    Attributes:
        estimate: `[layer, head_index]` the QK-fixed estimate of `patch_heads - metric(corrupted)`.
        grad_drop: `[layer, head_index]` GradDrop's magnitude, `1/(L-1) sum_l |estimate with layer l's
            gradient dropped|`.
        linear: `[layer, head_index]` the part through fixed patterns (values, MLPs, direct path).
    """

    estimate: Float[Tensor, "layer head_index"]
    grad_drop: Float[Tensor, "layer head_index"]
    linear: Float[Tensor, "layer head_index"]


def atp_star(
    model: TransformerBridge,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    *,
    grad_drop: bool = True,
    runs_per_forward: int | None = None,
) -> AtPStar:
    """AtP* of every head's output, clean into corrupted (module docstring).

    Args:
        model: A TransformerBridge in eval mode whose `hook_pattern` edits reach the attention output.
        clean_tokens: Tokens of the clean run.
        corrupted_tokens: Tokens of the corrupted run, same shape.
        metric: Logits `[batch, pos, d_vocab]` to a 0-d tensor, differentiable.
        grad_drop: Also compute GradDrop (`n_layers` more backwards; without it `grad_drop` is NaN).
            The gradients of every attention pattern are held for each of the `n_layers + 1`
            settings at once: `(n_layers + 1) * n_layers * batch * n_heads * pos^2` floats.
        runs_per_forward: Senders stacked into one call of a later block (default
            `circuits.engine.default_runs_per_forward`).

    Returns:
        `AtPStar` with the estimate, GradDrop's magnitude and the linear part, each `[layer, head_index]`.
    """
    require_eval(model)
    if clean_tokens.shape != corrupted_tokens.shape:
        raise ValueError(f"clean and corrupted tokens must have the same shape, got {tuple(clean_tokens.shape)} "
                         f"and {tuple(corrupted_tokens.shape)}")
    try:
        check_pattern_edits(model, corrupted_tokens)
    except RuntimeError as exc:
        raise ValueError(f"AtP* holds attention patterns fixed through hook_pattern, which this model ignores: {exc}") \
            from None
    n_layers, n_heads = n_layers_heads(model)
    batch, n_pos = corrupted_tokens.shape
    chunk = runs_per_forward or default_runs_per_forward(model, batch, n_pos)
    layers = list(range(n_layers))

    wanted = {z_name(l) for l in layers} | {resid_pre_name(l) for l in layers} | {pattern_name(l) for l in layers}
    wanted |= {input_name(l, x) for l in layers for x in INPUTS}
    with torch.no_grad():
        _, clean = model.run_with_cache(clean_tokens, names_filter=lambda n: n.endswith("attn.hook_z"))
        with record_block_inputs(model) as inputs:
            _, cache = model.run_with_cache(corrupted_tokens, names_filter=lambda n: n in wanted)
    direct = block_check(model, cache, inputs, layers[1:], min(chunk, 2)) if n_layers > 1 else True

    grads = _gradients(model, corrupted_tokens, metric, n_layers, grad_drop)  # [setting] -> (dM/dz, dM/dA) per layer
    dz = {l: (clean[z_name(l)] - cache[z_name(l)]).float() for l in layers}
    estimates = torch.zeros(len(grads), n_layers, n_heads, device="cpu")  # results: on the CPU
    linear = torch.zeros(n_layers, n_heads, device="cpu")
    for s, (g_z, _) in enumerate(grads):
        for l in layers:
            if g_z[l] is not None:
                estimates[s, l] = torch.einsum("bphd,bphd->h", dz[l], g_z[l].float()).cpu()
        if s == 0:
            linear = estimates[0].clone()

    # The QK fix: each later layer's patterns recomputed with queries and keys from the patched residual.
    for l in layers:
        deltas = head_outputs(dz[l].to(cache[z_name(l)].dtype), model.W_O[l])  # [b, p, h, d_model]
        for L in layers[l + 1:]:
            base = cache[pattern_name(L)].float()
            for start in range(0, n_heads, chunk):
                senders = list(range(start, min(start + chunk, n_heads)))
                stacked = deltas[:, :, senders].permute(2, 0, 1, 3)
                new = patched_layer(model, corrupted_tokens, cache, inputs if direct else None, L, ("q", "k"),
                                    stacked, "attn.hook_pattern").float()
                moved = new.reshape(len(senders), *base.shape) - base  # [sender, b, head, q, k]
                for s, (_, g_a) in enumerate(grads):
                    if g_a[L] is not None:
                        estimates[s, l, senders] += torch.einsum("nbhqk,bhqk->n", moved, g_a[L].float()).cpu()
    dropped = estimates[1:].abs().sum(0) / max(n_layers - 1, 1) if grad_drop else torch.full_like(linear, float("nan"))
    return AtPStar(estimate=estimates[0], grad_drop=dropped, linear=linear)


def _gradients(
    model: TransformerBridge, tokens: Tensor, metric: Metric, n_layers: int, grad_drop: bool = True
) -> list[tuple[list[Tensor | None], list[Tensor | None]]]:
    """dM/dz and dM/dA of every layer on `tokens` with every pattern a fixed leaf: first with the full
    gradient, then (`grad_drop`) once per layer with the gradient through that layer's residual
    contribution zeroed."""
    z: dict[int, Tensor] = {}
    patterns: dict[int, Tensor] = {}
    dropped: list[int | None] = [None]

    def leaf_pattern(layer: int) -> Callable:
        def hook(pattern: Tensor, hook: object) -> Tensor:
            patterns[layer] = pattern.detach().requires_grad_(True)
            return patterns[layer]

        return hook

    def drop(layer: int) -> Callable:
        def hook(value: Tensor, hook: object) -> None:
            if value.requires_grad:
                value.register_hook(lambda grad: torch.zeros_like(grad) if dropped[0] == layer else grad)

        return hook

    fwd_hooks = [(pattern_name(l), leaf_pattern(l)) for l in range(n_layers)]
    fwd_hooks += [(z_name(l), capture_z(z, l)) for l in range(n_layers)]
    fwd_hooks += [(name(l), drop(l)) for l in range(n_layers) for name in (attn_out_name, mlp_out_name)
                  if name(l) in model.hook_dict]
    out = []
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd_hooks):
        value = check_metric_value(metric(model(tokens)))
        wrt = [z[l] for l in range(n_layers)] + [patterns[l] for l in range(n_layers)]
        for setting in [None, *(range(n_layers) if grad_drop else ())]:
            dropped[0] = setting
            grads = torch.autograd.grad(value, wrt, retain_graph=True, allow_unused=True)
            out.append((list(grads[:n_layers]), list(grads[n_layers:])))
    return out
