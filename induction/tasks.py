"""Few-shot tasks: what a prompt's demonstrations and query are, before they become tokens.

A few-shot prompt is k demonstrations ``x SEP y DELIM`` followed by a query ``x SEP``; the answer is
the query's ``y``. The toy tasks default to the same format without SEP (``x y DELIM`` ... ``x``),
where an ordinary one-token induction head answers a lookup: trained with `induction/train.py`'s
defaults (1000 steps, lr 1e-2, batch 16), the default 2-layer attention-only model reaches lookup
accuracy 0.96-1.0 for k = 1..16 in that format but only 0.44 (k=1) falling to 0.08 (k=16) with SEP,
still so after 8000 steps (answering from ``x SEP`` needs a two-token match, which it had not
learnt). ``sep=True`` keeps the SEP format; SEP stays reserved either way, so the layout is the same. This module defines the tasks as samplers of `Episode`s (the demonstrations and the
query as task symbols); `induction.fewshot` manipulates their labels, renders them to tokens and
scores models on them.

Token-level tasks (for the toolkit's toy models; every symbol is one token id):

- ``lookup``: a fresh random mapping x -> y per prompt; the query's x is one of the demonstrations'
  (exactly once), so only retrieving "what followed x earlier" answers it: pure induction.
- ``rule``: a fixed bijection y = rule(x) from `rule_size` input tokens to as many label tokens, drawn
  once from ``task_seed``. A model trained on it knows it in its weights, so in-context labels can agree
  (gold) or disagree (flipped, ...) with what it knows.
- ``classification``: `n_classes` classes of `exemplars_per_class` input tokens each, one label token
  per class; prompts are bursty (Chan et al. 2022): the demonstrations come from `n_way` classes, one
  of which is the query's.

The toy vocabulary layout (`ToyVocab`), for ``d_vocab`` V and a BOS token (0 by default):
``SEP = V - 2`` and ``DELIM = V - 1`` are reserved; the remaining "content" tokens, in increasing order,
are split into ``inputs`` (the first half of the pool), ``labels`` (the second half) and, last,
``unrelated`` (`n_unrelated` tokens that no task uses as a gold input or label: the label manipulations
draw their substitutes from them). ``rule`` maps ``inputs[:rule_size]`` onto ``labels[:rule_size]``;
``classification`` takes its exemplars from the inputs after the rule's and its class labels from the
labels after the rule's; ``lookup`` uses all of ``inputs`` and ``labels`` (disjoint, so an input never
doubles as a label).

Text tasks (models with a tokenizer): small datasets shipped in `induction.datasets` (``antonyms``,
``country_capital``, ``word_category``), rendered as ``"hot -> cold\\n"`` lines; the query pair is
never among the demonstrations, so the model answers from what it knows plus the format.

`sample_fewshot_batch(cfg, batch, generator)` is the training stream (same signature as
`induction.data.sample_batch`): sequences of demonstrations of one task each, filling the context, so
that a toy model trained on it performs the tasks; ``stream="mixture"`` mixes in the repeated-segment
stream of `induction.data`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from importlib import resources
from typing import Any, Hashable

import torch
from jaxtyping import Int
from torch import Tensor

from induction.data import ToyDataConfig, distinct_random_tokens
from induction.data import sample_batch as sample_repeated_batch

TOY_TASKS = ("lookup", "rule", "classification")
TEXT_TASKS = ("antonyms", "country_capital", "word_category")
TASKS = TOY_TASKS + TEXT_TASKS
STREAMS = ("fewshot", "mixture")


class TaskError(ValueError):
    """A task, its settings or its prompts that cannot be built (names the allowed values)."""


# ---- episodes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    """One demonstration: its input, the label shown in the prompt, and the task's gold label."""

    x: Hashable
    y: Hashable
    gold: Hashable


@dataclass(frozen=True)
class Episode:
    """A few-shot prompt before rendering.

    Attributes:
        demos: the k demonstrations, in prompt order.
        query: the query's input.
        gold: the task's label for the query.
        answer: the in-context answer: the label the demonstrations imply for the query (equal to
            `gold` unless a label manipulation changed it; see `induction.fewshot.manipulate`).
    """

    demos: tuple[Demo, ...]
    query: Hashable
    gold: Hashable
    answer: Hashable

    @property
    def k(self) -> int:
        return len(self.demos)


