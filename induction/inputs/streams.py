"""The synthetic training streams: repeated segments (`induction.inputs.repeated`), few-shot tasks, a mixture,
a learned prior with in-context overrides, or task inference.

`sample_fewshot_batch(cfg, batch, generator)` draws sequences of demonstrations of one task each
(`induction.inputs.tasks`, on the layout of `induction.inputs.stream_configs`), filling the context, so that a toy model
trained on it performs the tasks; ``stream="mixture"`` mixes in the repeated-segment stream;
``stream="prior"`` (`sample_prior_batch`) holds the rule fixed as a prior and mixes in sequences
that override it in context. `sample_tasks_batch` draws the task-inference stream
(`induction.inputs.stream_configs.TasksDataConfig`). `sample_stream` draws from whichever stream a config
describes, which is what `induction.training.train` and the held-out loss use.
"""

from __future__ import annotations

from math import comb
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from induction.common.checks import check_choice
from induction.inputs.repeated import ToyDataConfig, distinct_random_tokens
from induction.inputs.repeated import sample_batch as sample_repeated_batch
from induction.inputs.stream_configs import FewShotDataConfig
from induction.inputs.task_inference import TaskError, TasksDataConfig

DataConfig = ToyDataConfig | FewShotDataConfig | TasksDataConfig
"""Any training stream's settings."""


def _demonstrations(
    x: Int[Tensor, "batch demo"], y: Int[Tensor, "batch demo"], seq_len: int, bos: int | None, sep: int | None, delim: int
) -> Int[Tensor, "batch seq_len"]:
    """BOS + demonstrations ``x [SEP] y DELIM`` filling `seq_len` tokens (the last one cut off)."""
    batch = x.shape[0]
    parts = [x] + ([torch.full_like(x, sep)] if sep is not None else []) + [y, torch.full_like(x, delim)]
    tokens = torch.stack(parts, dim=-1).reshape(batch, -1)[:, : seq_len - (bos is not None)]
    if bos is not None:
        tokens = torch.cat([torch.full((batch, 1), bos, dtype=torch.long, device=tokens.device), tokens], dim=1)
    return tokens


