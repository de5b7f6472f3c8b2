"""The activation-memory formula: what one forward (or one backward) of a transformer adds to memory.

One rule, in plain numbers, so that the batched intervention engine (`circuits.engine`) sizes its
stacked forwards with it and `induction.loading.memory` plans whole jobs with the same arithmetic
from a ``config.json`` before any weights are loaded.

A no-grad forward frees each block's intermediates when the block ends, so its peak is one block's
transients plus the logits:

- attention: ``ATTENTION_COPIES`` tensors of `[batch, head_index, query_pos, key_pos]` alive at once
  (scores, pattern, softmax temporary), in the model's element size;
- residual width: ``RESIDUAL_COPIES`` tensors of `[batch, pos, d_model]` (stream, norms, q, k, v, z,
  outputs);
- MLP: ``MLP_COPIES`` tensors of `[batch, pos, d_mlp]` (pre- and post-activation; gate and up
  for gated MLPs);
- logits: `[batch, logit_positions, d_vocab]` in the element size, plus a float32 copy and its
  log-softmax (``LOGIT_FLOAT_COPIES``), which losses and metrics take;
- the key/value cache a Hugging Face model returns (every layer's keys and values, `kv_width` =
  key/value heads x d_head per position), which stays alive for the whole forward.

A forward that keeps its graph for a backward (attribution patching, training) keeps every block's
saved tensors (``SAVED_*`` per layer in the graph), and the backward adds one block's gradients.
"""

from __future__ import annotations

ATTENTION_COPIES = 3
RESIDUAL_COPIES = 8
MLP_COPIES = 2
LOGIT_FLOAT_COPIES = 2
SAVED_ATTENTION = 2  # per layer kept for the backward: scores' softmax output and its dropout/mask input
SAVED_RESIDUAL = 10  # norms' inputs and statistics, q, k, v, z, attention output, MLP input and output
SAVED_MLP = 3  # pre-activation, activation (and gate) of the MLP hidden layer


def forward_bytes(
    *, d_model: int, d_mlp: int, n_heads: int, d_vocab: int, batch: int, n_pos: int, element_size: int,
    logit_positions: int | None = None, n_layers: int = 0, kv_width: int = 0,
) -> int:
    """Peak bytes one no-grad forward of `batch` x `n_pos` tokens adds (module docstring).

    Args:
        d_model, d_mlp, n_heads, d_vocab: the model's widths (d_mlp 0 for attention-only models).
        batch, n_pos: the forward's sequences and their length.
        element_size: bytes per element of the model's dtype.
        logit_positions: positions per sequence whose logits are formed (None: all `n_pos`).
        n_layers, kv_width: layers and key/value width of the key/value cache (0: none counted).
    """
    logit_positions = n_pos if logit_positions is None else logit_positions
    block = ATTENTION_COPIES * n_heads * n_pos * n_pos + n_pos * (RESIDUAL_COPIES * d_model + MLP_COPIES * d_mlp)
    logits = logit_positions * d_vocab * (element_size + 4 * LOGIT_FLOAT_COPIES)
    kv_cache = 2 * n_layers * n_pos * kv_width
    return batch * ((block + kv_cache) * element_size + logits)


def backward_bytes(
    *, d_model: int, d_mlp: int, n_heads: int, d_vocab: int, batch: int, n_pos: int, element_size: int,
    graph_layers: int, logit_positions: int | None = None, n_layers: int = 0, kv_width: int = 0,
) -> int:
    """Peak bytes of a forward that keeps its graph over `graph_layers` blocks, then its backward:
    every graph block's saved tensors, one block's gradients (a no-grad block's transients) and the
    logits with their gradient."""
    logit_positions = n_pos if logit_positions is None else logit_positions
    saved = SAVED_ATTENTION * n_heads * n_pos * n_pos + n_pos * (SAVED_RESIDUAL * d_model + SAVED_MLP * d_mlp)
    grads = forward_bytes(d_model=d_model, d_mlp=d_mlp, n_heads=n_heads, d_vocab=d_vocab, batch=batch, n_pos=n_pos,
                          element_size=element_size, logit_positions=logit_positions, n_layers=n_layers,
                          kv_width=kv_width)
    logit_grad = batch * logit_positions * d_vocab * 4
    return batch * graph_layers * saved * element_size + grads + logit_grad
