"""The task-inference layout (`TasksVocab`, `TasksDataConfig`, ``induction train --data tasks``).

A second layout, separate from the few-shot one (`induction.inputs.stream_configs`): ``n_inputs``
input tokens, ``n_classes`` class labels, unrelated tokens, and the same reserved SEP and DELIM;
every task (`FUNCTION_TASKS`) is a fixed function of the input. `TaskError` is the error of every
few-shot and task setting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import torch

FUNCTION_TASKS = ("succ", "pred", "perm", "perm2", "class", "copy")


class TaskError(ValueError):
    """A task, its settings or its prompts that cannot be built (names the allowed values)."""


@dataclass
class TasksDataConfig:
    """The task-inference layout and training stream: several fixed functions over one vocabulary.

    Layout, for ``d_vocab`` V: the content tokens (all but BOS, SEP = V - 2 and DELIM = V - 1), in
    increasing order, are split into `n_inputs` inputs x_0..x_{n-1}, `n_classes` class labels and,
    last, the unrelated tokens that no task uses. The tasks (`FUNCTION_TASKS`) are fixed functions
    of the input's index i, drawn once from `task_seed`:

    - ``succ``: x_i -> x_{i+1 mod n}; ``pred``: x_i -> x_{i-1 mod n}; ``copy``: x_i -> x_i.
    - ``perm``: x_i -> x_{pi(i)}, pi a fixed permutation with pi(i) not in {i-1, i, i+1};
      ``perm2``: another such permutation that differs from ``perm`` at every input.
    - ``class``: x_i -> one of the class labels (a fixed partition of the inputs into equal classes).

    Every training sequence is BOS + demonstrations ``x y DELIM`` (``x SEP y DELIM`` with `sep`) of
    one task, drawn by `task_weights`, inputs uniform with replacement. The tasks that map inputs to
    inputs share their output space, so only the input-label relation of a demonstration tells
    which task a sequence is (one demonstration suffices); ``class`` is told by its label space.

    Attributes:
        d_vocab: vocabulary size, BOS and the two reserved tokens included.
        seq_len: tokens per training sequence, BOS included.
        bos_token_id: the token at position 0, or None for no BOS.
        sep: demonstrations read ``x SEP y DELIM`` (query ``x SEP``); False: ``x y DELIM``.
        n_inputs: input tokens, the domain of every task (>= 4).
        n_classes: class labels reserved for ``class`` (>= 2, dividing n_inputs).
        tasks: the stream's tasks, names from `FUNCTION_TASKS`. The default has the three tasks that
            share their output space: their function vectors all lift zero-shot accuracy, while
            ``class``'s does not (docs in README, "Function vectors").
        task_weights: relative frequency of each task's sequences (None: uniform).
        task_seed: seeds the permutations and the class partition (not the sequences).
        stream: "tasks" (what a trained model records, so its prompts use this layout).
    """

    d_vocab: int = 64
    seq_len: int = 64
    bos_token_id: int | None = 0
    sep: bool = False
    n_inputs: int = 32
    n_classes: int = 8
    tasks: tuple[str, ...] = ("succ", "pred", "perm")
    task_weights: tuple[float, ...] | None = None
    task_seed: int = 0
    stream: str = "tasks"

    def __post_init__(self) -> None:
        self.tasks = tuple(str(t) for t in self.tasks)
        if self.task_weights is not None:
            self.task_weights = tuple(float(w) for w in self.task_weights)
        if self.stream != "tasks":
            raise TaskError(f"TasksDataConfig.stream must be 'tasks', got {self.stream!r}")
        if not self.tasks:
            raise TaskError("tasks: give at least one task")
        for name in self.tasks:
            if name not in FUNCTION_TASKS:
                raise TaskError(f"unknown task {name!r}; choose from {', '.join(FUNCTION_TASKS)}")
        if len(set(self.tasks)) != len(self.tasks):
            raise TaskError(f"tasks repeated in {list(self.tasks)}")
        if self.task_weights is not None and (
            len(self.task_weights) != len(self.tasks) or min(self.task_weights) < 0 or sum(self.task_weights) <= 0
        ):
            raise TaskError(f"task_weights must be {len(self.tasks)} non-negative weights (one per task), "
                            f"got {self.task_weights}")
        if self.n_inputs < 4:
            raise TaskError(f"n_inputs must be >= 4, got {self.n_inputs}")
        if self.n_classes < 2 or self.n_inputs % self.n_classes:
            raise TaskError(f"n_classes must be >= 2 and divide n_inputs ({self.n_inputs}), got {self.n_classes}")
        if self.bos_token_id is not None and not 0 <= self.bos_token_id < self.d_vocab - 2:
            raise TaskError(f"bos_token_id must be in [0, d_vocab - 2 = {self.d_vocab - 2}), got {self.bos_token_id}")
        content = self.d_vocab - 2 - (self.bos_token_id is not None)
        if self.n_inputs + self.n_classes + 2 > content:
            raise TaskError(f"the tasks do not fit the vocabulary: {self.n_inputs} inputs + {self.n_classes} class "
                            f"labels + 2 unrelated tokens need {self.n_inputs + self.n_classes + 2} content tokens, "
                            f"d_vocab {self.d_vocab} has {content} (raise d_vocab)")
        if self.seq_len < (self.bos_token_id is not None) + 2 * self.demo_len:
            raise TaskError(f"seq_len {self.seq_len} holds fewer than two demonstrations")
        self.vocab  # validates the layout  # noqa: B018

    @property
    def demo_len(self) -> int:
        return 3 + self.sep

    @cached_property
    def vocab(self) -> "TasksVocab":
        return TasksVocab.build(self)

    def resolved(self) -> "TasksDataConfig":
        """Itself (every size is explicit); for symmetry with `FewShotDataConfig.resolved`."""
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        d["task_weights"] = None if self.task_weights is None else list(self.task_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TasksDataConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "tasks" in known:
            known["tasks"] = tuple(known["tasks"])
        if known.get("task_weights") is not None:
            known["task_weights"] = tuple(float(w) for w in known["task_weights"])
        return cls(**known)

    @staticmethod
    def is_tasks_data(d: dict[str, Any] | None) -> bool:
        """Whether a model's recorded training data (`ModelInfo.data`) is this stream."""
        return isinstance(d, dict) and d.get("stream") == "tasks"