def demonstrations_per_sequence(cfg: Any) -> int:
    """Demonstrations that fill a sequence after BOS (the last one cut at the context's end)."""
    return -(-(cfg.seq_len - (cfg.bos_token_id is not None)) // cfg.demo_len)


def _keyed_lookup(
    n_rows: int, n_demos: int, keys_range: tuple[int, ...], key_pool: Tensor, value_pool: Tensor | None,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Per row, `keys_range` distinct keys from `key_pool` with one value each (distinct values from
    `value_pool` when given, else values drawn from the key pool with replacement); the
    demonstrations draw keys with replacement, so a key's later demonstrations repeat its first."""
    lo, hi = keys_range
    hi = min(hi, len(key_pool), len(value_pool) if value_pool is not None else hi)
    n_keys = torch.randint(min(lo, hi), hi + 1, (n_rows,), generator=generator, device="cpu")
    keys = distinct_random_tokens(n_rows, hi, key_pool, generator)
    if value_pool is not None:
        values = distinct_random_tokens(n_rows, hi, value_pool, generator)
    else:
        values = key_pool[torch.randint(len(key_pool), (n_rows, hi), generator=generator, device="cpu")]
    pick = (torch.rand(n_rows, n_demos, generator=generator, device="cpu") * n_keys[:, None]).long()
    return keys.gather(1, pick), values.gather(1, pick)


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
    With ``stream="mixture"`` a `mixture.p_repeated` share of the sequences come from `induction.inputs.repeated`;
    ``stream="prior"`` is `sample_prior_batch`.
    """
    if cfg.stream == "prior":
        return sample_prior_batch(cfg, batch, generator)
    v = cfg.vocab
    n_demos = demonstrations_per_sequence(cfg)
    task = torch.multinomial(torch.tensor(cfg.task_weights, device="cpu"), batch, replacement=True, generator=generator)
    x = torch.empty(batch, n_demos, dtype=torch.long, device="cpu")
    y = torch.empty(batch, n_demos, dtype=torch.long, device="cpu")

    rows = (task == 0).nonzero().flatten()
    if len(rows):
        x[rows], y[rows] = _keyed_lookup(len(rows), n_demos, cfg.lookup_keys, torch.tensor(v.content, device="cpu"), None, generator)

    rows = (task == 1).nonzero().flatten()
    if len(rows):
        idx = torch.randint(len(v.rule_inputs), (len(rows), n_demos), generator=generator, device="cpu")
        x[rows], y[rows] = torch.tensor(v.rule_inputs, device="cpu")[idx], torch.tensor(v.rule_labels, device="cpu")[idx]

    rows = (task == 2).nonzero().flatten()
    if len(rows):
        n_classes, per_class = len(v.class_labels), len(v.class_exemplars[0])
        chosen = torch.rand(len(rows), n_classes, generator=generator, device="cpu").argsort(1)[:, : cfg.n_way]
        cls = chosen.gather(1, torch.randint(cfg.n_way, (len(rows), n_demos), generator=generator, device="cpu"))
        ex = torch.randint(per_class, (len(rows), n_demos), generator=generator, device="cpu")
        x[rows] = torch.tensor(v.class_exemplars, device="cpu")[cls, ex]
        y[rows] = torch.tensor(v.class_labels, device="cpu")[cls]

    tokens = _demonstrations(x, y, cfg.seq_len, cfg.bos_token_id, v.sep if cfg.sep else None, v.delim)
    if cfg.stream == "mixture":
        repeated = torch.rand(batch, generator=generator, device="cpu") < cfg.mixture.p_repeated
        if repeated.any():
            tokens[repeated] = sample_repeated_batch(cfg.repeated_config(), int(repeated.sum()), generator)
    return tokens


def sample_prior_batch(
    cfg: FewShotDataConfig, batch: int, generator: torch.Generator
) -> Int[Tensor, "batch seq_len"]:
    """A batch of the learned-prior stream (``stream="prior"``), reproducible from `generator`.

    Each sequence is BOS + demonstrations filling the context, of one kind drawn by `prior.weights`:
    - prior: inputs drawn from the rule's inputs, labelled by the rule, the same mapping in every
      sequence of training (so the model stores it in its weights: the prior); with probability
      `prior.noise` a demonstration's label is a uniformly random rule label instead;
    - override: `prior.override_keys` distinct rule inputs, each mapped to a distinct rule label drawn
      for this sequence alone (mostly not the prior's); the demonstrations repeat the keys, so a
      key's later demonstrations follow its first one, not the prior (induction against the prior);
    - lookup: the few-shot stream's lookup sequences over every content token.
    """
    v = cfg.vocab
    n_demos = demonstrations_per_sequence(cfg)
    kind = torch.multinomial(torch.tensor(cfg.prior.weights, device="cpu"), batch, replacement=True, generator=generator)
    x = torch.empty(batch, n_demos, dtype=torch.long, device="cpu")
    y = torch.empty(batch, n_demos, dtype=torch.long, device="cpu")
    rule_inputs, rule_labels = torch.tensor(v.rule_inputs, device="cpu"), torch.tensor(v.rule_labels, device="cpu")

    rows = (kind == 0).nonzero().flatten()
    if len(rows):
        idx = torch.randint(len(rule_inputs), (len(rows), n_demos), generator=generator, device="cpu")
        labels = rule_labels[idx]
        noisy = torch.rand(len(rows), n_demos, generator=generator, device="cpu") < cfg.prior.noise
        random = rule_labels[torch.randint(len(rule_labels), (len(rows), n_demos), generator=generator, device="cpu")]
        x[rows], y[rows] = rule_inputs[idx], torch.where(noisy, random, labels)

    rows = (kind == 1).nonzero().flatten()
    if len(rows):
        x[rows], y[rows] = _keyed_lookup(len(rows), n_demos, cfg.prior.override_keys, rule_inputs, rule_labels, generator)

    rows = (kind == 2).nonzero().flatten()
    if len(rows):
        x[rows], y[rows] = _keyed_lookup(len(rows), n_demos, cfg.lookup_keys, torch.tensor(v.content, device="cpu"), None, generator)
    return _demonstrations(x, y, cfg.seq_len, cfg.bos_token_id, v.sep if cfg.sep else None, v.delim)


def prior_bayes_flipped(cfg: FewShotDataConfig, k: int) -> tuple[float, float]:
    """What the Bayes-optimal predictor of the prior stream gives a flipped-label prompt:
    (P(in-context answer), P(prior answer)) for k demonstrations of distinct rule inputs whose
    labels all differ from the prior (distinct labels: a derangement of the label space), the
    query's input shown in one of them (k = 0: the query alone).

    The predictor knows the mixture (`prior.weights`, `prior.noise`, the key ranges). Likelihood of
    the demonstrations under each sequence kind, with n rule inputs and labels and c content tokens:
    prior (1/n)^k (noise/n)^k; override sum over key counts m of P(m) C(n-k, m-k)/C(n, m) m^-k
    times 1/(n (n-1) ... (n-k+1)) (distinct labels); lookup the same over c keys, times c^-k. Given
    the kind, a repeated input keeps its label in override and lookup sequences, while a prior
    sequence labels it by the prior (probability 1 - noise + noise/n) or at random.
    """
    if k < 0:
        raise TaskError(f"the number of shots must be >= 0, got {k}")
    v = cfg.vocab
    n, c = len(v.rule_inputs), len(v.content)
    w_prior, w_override, w_lookup = cfg.prior.weights
    noise = cfg.prior.noise
    keep = 1 - noise + noise / n  # P(prior label | prior sequence)
    if k == 0:  # the query is the first input: its kind posterior is set by the input pools alone
        a, b, d = w_prior / n, w_override / n, w_lookup / c
        return 0.0, (a * keep + b / n + d / c) / (a + b + d)

    def keyed(pool: int, keys: tuple[int, ...]) -> float:
        lo, hi = keys[0], min(keys[1], pool)
        lo = min(lo, hi)
        return sum(comb(pool - k, m - k) / comb(pool, m) * m ** (-k) for m in range(max(lo, k), hi + 1)) / (hi - lo + 1)

    distinct = 1.0
    for i in range(k):
        distinct *= 1 / (n - i) if n - i > 0 else 0.0
    likelihood = {
        "prior": (1 / n) ** k * (noise / n) ** k,
        "override": keyed(n, cfg.prior.override_keys) * distinct,
        "lookup": keyed(c, cfg.lookup_keys) * c ** (-k),
    }
    total = w_prior * likelihood["prior"] + w_override * likelihood["override"] + w_lookup * likelihood["lookup"]
    if total == 0:
        raise TaskError(f"a flipped-label prompt with k={k} cannot occur in this stream")
    post_prior = w_prior * likelihood["prior"] / total
    return (1 - post_prior) + post_prior * noise / n, post_prior * keep


def sample_tasks_batch(
    cfg: TasksDataConfig, batch: int, generator: torch.Generator
) -> Int[Tensor, "batch seq_len"]:
    """A batch of the task-inference stream (`TasksDataConfig`), reproducible from `generator`: each
    sequence is BOS + demonstrations of one task (drawn by `task_weights`), inputs uniform with
    replacement, labelled by the task's fixed function."""
    v = cfg.vocab
    n_demos = demonstrations_per_sequence(cfg)
    weights = torch.tensor(cfg.task_weights, device="cpu") if cfg.task_weights is not None else torch.ones(len(cfg.tasks), device="cpu")
    task = torch.multinomial(weights, batch, replacement=True, generator=generator)
    table = torch.tensor([v.functions[t] for t in cfg.tasks], device="cpu")  # [task, input index]
    idx = torch.randint(cfg.n_inputs, (batch, n_demos), generator=generator, device="cpu")
    x, y = torch.tensor(v.inputs, device="cpu")[idx], table[task[:, None], idx]
    return _demonstrations(x, y, cfg.seq_len, cfg.bos_token_id, v.sep if cfg.sep else None, v.delim)


# ---- training data selection (for induction.training.train) -------------------------------------------------

DATA_STREAMS = ("repeated", "fewshot", "mixture", "prior", "tasks")


def training_data(kind: str, d_vocab: int, seq_len: int, bos_token_id: int | None = 0) -> DataConfig:
    """The training stream called `kind`: "repeated" (`induction.inputs.repeated`), "fewshot", "mixture",
    "prior" or "tasks" (this module), with its default settings.

    The repeated segments' longest length is left to `induction.inputs.repeated.segment_cap`. The model and
    schedule each stream was found to need are `induction.training.train.DATA_RECIPES`.
    """
    check_choice("training data", kind, DATA_STREAMS, TaskError)
    if kind == "repeated":
        return ToyDataConfig(d_vocab=d_vocab, seq_len=seq_len, bos_token_id=bos_token_id)
    if kind == "tasks":
        return TasksDataConfig(d_vocab=d_vocab, seq_len=seq_len, bos_token_id=bos_token_id)
    return FewShotDataConfig(d_vocab=d_vocab, seq_len=seq_len, bos_token_id=bos_token_id, stream=kind).resolved()


def data_config_from_dict(d: dict[str, Any]) -> DataConfig:
    """Rebuild a recorded training stream's config (`to_dict()` of any kind)."""
    if TasksDataConfig.is_tasks_data(d):
        return TasksDataConfig.from_dict(d)
    return FewShotDataConfig.from_dict(d) if FewShotDataConfig.is_fewshot_data(d) else ToyDataConfig.from_dict(d)


def sample_stream(cfg: DataConfig, batch: int, generator: torch.Generator) -> Int[Tensor, "batch seq_len"]:
    """A batch of whichever stream `cfg` describes (`induction.inputs.repeated.sample_batch`, `sample_fewshot_batch`
    or `sample_tasks_batch`)."""
    if isinstance(cfg, TasksDataConfig):
        return sample_tasks_batch(cfg, batch, generator)
    if isinstance(cfg, FewShotDataConfig):
        return sample_fewshot_batch(cfg, batch, generator)
    return sample_repeated_batch(cfg, batch, generator)
