"""The synthetic training streams: repeated segments (`induction.data`), few-shot tasks, or a mixture.

`sample_fewshot_batch(cfg, batch, generator)` draws sequences of demonstrations of one task each
(`induction.tasks`, on the layout of `induction.vocab`), filling the context, so that a toy model
trained on it performs the tasks; ``stream="mixture"`` mixes in the repeated-segment stream.
`sample_stream` draws from whichever stream a config describes, which is what `induction.train`
and the held-out loss use.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from induction.checks import check_choice
from induction.data import ToyDataConfig, distinct_random_tokens
from induction.data import sample_batch as sample_repeated_batch
from induction.vocab import FewShotDataConfig, TaskError


def sample_fewshot_batch(
    cfg: FewShotDataConfig, batch: int, generator: torch.Generator
) -> Int[Tensor, "batch seq_len"]:
    """A batch of the few-shot training stream, reproducible from `generator`.

    Each sequence is BOS + demonstrations of one task (drawn by `task_weights`) filling the context
    (the last one cut off):
    - lookup: `lookup_keys` distinct inputs drawn from all content tokens (the unrelated ones too,
      so every token learns to be copied), each with a random label drawn from all content tokens;
      the demonstrations draw inputs from them with replacement, so an input's later demonstrations
      are predictable only from its first one (induction).
    - rule: inputs drawn from the rule's inputs, labelled by the rule (learnable in the weights).
    - classification: bursty, `n_way` classes per sequence, gold class labels.
    With ``stream="mixture"`` a `p_repeated` share of the sequences come from `induction.data`.
    """
    v = cfg.vocab
    body = cfg.seq_len - (cfg.bos_token_id is not None)
    n_demos = -(-body // cfg.demo_len)
    task = torch.multinomial(torch.tensor(cfg.task_weights), batch, replacement=True, generator=generator)
    x = torch.empty(batch, n_demos, dtype=torch.long)
    y = torch.empty(batch, n_demos, dtype=torch.long)

    rows = (task == 0).nonzero().flatten()
    if len(rows):
        content = torch.tensor(v.content)
        lo, hi = cfg.lookup_keys
        hi = min(hi, len(content))
        n_keys = torch.randint(min(lo, hi), hi + 1, (len(rows),), generator=generator)
        keys = distinct_random_tokens(len(rows), hi, content, generator)
        values = content[torch.randint(len(content), (len(rows), hi), generator=generator)]
        pick = (torch.rand(len(rows), n_demos, generator=generator) * n_keys[:, None]).long()
        x[rows], y[rows] = keys.gather(1, pick), values.gather(1, pick)

    rows = (task == 1).nonzero().flatten()
    if len(rows):
        idx = torch.randint(len(v.rule_inputs), (len(rows), n_demos), generator=generator)
        x[rows], y[rows] = torch.tensor(v.rule_inputs)[idx], torch.tensor(v.rule_labels)[idx]

    rows = (task == 2).nonzero().flatten()
    if len(rows):
        n_classes, per_class = len(v.class_labels), len(v.class_exemplars[0])
        chosen = torch.rand(len(rows), n_classes, generator=generator).argsort(1)[:, : cfg.n_way]
        cls = chosen.gather(1, torch.randint(cfg.n_way, (len(rows), n_demos), generator=generator))
        ex = torch.randint(per_class, (len(rows), n_demos), generator=generator)
        x[rows] = torch.tensor(v.class_exemplars)[cls, ex]
        y[rows] = torch.tensor(v.class_labels)[cls]

    parts = [x]
    if cfg.sep:
        parts.append(torch.full_like(x, v.sep))
    parts += [y, torch.full_like(x, v.delim)]
    tokens = torch.stack(parts, dim=-1).reshape(batch, -1)[:, :body]
    if cfg.bos_token_id is not None:
        tokens = torch.cat([torch.full((batch, 1), cfg.bos_token_id, dtype=torch.long), tokens], dim=1)
    if cfg.stream == "mixture":
        repeated = torch.rand(batch, generator=generator) < cfg.p_repeated
        if repeated.any():
            tokens[repeated] = sample_repeated_batch(cfg.repeated_config(), int(repeated.sum()), generator)
    return tokens


# ---- training data selection (for induction.train) -------------------------------------------------

DATA_STREAMS = ("repeated", "fewshot", "mixture")


def training_data(kind: str, d_vocab: int, seq_len: int, bos_token_id: int | None = 0) -> ToyDataConfig | FewShotDataConfig:
    """The training stream called `kind`: "repeated" (`induction.data`), "fewshot" or "mixture" (this module).

    The repeated segments' longest length is left to `induction.data.segment_cap`.
    """
    check_choice("training data", kind, DATA_STREAMS, TaskError)
    if kind == "repeated":
        return ToyDataConfig(d_vocab=d_vocab, seq_len=seq_len, bos_token_id=bos_token_id)
    return FewShotDataConfig(d_vocab=d_vocab, seq_len=seq_len, bos_token_id=bos_token_id, stream=kind).resolved()


def data_config_from_dict(d: dict[str, Any]) -> ToyDataConfig | FewShotDataConfig:
    """Rebuild a recorded training stream's config (`to_dict()` of either kind)."""
    return FewShotDataConfig.from_dict(d) if FewShotDataConfig.is_fewshot_data(d) else ToyDataConfig.from_dict(d)


def sample_stream(
    cfg: ToyDataConfig | FewShotDataConfig, batch: int, generator: torch.Generator
) -> Int[Tensor, "batch seq_len"]:
    """A batch of whichever stream `cfg` describes (`induction.data.sample_batch` or `sample_fewshot_batch`)."""
    if isinstance(cfg, FewShotDataConfig):
        return sample_fewshot_batch(cfg, batch, generator)
    return sample_repeated_batch(cfg, batch, generator)
