"""The in-context learning score (Olsson et al. 2022).

ICL score = mean loss at a late token - mean loss at an early token of the same sequences. Olsson et al.
use the 500th and the 50th token of 512-token contexts; for a context of n tokens we use the tokens
at 0-based indices round(n * 500/512) and round(n * 50/512) (clipped to [1, n-1]), where "the loss at
token t" is the cross-entropy of predicting token t from the tokens before it. Negative means the
model predicts better later in the context: it learns in context.

The token stream is the model's own synthetic training distribution for the toolkit's toy models
(`induction.inputs.repeated`), a user-given text file for models with a tokenizer, or, failing both, the same
synthetic stream over the model's vocabulary (random segments tiled to the context, which only
in-context copying can predict).
"""

from __future__ import annotations

import codecs
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from induction.common.checks import check_min
from induction.common.stats import DEFAULT_RESAMPLES, bootstrap_mean_ci
from induction.inputs.repeated import ToyDataConfig, sample_batch, segment_cap
from induction.loading.models import model_info
from induction.measures.losses import losses_at


class ICLDataError(ValueError):
    """A token stream that cannot give an ICL score (no tokenizer, too short, too long, ...)."""


@dataclass
class ICLConfig:
    """Settings of the ICL score.

    Attributes:
        n_sequences: sequences (the unit of the bootstrap interval), >= 1.
        seq_len: tokens per sequence, BOS included; None means min(context, 512).
        text: a text file whose non-overlapping windows are the sequences (models with a
            tokenizer); None means the model's synthetic stream (module docstring).
        batch_size: sequences per forward pass, >= 1; None sizes it to a memory budget
            (`induction.measures.losses.sequences_per_forward`).
        n_bootstrap: bootstrap resamples for the interval; 0 disables it.
        seed: seeds the synthetic sequences and the bootstrap.
    """

    n_sequences: int = 64
    seq_len: int | None = None
    text: str | os.PathLike[str] | None = None
    batch_size: int | None = None
    n_bootstrap: int = DEFAULT_RESAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        check_min("n_sequences", self.n_sequences, 1, ICLDataError)
        if self.seq_len is not None and self.seq_len < 3:
            raise ICLDataError(f"sequences of {self.seq_len} tokens are too short for an ICL score")
        if self.batch_size is not None:
            check_min("batch_size", self.batch_size, 1, ICLDataError)
        check_min("n_bootstrap", self.n_bootstrap, 0, ICLDataError)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ICLScore:
    """Result of `icl_score`: the score, the two losses, where they were taken, and a bootstrap CI.

    `per_sequence` holds each sequence's ICL score (late minus early loss; `score` is their mean),
    what a bootstrap over sequences needs (`induction.measures.transience`); `to_dict` leaves it out.
    """

    score: float
    early_loss: float
    late_loss: float
    early_pos: int
    late_pos: int
    ci: tuple[float, float] | None
    n_sequences: int
    seq_len: int
    data: str
    per_sequence: list[float] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("per_sequence")
        return out


def icl_positions(seq_len: int) -> tuple[int, int]:
    """(early, late) token indices for a context of seq_len tokens: 50/512 and 500/512 of it."""
    if seq_len < 3:
        raise ICLDataError(f"sequences of {seq_len} tokens are too short for an ICL score")
    early = min(max(1, round(seq_len * 50 / 512)), seq_len - 1)
    late = min(max(early + 1, round(seq_len * 500 / 512)), seq_len - 1)
    return early, late


def per_sequence_icl(losses: Tensor) -> Tensor:
    """Each sequence's ICL score from its `induction.measures.losses` layout `[batch, pos]`: late minus early loss."""
    early, late = icl_positions(losses.shape[1])
    return losses[:, late] - losses[:, early]


def default_stream_config(model: TransformerBridge, seq_len: int | None = None) -> ToyDataConfig:
    """The model's training stream if it recorded one, else the same construction over its vocabulary."""
    info = model_info(model)
    if info.data:
        cfg = ToyDataConfig.from_dict(info.data)
        if seq_len is not None and seq_len != cfg.seq_len:
            cap = segment_cap(cfg.n_tokens, seq_len - 1)
            cfg = replace(cfg, seq_len=seq_len, max_segment=cap, min_segment=min(cfg.min_segment, cap))
        return cfg
    seq_len = seq_len or min(model.cfg.n_ctx, 512)
    cap = segment_cap(model.cfg.d_vocab - (info.bos_token_id is not None), seq_len - 1)
    return ToyDataConfig(d_vocab=model.cfg.d_vocab, seq_len=seq_len, min_segment=min(4, cap), max_segment=cap,
                         bos_token_id=info.bos_token_id)


def check_fits(model: TransformerBridge, seq_len: int) -> None:
    if seq_len > model.cfg.n_ctx:
        raise ICLDataError(f"sequence length {seq_len} exceeds the model's context of {model.cfg.n_ctx} tokens")


def stream_tokens(model: TransformerBridge, n_sequences: int, seed: int, seq_len: int | None = None) -> tuple[Tensor, str]:
    """`n_sequences` of the model's synthetic stream (`default_stream_config`) and their description."""
    cfg = default_stream_config(model, seq_len)
    check_fits(model, cfg.seq_len)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return sample_batch(cfg, n_sequences, gen), f"synthetic repeated segments ({cfg.min_segment}-{cfg.resolved_max_segment} tokens)"


