"""Direct logit attribution: what each head writes straight into the answer's logit."""

import warnings

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits.hooks import (
    FINAL_SCALE,
    allclose,
    head_outputs,
    n_layers_heads,
    require_eval,
    z_name,
)


def through_final_norm(
    model: TransformerBridge,
    parts: Float[Tensor, "*part batch pos d_model"],
    scale: Float[Tensor, "batch pos 1"] | None,
) -> Float[Tensor, "*part batch pos d_model"]:
    """The final norm applied to residual-stream parts with its statistics frozen, bias removed.

    With the scale of the real run frozen (`ln_final.hook_scale`, Elhage et al. 2021; TL's
    `apply_ln_to_stack`), the final LayerNorm is linear: `part -> (part - mean(part)) / scale * w`
    (no centring for RMSNorm). The bridge's own norm computes it, with a hook that replaces the
    scale by the cached one, so the norm's kind and weight convention need no special cases;
    `ln_final(0)` (its bias) is subtracted. Models whose final norm has no `hook_scale` must have
    an affine one (e.g. none at all); that is checked.
    """
    if scale is None:
        bias = model.ln_final(torch.zeros_like(parts))
        normed = model.ln_final(parts) - bias
        # Without a frozen scale this is right only for an affine norm: check additivity.
        flat = parts.reshape(-1, *parts.shape[-3:])
        whole = model.ln_final(flat.sum(dim=0)) - bias.reshape(flat.shape)[0]
        if not allclose(normed.reshape(flat.shape).sum(dim=0), whole):
            raise ValueError(
                "the final norm has no hook_scale to freeze and is not affine; "
                "direct logit attribution cannot linearise it"
            )
        return normed

    def freeze(actual: Tensor, hook: object) -> Tensor:
        return scale.expand_as(actual)

    with warnings.catch_warnings(), model.hooks(fwd_hooks=[(FINAL_SCALE, freeze)]):
        # HF-autograd norms warn that an edited scale takes the python path: that is the point.
        warnings.simplefilter("ignore", UserWarning)
        return model.ln_final(parts) - model.ln_final(torch.zeros_like(parts))


def direct_logit_attribution(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    answer_tokens: Int[Tensor, " batch"] | Int[Tensor, "batch answer_pos"] | None = None,
    *,
    logit_direction: Float[Tensor, " d_model"] | Float[Tensor, "batch d_model"] | None = None,
    pos: int | None = -1,
) -> Float[Tensor, "layer head_index"]:
    """Each head's direct contribution to the answer's logit, averaged over prompts.

    Entry `(l, h)` is the mean over prompts (and over positions when `pos=None`) of

        LN_frozen(z[b, p, h] @ W_O[l, h]) . u[b, p]

    where `z` is `blocks.{l}.attn.hook_z` of the run on `tokens`, `LN_frozen` the final norm with
    the run's own scale frozen at `(b, p)` (centred for LayerNorm, see `through_final_norm`),
    and `u` the direction read: `W_U[:, answer]` for an answer token, or `logit_direction` (a
    direction in the space `W_U` reads, e.g. `W_U[:, a] - W_U[:, b]` for a logit difference).
    This is the direct path only (Elhage et al. 2021; nostalgebraist 2020): summed with the
    other components' terms (embeddings, `b_O`, MLPs, the norm's bias, `b_U`) it gives the
    logit exactly, but it ignores everything a head does through later layers. Logit
    soft-capping, where a model has it, is not included.

    Args:
        model: A TransformerBridge in eval mode.
        tokens: The prompts, `[batch, pos]`.
        answer_tokens: The answer of each prompt, `[batch]` (read at `pos`), or of each position,
            `[batch, answer_pos]` with `answer_tokens[:, i]` the answer at position `i`
            (`tokens[:, 1:]` for next-token prediction).
        logit_direction: Instead of answers, a direction `[d_model]` or one per prompt.
        pos: The position read (default the last), or `None` for the mean over all positions
            that have an answer.

    Returns:
        `[layer, head_index]` tensor of direct logit contributions.
    """
    require_eval(model)
    if (answer_tokens is None) == (logit_direction is None):
        raise ValueError("give exactly one of answer_tokens and logit_direction")
    n_layers, _ = n_layers_heads(model)
    n_batch, n_pos = tokens.shape
    n_answered = n_pos
    if answer_tokens is not None and answer_tokens.ndim == 2:
        n_answered = answer_tokens.shape[1]
        if n_answered > n_pos:
            raise ValueError(f"answer_tokens has {n_answered} positions, the prompts {n_pos}")
    if pos is None:
        if answer_tokens is not None and answer_tokens.ndim == 1:
            raise ValueError("pos=None averages over positions: give answer_tokens per position")
        positions = list(range(n_answered))
    else:
        if not -n_pos <= pos < n_pos:
            raise ValueError(f"pos {pos} out of range for {n_pos} positions")
        positions = [pos % n_pos]
        if positions[0] >= n_answered:
            raise ValueError(f"position {positions[0]} has no answer in answer_tokens")

    has_scale = FINAL_SCALE in model.hook_dict
    wanted = {z_name(layer) for layer in range(n_layers)} | ({FINAL_SCALE} if has_scale else set())
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in wanted)
        # [layer, head_index, batch, pos, d_model] at the positions read.
        parts = torch.stack(
            [head_outputs(cache[z_name(l)][:, positions], model.W_O[l]) for l in range(n_layers)]
        ).permute(0, 3, 1, 2, 4)
        scale = cache[FINAL_SCALE][:, positions] if has_scale else None
        normed = through_final_norm(model, parts, scale)

        if answer_tokens is not None:
            answers = answer_tokens[:, None] if answer_tokens.ndim == 1 else answer_tokens[:, positions]
            directions = model.W_U.T[answers]  # [batch, positions, d_model]
        else:
            direction = logit_direction if logit_direction.ndim == 2 else logit_direction[None]
            directions = direction[:, None].expand(n_batch, len(positions), -1)
        contribution = torch.einsum("lhbpd,bpd->lh", normed, directions.to(normed.dtype))
    return (contribution / (n_batch * len(positions))).float()
