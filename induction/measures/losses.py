"""Next-token losses in one layout: `losses[b, t]` is the loss of token t given tokens < t.

Column 0 has no context and is NaN, so every position index means the same thing everywhere (the
ICL score's "loss at token 500" is `losses[:, 500]`), and a computation that reads column 0 by
mistake yields NaN instead of a plausible number. `losses_at` gives chosen columns of the same
layout without forming the others.

Forward passes take as many sequences at once as fit a memory budget (`sequences_per_forward`):
a batch's attention patterns and logits, the tensors that grow with the context and the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits.hooks import UNEMBED_IN
from circuits.progress import progress_bar
from induction.loading.devices import model_device, model_dtype
from induction.loading.memory import sequences_per_budget, shape_of_model

FORWARD_BUDGET_BYTES = 2**28
"""What one forward's activations may take (256 MiB; `sequences_per_forward`)."""


def sequences_per_forward(
    model: TransformerBridge, seq_len: int, logit_positions: int, budget_bytes: int | None = None
) -> int:
    """Sequences per forward so that the activations of a forward over `seq_len` tokens with logits at
    `logit_positions` positions stay within `budget_bytes` (the memory rule,
    `induction.loading.memory`; at least 1; None: `FORWARD_BUDGET_BYTES`)."""
    budget_bytes = FORWARD_BUDGET_BYTES if budget_bytes is None else budget_bytes
    return sequences_per_budget(shape_of_model(model), seq_len, logit_positions, budget_bytes, model_dtype(model))


def token_losses(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos"]:
    """Cross-entropy of each token given the ones before it (float32); column 0 is NaN."""
    tokens = tokens.to(logits.device)
    body = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    nan = torch.full((tokens.shape[0], 1), float("nan"), device=logits.device)
    return torch.cat([nan, body.view(tokens.shape[0], -1)], dim=1)


@torch.no_grad()
def per_token_loss(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"], batch_size: int | None = None, progress: bool = False
) -> Float[Tensor, "batch pos"]:
    """`token_losses` of `model` on `tokens`, returned on the CPU.

    `batch_size` sequences per forward; None: as many as `sequences_per_forward` allows.
    """
    device = model_device(model)
    batch_size = batch_size or sequences_per_forward(model, tokens.shape[1], tokens.shape[1])
    out = []
    for start in progress_bar(range(0, tokens.shape[0], batch_size), desc="loss", enabled=progress, stage=True,
                              leave=False):
        chunk = tokens[start : start + batch_size].to(device)
        out.append(token_losses(model(chunk), chunk).cpu())
    return torch.cat(out)


@torch.no_grad()
def losses_at(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    positions: Sequence[int],
    batch_size: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "batch n_positions"]:
    """`per_token_loss(model, tokens)[:, positions]`, returned on the CPU, at a fraction of its cost.

    A causal model's loss at token t reads only tokens < t, so the forward runs over the tokens
    before the last position asked for, and the unembedding sees only the positions t - 1 whose
    logits predict the tokens asked for (a slice at `unembed.hook_in`). `batch_size` as in
    `per_token_loss`.
    """
    positions = [int(t) for t in positions]
    if not positions or min(positions) < 1 or max(positions) >= tokens.shape[1]:
        raise ValueError(f"positions must be in [1, {tokens.shape[1] - 1}] (position 0 has no loss), got {positions}")
    device = model_device(model)
    end = max(positions)
    batch_size = batch_size or sequences_per_forward(model, end, len(positions))
    before = torch.tensor(positions, device=device) - 1  # the logits at t - 1 predict token t

    def unembed_only_needed(resid: Tensor, hook: object) -> Tensor:
        return resid[:, before]

    out = []
    for start in progress_bar(range(0, tokens.shape[0], batch_size), desc="loss", enabled=progress, stage=True,
                              leave=False):
        chunk = tokens[start : start + batch_size].to(device)
        with model.hooks(fwd_hooks=[(UNEMBED_IN, unembed_only_needed)]):
            logits = model(chunk[:, :end])  # [batch, n_positions, d_vocab]
        targets = chunk[:, positions]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        out.append(loss.view(chunk.shape[0], len(positions)).cpu())
    return torch.cat(out)