@dataclass(frozen=True)
class TasksVocab:
    """Which token is what in the task-inference layout (`TasksDataConfig`), and each task's function.

    Attributes:
        functions: task name -> its outputs, ``functions[t][i] = f_t(inputs[i])``.
    """

    bos: int | None
    sep: int
    delim: int
    inputs: tuple[int, ...]
    classes: tuple[int, ...]
    unrelated: tuple[int, ...]
    functions: dict[str, tuple[int, ...]] = field(repr=False)
    content: tuple[int, ...] = field(repr=False, default=())

    @classmethod
    def build(cls, cfg: TasksDataConfig) -> "TasksVocab":
        sep, delim = cfg.d_vocab - 2, cfg.d_vocab - 1
        content = tuple(t for t in range(cfg.d_vocab) if t not in (cfg.bos_token_id, sep, delim))
        n = cfg.n_inputs
        inputs, classes = content[:n], content[n : n + cfg.n_classes]
        unrelated = content[n + cfg.n_classes :]
        gen = torch.Generator(device="cpu").manual_seed(cfg.task_seed)

        def far_permutation(avoid: list[list[int]]) -> list[int]:
            # Rejection sampling: pi(i) is never i or a neighbour (so perm is not succ, pred or copy
            # anywhere) and differs from every permutation in `avoid` at every input.
            while True:
                p = torch.randperm(n, generator=gen, device="cpu").tolist()
                if all(p[i] not in ((i - 1) % n, i, (i + 1) % n) and all(p[i] != a[i] for a in avoid) for i in range(n)):
                    return p

        perm = far_permutation([])
        perm2 = far_permutation([perm])
        order = torch.randperm(n, generator=gen, device="cpu").tolist()
        cls_of = [0] * n
        for j, i in enumerate(order):
            cls_of[i] = j % cfg.n_classes
        table = {
            "succ": [inputs[(i + 1) % n] for i in range(n)],
            "pred": [inputs[(i - 1) % n] for i in range(n)],
            "perm": [inputs[perm[i]] for i in range(n)],
            "perm2": [inputs[perm2[i]] for i in range(n)],
            "class": [classes[cls_of[i]] for i in range(n)],
            "copy": list(inputs),
        }
        return cls(bos=cfg.bos_token_id, sep=sep, delim=delim, inputs=inputs, classes=classes, unrelated=unrelated,
                   functions={t: tuple(table[t]) for t in cfg.tasks}, content=content)

    def apply(self, task: str, x: int) -> int:
        """f_task(x)."""
        return self.functions[task][self.inputs.index(x)]

    def label_space(self, task: str) -> tuple[int, ...]:
        """The outputs a task can give: the class labels for ``class``, else the inputs."""
        return self.classes if task == "class" else self.inputs
