"""The held-out loss of a checkpoint: a batch drawn from the model's own training stream, never trained on."""

from __future__ import annotations

from typing import Any

from transformer_lens.model_bridge import TransformerBridge

from induction.inputs.streams import data_config_from_dict
from induction.loading.models import model_info
from induction.measures.icl import default_stream_config

HELD_OUT_SEED_OFFSET = 1_000_003  # held-out seed = training seed + this: never the training stream
HELD_OUT_TOKENS = 8192  # the held-out batch's size by default: this many tokens, in whole sequences


def held_out_stream(model: TransformerBridge):
    """The stream the held-out batch is drawn from: the model's recorded training stream
    (`induction.inputs.streams`), else the synthetic stream over its vocabulary."""
    data = model_info(model).data
    return data_config_from_dict(data) if data else default_stream_config(model)


def held_out_count(n_sequences: int | None, stream: Any) -> int:
    """Sequences in the held-out batch: `n_sequences`, else `HELD_OUT_TOKENS` worth of the stream's sequences."""
    return n_sequences or max(1, HELD_OUT_TOKENS // int(stream.seq_len))