def _randint(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def _choice(items: tuple | list, generator: torch.Generator) -> Any:
    return items[_randint(len(items), generator)]


def _sample_distinct(items: tuple | list, n: int, generator: torch.Generator) -> list:
    if n > len(items):
        raise TaskError(f"cannot draw {n} distinct items from {len(items)}")
    return [items[int(i)] for i in torch.randperm(len(items), generator=generator)[:n]]


# ---- the toy vocabulary ------------------------------------------------------------------------


@dataclass
class FewShotDataConfig:
    """The toy few-shot tasks' vocabulary layout and the training stream's settings.

    The layout fields fix which token is what (module docstring); a model trained on this stream
    records them (as `to_dict()`) so that its prompts use the same tokens. Sizes left at None are
    derived from the vocabulary (`resolved()`): for the default 128-token vocabulary, 16 unrelated
    tokens, 54 inputs and 54 labels, a rule over 20 tokens and 8 classes of 4 exemplars.

    Attributes:
        d_vocab: vocabulary size, BOS and the two reserved tokens included.
        seq_len: tokens per training sequence, BOS included.
        bos_token_id: the token at position 0, or None for no BOS.
        sep: prompts read ``x SEP y DELIM`` (query ``x SEP``); False (default) drops SEP (``x y DELIM``,
            query ``x``), the format a one-token induction head answers and the default toy model
            learns (module docstring).
        n_unrelated: reserved content tokens for the label manipulations (None: round(content / 8)).
        rule_size: inputs (and labels) of the ``rule`` task (None: min(20, inputs // 2)).
        n_classes: classes of the ``classification`` task (None: min(8, max(2, free inputs // 4))).
        exemplars_per_class: input tokens per class (None: min(4, free inputs // n_classes)).
        n_way: classes per bursty classification prompt, >= 1.
        task_seed: seeds the rule's bijection and the class memberships (not the prompts).
        stream: "fewshot" (every sequence a few-shot sequence) or "mixture" (a `p_repeated` share
            of repeated-segment sequences from `induction.data`).
        task_weights: relative frequency of lookup, rule and classification sequences in the stream.
        lookup_keys: (min, max) distinct inputs of a training lookup sequence (they repeat, so later
            demonstrations are predictable by induction).
        p_repeated: share of repeated-segment sequences when stream == "mixture".
        min_segment, max_segment: the repeated-segment stream's settings (`ToyDataConfig`).
    """

    d_vocab: int = 128
    seq_len: int = 128
    bos_token_id: int | None = 0
    sep: bool = False
    n_unrelated: int | None = None
    rule_size: int | None = None
    n_classes: int | None = None
    exemplars_per_class: int | None = None
    n_way: int = 2
    task_seed: int = 0
    stream: str = "fewshot"
    task_weights: tuple[float, ...] = (0.5, 0.25, 0.25)
    lookup_keys: tuple[int, ...] = (4, 16)
    p_repeated: float = 0.5
    min_segment: int = 4
    max_segment: int | None = None

    def __post_init__(self) -> None:
        self.task_weights = tuple(float(w) for w in self.task_weights)
        self.lookup_keys = tuple(int(n) for n in self.lookup_keys)
        if self.d_vocab < 8:
            raise TaskError(f"d_vocab must be >= 8 for few-shot tasks, got {self.d_vocab}")
        if self.bos_token_id is not None and not 0 <= self.bos_token_id < self.d_vocab - 2:
            raise TaskError(
                f"bos_token_id must be in [0, d_vocab - 2 = {self.d_vocab - 2}) (the top two ids are SEP "
                f"and DELIM), got {self.bos_token_id}"
            )
        if self.stream not in STREAMS:
            raise TaskError(f"stream must be one of {', '.join(STREAMS)}, got {self.stream!r}")
        if len(self.task_weights) != 3 or min(self.task_weights) < 0 or sum(self.task_weights) <= 0:
            raise TaskError(f"task_weights must be 3 non-negative weights (lookup, rule, classification), got {self.task_weights}")
        if len(self.lookup_keys) != 2 or not 1 <= self.lookup_keys[0] <= self.lookup_keys[1]:
            raise TaskError(f"lookup_keys must be (min, max) with 1 <= min <= max, got {self.lookup_keys}")
        if not 0.0 <= self.p_repeated <= 1.0:
            raise TaskError(f"p_repeated must be in [0, 1], got {self.p_repeated}")
        if self.n_way < 1:
            raise TaskError(f"n_way must be >= 1, got {self.n_way}")
        demo_len = 3 + self.sep
        if self.seq_len < (self.bos_token_id is not None) + 2 * demo_len:
            raise TaskError(f"seq_len {self.seq_len} holds fewer than two demonstrations")
        for name in ("n_unrelated", "rule_size", "n_classes", "exemplars_per_class"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TaskError(f"{name} must be >= 1, got {value}")
        self.vocab  # validates the layout  # noqa: B018

    @property
    def demo_len(self) -> int:
        return 3 + self.sep

    @cached_property
    def vocab(self) -> "ToyVocab":
        return ToyVocab.build(self)

    def resolved(self) -> "FewShotDataConfig":
        """A copy with every derived size filled in (what a trained model should record)."""
        v = self.vocab
        return FewShotDataConfig.from_dict(
            {**self.to_dict(), "n_unrelated": len(v.unrelated), "rule_size": len(v.rule_inputs),
             "n_classes": len(v.class_labels), "exemplars_per_class": len(v.class_exemplars[0])}
        )

    def repeated_config(self) -> ToyDataConfig:
        """The repeated-segment stream mixed in by stream == "mixture"."""
        return ToyDataConfig(d_vocab=self.d_vocab, seq_len=self.seq_len, min_segment=self.min_segment,
                             max_segment=self.max_segment, bos_token_id=self.bos_token_id)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["task_weights"] = list(self.task_weights)
        d["lookup_keys"] = list(self.lookup_keys)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FewShotDataConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "task_weights" in known:  # JSON gives lists (and ints for round floats)
            known["task_weights"] = tuple(float(w) for w in known["task_weights"])
        if "lookup_keys" in known:
            known["lookup_keys"] = tuple(int(n) for n in known["lookup_keys"])
        if "p_repeated" in known:
            known["p_repeated"] = float(known["p_repeated"])
        return cls(**known)

    @staticmethod
    def is_fewshot_data(d: dict[str, Any] | None) -> bool:
        """Whether a model's recorded training data (`ModelInfo.data`) is this stream."""
        return isinstance(d, dict) and d.get("stream") in STREAMS


@dataclass(frozen=True)
class ToyVocab:
    """Which token is what in the toy few-shot tasks (module docstring)."""

    bos: int | None
    sep: int
    delim: int
    inputs: tuple[int, ...]
    labels: tuple[int, ...]
    unrelated: tuple[int, ...]
    rule_inputs: tuple[int, ...]
    rule_labels: tuple[int, ...]  # rule_labels[i] = rule(rule_inputs[i])
    class_exemplars: tuple[tuple[int, ...], ...]  # [class][exemplar]
    class_labels: tuple[int, ...]
    content: tuple[int, ...] = field(repr=False, default=())

    @classmethod
    def build(cls, cfg: FewShotDataConfig) -> "ToyVocab":
        sep, delim = cfg.d_vocab - 2, cfg.d_vocab - 1
        content = tuple(t for t in range(cfg.d_vocab) if t not in (cfg.bos_token_id, sep, delim))
        n_unrelated = cfg.n_unrelated if cfg.n_unrelated is not None else max(1, round(len(content) / 8))
        half = (len(content) - n_unrelated) // 2
        if half < 2:
            raise TaskError(
                f"a {cfg.d_vocab}-token vocabulary with {n_unrelated} unrelated tokens leaves {half} inputs "
                "and labels; need at least 2 of each"
            )
        inputs, labels = content[:half], content[half : 2 * half]
        unrelated = content[len(content) - n_unrelated :]
        rule_size = cfg.rule_size if cfg.rule_size is not None else max(1, min(20, half // 2))
        free = half - rule_size
        n_classes = cfg.n_classes if cfg.n_classes is not None else min(8, max(2, free // 4))
        per_class = cfg.exemplars_per_class if cfg.exemplars_per_class is not None else min(4, free // max(n_classes, 1))
        if rule_size > half or per_class < 1 or rule_size + n_classes * per_class > half or rule_size + n_classes > half:
            raise TaskError(
                f"the tasks do not fit the vocabulary: {half} inputs and {half} labels, but rule_size "
                f"{rule_size} + n_classes {n_classes} x exemplars_per_class {per_class} inputs and "
                f"{rule_size} + {n_classes} labels are needed (lower them or raise d_vocab)"
            )
        if cfg.n_way > n_classes:
            raise TaskError(f"n_way {cfg.n_way} exceeds n_classes {n_classes}")
        gen = torch.Generator().manual_seed(cfg.task_seed)
        perm = torch.randperm(rule_size, generator=gen).tolist()
        rule_inputs = inputs[:rule_size]
        rule_labels = tuple(labels[p] for p in perm)
        pool = list(inputs[rule_size : rule_size + n_classes * per_class])
        order = torch.randperm(len(pool), generator=gen).tolist()
        shuffled = [pool[i] for i in order]
        exemplars = tuple(tuple(sorted(shuffled[c * per_class : (c + 1) * per_class])) for c in range(n_classes))
        class_labels = labels[rule_size : rule_size + n_classes]
        return cls(bos=cfg.bos_token_id, sep=sep, delim=delim, inputs=inputs, labels=labels, unrelated=unrelated,
                   rule_inputs=rule_inputs, rule_labels=rule_labels, class_exemplars=exemplars,
                   class_labels=class_labels, content=content)

    def rule(self, x: int) -> int:
        return self.rule_labels[self.rule_inputs.index(x)]


# ---- tasks ---------------------------------------------------------------------------------------


class Task:
    """A few-shot task: a label space and a sampler of gold `Episode`s.

    Attributes:
        name: the task's name.
        kind: "toy" (symbols are token ids) or "text" (symbols are strings).
        labels: the label space (what "random" labels are drawn from and "flipped" permutes).
        unrelated: substitute labels outside the label space ("unrelated", "random_label_space").
        random_inputs: substitute inputs outside the task ("random_inputs").
        query_in_context: whether a k >= 1 prompt shows the query's input (or class) in a demonstration.
    """

    name: str
    kind: str
    labels: tuple
    unrelated: tuple
    random_inputs: tuple
    query_in_context: bool = True

    def max_shots(self) -> int:
        """The most demonstrations a prompt can hold (inputs that must be distinct run out)."""
        raise NotImplementedError

    def sample(self, k: int, generator: torch.Generator) -> Episode:
        raise NotImplementedError

    def check_shots(self, k: int) -> None:
        if k < 0:
            raise TaskError(f"the number of shots must be >= 0, got {k}")
        if k > self.max_shots():
            raise TaskError(f"task {self.name!r} holds at most {self.max_shots()} demonstrations per prompt, got k={k}")


def _episode(demos: list[Demo], query: Hashable, gold: Hashable) -> Episode:
    return Episode(demos=tuple(demos), query=query, gold=gold, answer=gold)


class LookupTask(Task):
    """A fresh random mapping per prompt; the query's input is shown exactly once (pure induction)."""

    def __init__(self, vocab: ToyVocab):
        self.name, self.kind, self.vocab = "lookup", "toy", vocab
        self.labels, self.unrelated, self.random_inputs = vocab.labels, vocab.unrelated, vocab.unrelated

    def max_shots(self) -> int:
        return len(self.vocab.inputs)

    def sample(self, k: int, generator: torch.Generator) -> Episode:
        xs = _sample_distinct(self.vocab.inputs, max(k, 1), generator)
        ys = [_choice(self.labels, generator) for _ in xs]
        q = _randint(k, generator) if k else 0
        return _episode([Demo(x, y, y) for x, y in zip(xs[:k], ys[:k])], xs[q], ys[q])


class RuleTask(Task):
    """The fixed bijection `ToyVocab.rule`; the query's input is shown once when `query_in_context`."""

    def __init__(self, vocab: ToyVocab, query_in_context: bool = True):
        self.name, self.kind, self.vocab = "rule", "toy", vocab
        self.labels, self.unrelated, self.random_inputs = vocab.rule_labels, vocab.unrelated, vocab.unrelated
        self.query_in_context = query_in_context

    def max_shots(self) -> int:
        return len(self.vocab.rule_inputs) - (not self.query_in_context)

    def sample(self, k: int, generator: torch.Generator) -> Episode:
        if self.query_in_context and k:
            xs = _sample_distinct(self.vocab.rule_inputs, k, generator)
            query = xs[_randint(k, generator)]
        else:
            xs = _sample_distinct(self.vocab.rule_inputs, k + 1, generator)
            query = xs[k]  # not among the demonstrations
        return _episode([Demo(x, self.vocab.rule(x), self.vocab.rule(x)) for x in xs[:k]], query, self.vocab.rule(query))


class ClassificationTask(Task):
    """Bursty classification (Chan et al. 2022): demonstrations from `n_way` classes, the query's among them."""

    def __init__(self, vocab: ToyVocab, n_way: int, query_in_context: bool = True):
        self.name, self.kind, self.vocab, self.n_way = "classification", "toy", vocab, n_way
        self.labels, self.unrelated, self.random_inputs = vocab.class_labels, vocab.unrelated, vocab.unrelated
        self.query_in_context = query_in_context

    def max_shots(self) -> int:
        return 10**6  # exemplars repeat, so any number fits (the context is the limit)

    def sample(self, k: int, generator: torch.Generator) -> Episode:
        v = self.vocab
        classes = _sample_distinct(list(range(len(v.class_labels))), self.n_way, generator)
        demo_classes = [_choice(classes, generator) for _ in range(k)]
        if self.query_in_context and k and classes[0] not in demo_classes:
            demo_classes[_randint(k, generator)] = classes[0]
        demos = []
        for c in demo_classes:
            x = _choice(v.class_exemplars[c], generator)
            demos.append(Demo(x, v.class_labels[c], v.class_labels[c]))
        query = _choice(v.class_exemplars[classes[0]], generator)
        return _episode(demos, query, v.class_labels[classes[0]])


@dataclass(frozen=True)
class TextTask(Task):
    """A text task: (input, label) word pairs rendered as ``f"{x}{separator} {y}{delimiter}"``.

    The query pair is drawn first and the k demonstrations from the other pairs, without replacement.
    """

    name: str
    pairs: tuple[tuple[str, str], ...]
    description: str = ""
    separator: str = " ->"
    delimiter: str = "\n"
    unrelated: tuple[str, ...] = ()
    random_inputs: tuple[str, ...] = ()
    kind: str = "text"
    query_in_context: bool = False

    def __post_init__(self) -> None:
        if len(self.pairs) < 2:
            raise TaskError(f"text task {self.name!r} needs at least 2 pairs, got {len(self.pairs)}")
        xs = [x for x, _ in self.pairs]
        if len(set(xs)) != len(xs):
            raise TaskError(f"text task {self.name!r} repeats an input")

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(sorted({y for _, y in self.pairs}))

    def max_shots(self) -> int:
        return len(self.pairs) - 1

    def sample(self, k: int, generator: torch.Generator) -> Episode:
        picked = _sample_distinct(self.pairs, k + 1, generator)
        (qx, qy), demos = picked[0], picked[1:]
        return _episode([Demo(x, y, y) for x, y in demos], qx, qy)


def _read_dataset(name: str) -> dict[str, Any]:
    try:
        text = resources.files("induction.datasets").joinpath(f"{name}.json").read_text()
    except FileNotFoundError:
        raise TaskError(f"no shipped dataset {name!r}") from None
    return json.loads(text)


def load_text_task(name: str) -> TextTask:
    """A shipped text task (``antonyms``, ``country_capital``, ``word_category``) with the control words."""
    if name not in TEXT_TASKS:
        raise TaskError(f"unknown text task {name!r}; choose one of {', '.join(TEXT_TASKS)}")
    data = _read_dataset(name)
    controls = _read_dataset("control_words")
    return TextTask(
        name=name, pairs=tuple((str(x), str(y)) for x, y in data["pairs"]), description=data.get("description", ""),
        unrelated=tuple(controls["unrelated_labels"]), random_inputs=tuple(controls["random_inputs"]),
    )


def toy_task(name: str, cfg: FewShotDataConfig, query_in_context: bool = True) -> Task:
    """A token-level task on the layout of `cfg` (``lookup``, ``rule``, ``classification``)."""
    if name == "lookup":
        return LookupTask(cfg.vocab)
    if name == "rule":
        return RuleTask(cfg.vocab, query_in_context)
    if name == "classification":
        return ClassificationTask(cfg.vocab, cfg.n_way, query_in_context)
    raise TaskError(f"unknown toy task {name!r}; choose one of {', '.join(TOY_TASKS)}")


# ---- the training stream -------------------------------------------------------------------------


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


def sample_batch(cfg: FewShotDataConfig, batch: int, generator: torch.Generator) -> Int[Tensor, "batch seq_len"]:
    """Alias of `sample_fewshot_batch`, named like `induction.data.sample_batch` for the trainer."""
    return sample_fewshot_batch(cfg, batch, generator)


# ---- training data selection (for induction.train) -------------------------------------------------

DATA_STREAMS = ("repeated", "fewshot", "mixture")


def training_data(kind: str, d_vocab: int, seq_len: int, bos_token_id: int | None = 0) -> ToyDataConfig | FewShotDataConfig:
    """The training stream called `kind`: "repeated" (`induction.data`), "fewshot" or "mixture" (this module)."""
    if kind not in DATA_STREAMS:
        raise TaskError(f"unknown training data {kind!r}; choose one of {', '.join(DATA_STREAMS)}")
    # Segments hold distinct non-BOS tokens, so a small vocabulary caps their length.
    n_tokens = d_vocab - (bos_token_id is not None)
    max_segment = None if (seq_len - 1) // 2 <= n_tokens else n_tokens
    if kind == "repeated":
        return ToyDataConfig(d_vocab=d_vocab, seq_len=seq_len, max_segment=max_segment, bos_token_id=bos_token_id)
    return FewShotDataConfig(d_vocab=d_vocab, seq_len=seq_len, bos_token_id=bos_token_id, stream=kind,
                             max_segment=max_segment).resolved()


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
