"""Metrics for causal effects, as functions of logits, and the runs they are measured on.

Metrics are functions of logits ``[batch, pos, d_vocab]`` returning a 0-d tensor (`circuits.Metric`),
computed against the *clean* tokens' labels, so they can score ablated, patched and corrupted runs
alike. Each also has a per-prompt form (``[batch]``, whose mean is the metric) for confidence
intervals over prompts:
- ``icl``: the ICL score (Olsson et al. 2022): loss at the late token minus at the early token
  (`induction.measures.icl.icl_positions`). Lower is more in-context learning. `icl_forward` gives the same
  score from the cheaper forward `induction.measures.icl.icl_score` runs (`induction track --ablate`).
- ``repeat-loss``: each sequence's mean loss over its tokens that occurred earlier in it (the part
  that only induction can predict), averaged over sequences (each sequence weighs the same).
- ``fewshot`` (`induction.measures.fewshot.evaluate.fewshot_metric_setup`): log-probability of the in-context
  answer at the query.
The corrupted run for patching keeps BOS and every position but draws fresh random tokens, so it has
no repeats: activations from the clean run patched into it show which heads suffice to restore ICL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits import Metric
from induction.common.checks import check_choice, check_min
from induction.inputs.prompts import duplicate_mask
from induction.loading.models import model_info
from induction.measures.icl import icl_positions, per_sequence_icl, stream_tokens
from induction.measures.losses import token_losses

STREAM_METRICS = ("icl", "repeat-loss")
METRICS = (*STREAM_METRICS, "fewshot")

PerPrompt = Callable[[Tensor], Tensor]
"""logits `[batch, pos, d_vocab]` -> one value per prompt `[batch]` (or `[batch, quantity]`)."""


def icl_per_prompt(tokens: Int[Tensor, "batch pos"]) -> PerPrompt:
    """logits -> each sequence's ICL score against `tokens`' labels."""
    return lambda logits: per_sequence_icl(token_losses(logits, tokens))


def icl_metric(tokens: Int[Tensor, "batch pos"]) -> Metric:
    """logits -> ICL score against `tokens`' labels (late-token loss minus early-token loss, averaged)."""
    per_prompt = icl_per_prompt(tokens)
    return lambda logits: per_prompt(logits).mean()


def icl_forward(tokens: Int[Tensor, "batch pos"]) -> tuple[Int[Tensor, "batch late"], PerPrompt]:
    """(inputs, per_prompt): the ICL score of `tokens` from a forward over the tokens before the late one.

    The same numbers as `icl_per_prompt(tokens)` on the full forward, at the cost of
    `induction.measures.icl.icl_score`'s forward (`induction.measures.losses.losses_at`): a causal model's losses at
    the early and late tokens read only the tokens before the late one. `per_prompt` takes the logits
    of a run on `inputs` (ablated or not) and returns each sequence's late minus early loss.
    """
    early, late = icl_positions(tokens.shape[1])
    targets = tokens[:, [early, late]]

    def per_prompt(logits: Tensor) -> Tensor:
        at = logits[:, [early - 1, late - 1]].float()  # the logits at t - 1 predict token t
        losses = torch.nn.functional.cross_entropy(at.flatten(0, 1), targets.to(logits.device).flatten(),
                                                   reduction="none").view(-1, 2)
        return losses[:, 1] - losses[:, 0]

    return tokens[:, :late], per_prompt


def repeat_loss_per_prompt(tokens: Int[Tensor, "batch pos"], first_content_pos: int = 0) -> PerPrompt:
    """logits -> each sequence's mean loss over its tokens that occurred earlier in it."""
    repeated = duplicate_mask(tokens, first_content_pos).any(-1)  # [batch, pos]; False at pos 0

    def per_prompt(logits: Tensor) -> Tensor:
        mask = repeated.to(logits.device)
        losses = torch.where(mask, token_losses(logits, tokens), 0.0)
        return losses.sum(-1) / mask.sum(-1).clamp_min(1)

    return per_prompt


def repeat_loss_metric(tokens: Int[Tensor, "batch pos"], first_content_pos: int = 0) -> Metric:
    """logits -> mean over sequences of `repeat_loss_per_prompt`."""
    per_prompt = repeat_loss_per_prompt(tokens, first_content_pos)
    return lambda logits: per_prompt(logits).mean()


def corrupt(tokens: Int[Tensor, "batch pos"], d_vocab: int, bos: bool, generator: torch.Generator) -> Int[Tensor, "batch pos"]:
    """Fresh uniform random tokens at every content position (BOS kept): no systematic repeats."""
    out = torch.randint(int(bos), d_vocab, tokens.shape, generator=generator, device="cpu")
    if bos:
        out[:, 0] = tokens[:, 0]
    return out.to(tokens.device)


@dataclass
class MetricSetup:
    """Tokens, a corrupted counterpart, and the metric (with its per-prompt form), for one effect measurement."""

    name: str
    tokens: Tensor
    corrupted: Tensor
    metric: Metric
    per_prompt: PerPrompt
    description: str


def stream_metric_setup(model: TransformerBridge, name: str, n_sequences: int = 32, seed: int = 0,
                        seq_len: int | None = None) -> MetricSetup:
    """The model's token stream (`induction.measures.icl`) with the `icl` or `repeat-loss` metric."""
    check_choice("metric", name, STREAM_METRICS)
    check_min("sequences", n_sequences, 1)
    tokens, data = stream_tokens(model, n_sequences, seed, seq_len)
    bos = model_info(model).bos_token_id is not None
    corrupted = corrupt(tokens, model.cfg.d_vocab, bos, torch.Generator(device="cpu").manual_seed(seed + 1))
    if name == "icl":
        return MetricSetup(name, tokens, corrupted, icl_metric(tokens), icl_per_prompt(tokens), data)
    return MetricSetup(name, tokens, corrupted, repeat_loss_metric(tokens, int(bos)),
                       repeat_loss_per_prompt(tokens, int(bos)), data)
