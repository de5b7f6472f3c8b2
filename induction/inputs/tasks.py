"""Few-shot tasks: what a prompt's demonstrations and query are, before they become tokens.

A few-shot prompt is k demonstrations ``x SEP y DELIM`` followed by a query ``x SEP``; the answer is
the query's ``y``. The toy tasks default to the same format without SEP (``x y DELIM`` ... ``x``),
where an ordinary one-token induction head answers a lookup: trained with `induction/train.py`'s
defaults (1000 steps, lr 1e-2, batch 16), the default 2-layer attention-only model reaches lookup
accuracy 0.96-1.0 for k = 1..16 in that format but only 0.44 (k=1) falling to 0.08 (k=16) with SEP,
still so after 8000 steps (answering from ``x SEP`` needs a two-token match, which it had not
learnt). ``sep=True`` keeps the SEP format; SEP stays reserved either way, so the layout is the same. This module defines the tasks as samplers of `Episode`s (the demonstrations and the
query as task symbols); `induction.measures.fewshot` manipulates their labels, renders them to tokens and
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
- ``prior``: the ``rule`` task under the name of what it is in a model trained on ``--data prior``
  (`FewShotDataConfig`, ``stream="prior"``): the mapping held fixed through training, so gold labels
  agree with the model's prior and flipped labels contradict it (Wei et al. 2023).

Task-inference tasks (`FUNCTION_TASKS`, for a model trained on ``--data tasks``, on the layout of
`induction.inputs.stream_configs.TasksDataConfig`): ``succ``, ``pred``, ``perm``, ``perm2``, ``class``, ``copy``, each
a fixed function of the input. The query's input is never among the demonstrations by default, so
the answer needs both which task the demonstrations show and the function itself.

The toy vocabulary layout (`ToyVocab`), for ``d_vocab`` V and a BOS token (0 by default):
``SEP = V - 2`` and ``DELIM = V - 1`` are reserved; the remaining "content" tokens, in increasing order,
are split into ``inputs`` (the first half of the pool), ``labels`` (the second half) and, last,
``unrelated`` (`n_unrelated` tokens that no task uses as a gold input or label: the label manipulations
draw their substitutes from them). ``rule`` maps ``inputs[:rule_size]`` onto ``labels[:rule_size]``;
``classification`` takes its exemplars from the inputs after the rule's and its class labels from the
labels after the rule's; ``lookup`` uses all of ``inputs`` and ``labels`` (disjoint, so an input never
doubles as a label).

Text tasks (models with a tokenizer): small datasets shipped in `induction.inputs.datasets` (``antonyms``,
``country_capital``, ``word_category``), rendered as ``"hot -> cold\\n"`` lines; the query pair is
never among the demonstrations, so the model answers from what it knows plus the format.

`sample_fewshot_batch(cfg, batch, generator)` is the training stream (same signature as
`induction.inputs.repeated.sample_batch`): sequences of demonstrations of one task each, filling the context, so
that a toy model trained on it performs the tasks; ``stream="mixture"`` mixes in the repeated-segment
stream of `induction.inputs.repeated`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Hashable

import torch

from induction.common.checks import check_choice
from induction.inputs.stream_configs import FewShotDataConfig, ToyVocab
from induction.inputs.task_inference import FUNCTION_TASKS, TaskError, TasksDataConfig, TasksVocab

TOY_TASKS = ("lookup", "rule", "classification", "prior")
TEXT_TASKS = ("antonyms", "country_capital", "word_category")
TASKS = TOY_TASKS + FUNCTION_TASKS + TEXT_TASKS


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
            `gold` unless a label manipulation changed it; see `induction.measures.fewshot.manipulate`).
    """

    demos: tuple[Demo, ...]
    query: Hashable
    gold: Hashable
    answer: Hashable

    @property
    def k(self) -> int:
        return len(self.demos)


def _randint(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator, device="cpu"))


def _choice(items: tuple | list, generator: torch.Generator) -> Any:
    return items[_randint(len(items), generator)]


