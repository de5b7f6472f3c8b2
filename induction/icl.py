"""The in-context learning score (Olsson et al. 2022).

ICL score = mean loss at a late token - mean loss at an early token of the same sequences. Olsson et al.
use the 500th and the 50th token of 512-token contexts; for a context of n tokens we use the tokens
at 0-based indices round(n * 500/512) and round(n * 50/512) (clipped to [1, n-1]), where "the loss at
token t" is the cross-entropy of predicting token t from the tokens before it. Negative means the
model predicts better later in the context: it learns in context.

The token stream is the model's own synthetic training distribution for the toolkit's toy models
(`induction.data`), a user-given text file for models with a tokenizer, or, failing both, the same
synthetic stream over the model's vocabulary (random segments tiled to the context, which only
in-context copying can predict).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from induction.data import ToyDataConfig, sample_batch
from induction.models import model_info
from induction.stats import bootstrap_mean_ci


class ICLDataError(ValueError):
    """A token stream that cannot give an ICL score (no tokenizer, too short, too long, ...)."""


@dataclass
class ICLScore:
    """Result of `icl_score`: the score, the two losses, where they were taken, and a bootstrap CI."""

    score: float
    early_loss: float
    late_loss: float
    early_pos: int
    late_pos: int
    ci: tuple[float, float] | None
    n_sequences: int
    seq_len: int
    data: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def icl_positions(seq_len: int) -> tuple[int, int]:
    """(early, late) token indices for a context of seq_len tokens: 50/512 and 500/512 of it."""
    if seq_len < 3:
        raise ICLDataError(f"sequences of {seq_len} tokens are too short for an ICL score")
    early = min(max(1, round(seq_len * 50 / 512)), seq_len - 1)
    late = min(max(early + 1, round(seq_len * 500 / 512)), seq_len - 1)
    return early, late


def token_losses(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos_minus_1"]:
    """Cross-entropy of token t+1 given the logits at t."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none").view(
        tokens.shape[0], -1
    )


@torch.no_grad()
def per_token_loss(
    model: TransformerBridge, tokens: Int[Tensor, "batch pos"], batch_size: int = 16, progress: bool = False
) -> Float[Tensor, "batch pos"]:
    """Cross-entropy of each token given the ones before it; column 0 (no context) is NaN."""
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ICLDataError(f"sequence length {tokens.shape[1]} exceeds the model's context of {model.cfg.n_ctx} tokens")
    out = []
    for start in tqdm(range(0, tokens.shape[0], batch_size), desc="loss", disable=not progress, leave=False):
        chunk = tokens[start : start + batch_size]
        nan = torch.full((chunk.shape[0], 1), float("nan"))
        out.append(torch.cat([nan, token_losses(model(chunk), chunk)], dim=1))
    return torch.cat(out)


def default_stream_config(model: TransformerBridge, seq_len: int | None = None) -> ToyDataConfig:
    """The model's training stream if it recorded one, else the same construction over its vocabulary."""
    info = model_info(model)
    n_ctx = model.cfg.n_ctx
    if info.data:
        cfg = ToyDataConfig.from_dict(info.data)
        if seq_len is not None and seq_len != cfg.seq_len:
            n_tokens = cfg.d_vocab - (cfg.bos_token_id is not None)
            cap = min((seq_len - 1) // 2, n_tokens)
            cfg = ToyDataConfig.from_dict({**cfg.to_dict(), "seq_len": seq_len, "max_segment": cap,
                                           "min_segment": min(cfg.min_segment, cap)})
        return cfg
    seq_len = seq_len or min(n_ctx, 512)
    n_tokens = model.cfg.d_vocab - (info.bos_token_id is not None)
    max_segment = min((seq_len - 1) // 2, n_tokens)
    return ToyDataConfig(
        d_vocab=model.cfg.d_vocab, seq_len=seq_len, min_segment=min(4, max_segment),
        max_segment=max_segment, bos_token_id=info.bos_token_id,
    )


def stream_tokens(model: TransformerBridge, n_sequences: int, seed: int, seq_len: int | None = None) -> tuple[Tensor, str]:
    cfg = default_stream_config(model, seq_len)
    if cfg.seq_len > model.cfg.n_ctx:
        raise ICLDataError(f"sequence length {cfg.seq_len} exceeds the model's context of {model.cfg.n_ctx} tokens")
    gen = torch.Generator().manual_seed(seed)
    return sample_batch(cfg, n_sequences, gen), f"synthetic repeated segments ({cfg.min_segment}-{cfg.resolved_max_segment} tokens)"


def text_tokens(
    model: TransformerBridge, path: str | os.PathLike[str], n_sequences: int, seq_len: int | None = None
) -> tuple[Tensor, str]:
    """Non-overlapping windows of a tokenised text file (BOS first where the model uses one)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ICLDataError("this model has no tokenizer, so it cannot read a text file; omit --text to use synthetic tokens")
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ICLDataError(f"text file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ICLDataError(f"cannot read text file {path}: {exc}") from None
    ids = tok(text, add_special_tokens=False)["input_ids"]
    seq_len = seq_len or min(model.cfg.n_ctx, 512)
    if seq_len > model.cfg.n_ctx:
        raise ICLDataError(f"sequence length {seq_len} exceeds the model's context of {model.cfg.n_ctx} tokens")
    bos = model_info(model).bos_token_id
    body = seq_len - (bos is not None)
    n_windows = min(n_sequences, len(ids) // body)
    if n_windows < 1:
        raise ICLDataError(f"text file {path} has {len(ids)} tokens; need at least {body} for one sequence")
    windows = torch.tensor(ids[: n_windows * body], dtype=torch.long).view(n_windows, body)
    if bos is not None:
        windows = torch.cat([torch.full((n_windows, 1), bos, dtype=torch.long), windows], dim=1)
    return windows, f"text file {path.name} ({n_windows} windows)"


def icl_score(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"] | None = None,
    n_sequences: int = 64,
    seed: int = 0,
    seq_len: int | None = None,
    text: str | os.PathLike[str] | None = None,
    batch_size: int = 16,
    n_bootstrap: int = 1000,
    progress: bool = False,
) -> ICLScore:
    """The ICL score of `model` (module docstring) with a bootstrap CI over sequences.

    Args:
        tokens: sequences to use; otherwise `text` windows, otherwise the synthetic stream.
        n_sequences, seed, seq_len: how many sequences of which length to draw.
    """
    if tokens is not None:
        data = "given tokens"
    elif text is not None:
        tokens, data = text_tokens(model, text, n_sequences, seq_len)
    else:
        tokens, data = stream_tokens(model, n_sequences, seed, seq_len)
    early, late = icl_positions(tokens.shape[1])
    losses = per_token_loss(model, tokens, batch_size, progress)
    diff = (losses[:, late] - losses[:, early]).double().numpy()
    ci = bootstrap_mean_ci(diff, n_bootstrap, seed=seed)
    return ICLScore(
        score=float(diff.mean()), early_loss=float(losses[:, early].mean()), late_loss=float(losses[:, late].mean()),
        early_pos=early, late_pos=late, ci=ci, n_sequences=int(tokens.shape[0]), seq_len=int(tokens.shape[1]), data=data,
    )