def text_tokens(
    model: TransformerBridge, path: str | os.PathLike[str], n_sequences: int, seq_len: int | None = None
) -> tuple[Tensor, str]:
    """Non-overlapping windows of a tokenised text file (BOS first where the model uses one)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ICLDataError("this model has no tokenizer, so it cannot read a text file; leave text = None to use synthetic tokens")
    seq_len = seq_len or min(model.cfg.n_ctx, 512)
    check_fits(model, seq_len)
    path = Path(path)
    bos = model_info(model).bos_token_id
    body = seq_len - (bos is not None)
    ids = read_text_tokens(tok, path, n_sequences * body)
    n_windows = min(n_sequences, len(ids) // body)
    if n_windows < 1:
        raise ICLDataError(f"text file {path} has {len(ids)} tokens; need at least {body} for one sequence")
    windows = torch.tensor(ids[: n_windows * body], dtype=torch.long, device="cpu").view(n_windows, body)
    if bos is not None:
        windows = torch.cat([torch.full((n_windows, 1), bos, dtype=torch.long, device="cpu"), windows], dim=1)
    return windows, f"text file {path.name} ({n_windows} windows)"


TEXT_CHUNK_BYTES = 1 << 16
TEXT_TOKEN_MARGIN = 64  # tokens past the ones used: the tokenisation of a prefix is final this far from its cut
TEXT_MAX_BYTES_PER_TOKEN = 1024  # a prefix this long per wanted token without enough tokens: give up


def read_text_tokens(tok: Any, path: Path, needed: int) -> list[int]:
    """The first `needed` tokens of a UTF-8 text file (all of them if it has fewer), reading only a
    prefix of it: memory is bounded by what is used, whatever the file's size.

    The prefix read doubles until its tokens reach `needed` plus `TEXT_TOKEN_MARGIN` (tokenisers
    split text into words first, so tokens this far from the cut are those of the whole file) or
    the file ends; a prefix of `TEXT_MAX_BYTES_PER_TOKEN` bytes per needed token that still has too
    few tokens is refused rather than read on.

    Raises:
        ICLDataError: the file is missing, unreadable, not UTF-8, or has far too few tokens per byte.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    pieces: list[str] = []
    read = 0
    want = max(TEXT_CHUNK_BYTES, 8 * needed)
    cap = TEXT_MAX_BYTES_PER_TOKEN * needed + TEXT_CHUNK_BYTES
    try:
        with path.open("rb") as handle:
            while True:
                eof = False
                while read < want:
                    chunk = handle.read(TEXT_CHUNK_BYTES)
                    if not chunk:
                        pieces.append(decoder.decode(b"", final=True))
                        eof = True
                        break
                    read += len(chunk)
                    pieces.append(decoder.decode(chunk))
                text = "".join(pieces)
                pieces = [text]
                ids = tok(text, add_special_tokens=False)["input_ids"]
                if eof or len(ids) >= needed + TEXT_TOKEN_MARGIN:
                    return ids[:needed]
                if read >= cap:
                    raise ICLDataError(f"text file {path}: its first {read} bytes hold only {len(ids)} tokens, "
                                       f"{needed} are needed; give a text file with words in it")
                want = min(2 * want, cap)
    except FileNotFoundError:
        raise ICLDataError(f"text file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ICLDataError(f"text file {path} is not UTF-8 text (byte {exc.start} of a chunk); "
                           "convert it to UTF-8") from None
    except OSError as exc:
        raise ICLDataError(f"cannot read text file {path}: {exc.strerror or exc}") from None


def icl_tokens(model: TransformerBridge, cfg: ICLConfig) -> tuple[Tensor, str]:
    """The sequences `cfg` asks for: `text` windows, else the synthetic stream."""
    if cfg.text is not None:
        return text_tokens(model, cfg.text, cfg.n_sequences, cfg.seq_len)
    return stream_tokens(model, cfg.n_sequences, cfg.seed, cfg.seq_len)


def icl_score(
    model: TransformerBridge,
    cfg: ICLConfig | None = None,
    *,
    tokens: Int[Tensor, "batch pos"] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> ICLScore:
    """The ICL score of `model` (module docstring) with a bootstrap CI over sequences.

    Only the two losses it reads are computed (`induction.measures.losses.losses_at`: a forward over the
    tokens before the late one, unembedded at two positions), the same numbers as taking them from
    `per_token_loss`.

    Args:
        cfg: the settings (`ICLConfig`); keyword `overrides` replace its fields
            (``icl_score(model, n_sequences=8)``).
        tokens: sequences to use instead of those `cfg` describes.
        progress: a progress bar over batches.
    """
    cfg = replace(cfg or ICLConfig(), **overrides) if overrides else (cfg or ICLConfig())
    if tokens is not None:
        data = "given tokens"
        check_fits(model, tokens.shape[1])
    else:
        tokens, data = icl_tokens(model, cfg)
    early, late = icl_positions(tokens.shape[1])
    losses = losses_at(model, tokens, (early, late), cfg.batch_size, progress)  # [batch, 2]
    diff = (losses[:, 1] - losses[:, 0]).double().numpy()
    ci = bootstrap_mean_ci(diff, cfg.n_bootstrap, seed=cfg.seed)
    return ICLScore(
        score=float(diff.mean()), early_loss=float(losses[:, 0].mean()), late_loss=float(losses[:, 1].mean()),
        early_pos=early, late_pos=late, ci=ci, n_sequences=int(tokens.shape[0]), seq_len=int(tokens.shape[1]), data=data,
        per_sequence=[float(x) for x in diff],
    )