def _sample_distinct(items: tuple | list, n: int, generator: torch.Generator) -> list:
    if n > len(items):
        raise TaskError(f"cannot draw {n} distinct items from {len(items)}")
    return [items[int(i)] for i in torch.randperm(len(items), generator=generator, device="cpu")[:n]]


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
    """The fixed bijection `ToyVocab.rule`; the query's input is shown once when `query_in_context`.

    Named ``prior`` (`name`) on a model trained on ``--data prior``, where the rule is the prior.
    """

    def __init__(self, vocab: ToyVocab, query_in_context: bool = True, name: str = "rule"):
        self.name, self.kind, self.vocab = name, "toy", vocab
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


class FunctionTask(Task):
    """A task of the task-inference layout (`TasksDataConfig`): y = f(x) for a fixed function f.

    The demonstrations' inputs are distinct; the query's input is one of them when
    `query_in_context`, else (the default) a further input, so that the answer is not in the prompt.
    Its label space is the function's outputs (the inputs, or the class labels for ``class``).
    """

    def __init__(self, vocab: TasksVocab, name: str, query_in_context: bool = False):
        if name not in vocab.functions:
            raise TaskError(f"task {name!r} is not one of this model's tasks ({', '.join(vocab.functions)})")
        self.name, self.kind, self.vocab = name, "toy", vocab
        self.labels, self.unrelated, self.random_inputs = vocab.label_space(name), vocab.unrelated, vocab.unrelated
        self.query_in_context = query_in_context

    def max_shots(self) -> int:
        return len(self.vocab.inputs) - (not self.query_in_context)

    def sample(self, k: int, generator: torch.Generator) -> Episode:
        f = lambda x: self.vocab.apply(self.name, x)  # noqa: E731
        if self.query_in_context and k:
            xs = _sample_distinct(self.vocab.inputs, k, generator)
            query = xs[_randint(k, generator)]
        else:
            xs = _sample_distinct(self.vocab.inputs, k + 1, generator)
            query = xs[k]
        return _episode([Demo(x, f(x), f(x)) for x in xs[:k]], query, f(query))


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
        text = resources.files("induction.inputs.datasets").joinpath(f"{name}.json").read_text()
    except FileNotFoundError:
        raise TaskError(f"no shipped dataset {name!r}") from None
    return json.loads(text)


def load_text_task(name: str) -> TextTask:
    """A shipped text task (``antonyms``, ``country_capital``, ``word_category``) with the control words."""
    if name not in TEXT_TASKS:
        check_choice("text task", name, TEXT_TASKS, TaskError)
    data = _read_dataset(name)
    controls = _read_dataset("control_words")
    return TextTask(
        name=name, pairs=tuple((str(x), str(y)) for x, y in data["pairs"]), description=data.get("description", ""),
        unrelated=tuple(controls["unrelated_labels"]), random_inputs=tuple(controls["random_inputs"]),
    )


def toy_task(name: str, cfg: FewShotDataConfig | TasksDataConfig, query_in_context: bool | None = None) -> Task:
    """A token-level task on the layout of `cfg`: ``lookup``, ``rule``, ``classification``, ``prior``
    on a `FewShotDataConfig`; the config's own tasks on a `TasksDataConfig`.

    `query_in_context` None means each task's default: shown for the few-shot tasks, not shown for
    the task-inference tasks.
    """
    if isinstance(cfg, TasksDataConfig):
        if name not in cfg.tasks:
            raise TaskError(f"this model was trained on the tasks stream; its tasks are {', '.join(cfg.tasks)}, "
                            f"not {name!r}")
        return FunctionTask(cfg.vocab, name, bool(query_in_context))
    if name in FUNCTION_TASKS:
        raise TaskError(f"task {name!r} needs a model trained on `induction train --data tasks`")
    query_in_context = True if query_in_context is None else query_in_context
    if name == "lookup":
        return LookupTask(cfg.vocab)
    if name in ("rule", "prior"):
        return RuleTask(cfg.vocab, query_in_context, name)
    if name == "classification":
        return ClassificationTask(cfg.vocab, cfg.n_way, query_in_context)
    check_choice("toy task", name, TOY_TASKS, TaskError)
    raise AssertionError("unreachable")
