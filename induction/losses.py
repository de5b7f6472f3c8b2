"""Next-token losses in one layout: `losses[b, t]` is the loss of token t given tokens < t.

Column 0 has no context and is NaN, so every position index means the same thing everywhere (the
ICL score's "loss at token 500" is `losses[:, 500]`), and a computation that reads column 0 by
mistake yields NaN instead of a plausible number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge


def token_losses(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos"]:
    """Cross-entropy of each token given the ones before it (float32); column 0 is NaN."""
    tokens = tokens.to(logits.device)
    body = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    nan = torch.full((tokens.shape[0], 1), float("nan"), device=logits.device)
    return torch.cat([nan, body.view(tokens.shape[0], -1)], dim=1)


@torch.no_grad()
def per_token_loss(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"], batch_size: int = 16, progress: bool = False
) -> Float[Tensor, "batch pos"]:
    """`token_losses` of `model` on `tokens`, `batch_size` sequences per forward, on the CPU."""
    out = []
    for start in tqdm(range(0, tokens.shape[0], batch_size), desc="loss", disable=not progress, leave=False):
        chunk = tokens[start : start + batch_size]
        out.append(token_losses(model(chunk), chunk).cpu())
    return torch.cat(out)
