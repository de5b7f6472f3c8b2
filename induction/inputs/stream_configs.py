"""The toy few-shot vocabularies: which token is what, and the few-shot training streams' settings.

The layout (`ToyVocab`), for ``d_vocab`` V and a BOS token (0 by default): ``SEP = V - 2`` and
``DELIM = V - 1`` are reserved; the remaining "content" tokens, in increasing order, are split into
``inputs`` (the first half of the pool), ``labels`` (the second half) and, last, ``unrelated``
(`n_unrelated` tokens that no task uses as a gold input or label: the label manipulations draw
their substitutes from them). ``rule`` maps ``inputs[:rule_size]`` onto ``labels[:rule_size]``;
``classification`` takes its exemplars from the inputs after the rule's and its class labels from
the labels after the rule's; ``lookup`` uses all of ``inputs`` and ``labels`` (disjoint, so an
input never doubles as a label). With ``stream="prior"`` the rule is the *prior*: a mapping held
fixed across training (so the model stores it in its weights), mixed with sequences that override
it in context (`FewShotDataConfig` attributes).

The task-inference layout (`TasksVocab`, `TasksDataConfig`, ``induction train --data tasks``) is a
second, separate layout: ``n_inputs`` input tokens, ``n_classes`` class labels, unrelated tokens, and
the same reserved SEP and DELIM; every task (`FUNCTION_TASKS`) is a fixed function of the input.
The tasks are in `induction.inputs.tasks`, the streams in `induction.inputs.streams`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import torch

from induction.inputs.repeated import ToyDataConfig
from induction.inputs.task_inference import (  # noqa: F401  (the task names are importable from here, as in 0.1)
    FUNCTION_TASKS,
    TaskError,
    TasksDataConfig,
    TasksVocab,
)

STREAMS = ("fewshot", "mixture", "prior")


def check_key_range(name: str, keys: tuple[int, ...]) -> None:
    if len(keys) != 2 or not 1 <= keys[0] <= keys[1]:
        raise TaskError(f"{name} must be (min, max) with 1 <= min <= max, got {keys}")


@dataclass
class MixtureConfig:
    """The repeated-segment sequences that stream == "mixture" mixes into the few-shot stream.

    Attributes:
        p_repeated: share of repeated-segment sequences, in [0, 1].
        min_segment, max_segment: their segments' lengths (`induction.inputs.repeated.ToyDataConfig`).
    """

    p_repeated: float = 0.5
    min_segment: int = 4
    max_segment: int | None = None

    def __post_init__(self) -> None:
        self.p_repeated = float(self.p_repeated)
        if not 0.0 <= self.p_repeated <= 1.0:
            raise TaskError(f"p_repeated must be in [0, 1], got {self.p_repeated}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MixtureConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class PriorConfig:
    """The learned-prior stream (stream == "prior").

    Each sequence is of one kind, drawn by `weights`. Prior: inputs drawn from the rule's, labelled
    by the rule (the prior, fixed for all of training). Override: a per-sequence injective map from
    `override_keys` of the rule's own inputs to the rule's labels, so that demonstrations
    contradicting the prior occur in training and a flipped-label prompt is in distribution.
    Lookup: as in the few-shot stream (induction over every content token).

    Attributes:
        weights: relative frequency of prior, override and lookup sequences.
        noise: chance that a prior demonstration's label is replaced by a uniformly random rule label
            (0: the prior is never contradicted in prior sequences, so one contradicting
            demonstration proves an override), in [0, 1].
        override_keys: (min, max) distinct inputs of an override sequence.
    """

    weights: tuple[float, ...] = (0.5, 0.25, 0.25)
    noise: float = 0.0
    override_keys: tuple[int, ...] = (4, 16)

    def __post_init__(self) -> None:
        self.weights = tuple(float(w) for w in self.weights)
        self.override_keys = tuple(int(n) for n in self.override_keys)
        self.noise = float(self.noise)
        if len(self.weights) != 3 or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise TaskError(f"prior weights must be 3 non-negative weights (prior, override, lookup), got {self.weights}")
        if not 0.0 <= self.noise <= 1.0:
            raise TaskError(f"prior noise must be in [0, 1], got {self.noise}")
        check_key_range("override_keys", self.override_keys)

    def to_dict(self) -> dict[str, Any]:
        return {"weights": list(self.weights), "noise": self.noise, "override_keys": list(self.override_keys)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PriorConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "weights" in known:  # JSON gives lists (and ints for round floats)
            known["weights"] = tuple(float(w) for w in known["weights"])
        if "override_keys" in known:
            known["override_keys"] = tuple(int(n) for n in known["override_keys"])
        return cls(**known)


FLAT_MIXTURE = ("p_repeated", "min_segment", "max_segment")


FLAT_PRIOR = {"prior_weights": "weights", "prior_noise": "noise", "override_keys": "override_keys"}


"""Where toolkit 0.1's flat FewShotDataConfig fields live now (`FewShotDataConfig.from_dict` migrates them)."""


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
        stream: "fewshot" (every sequence a few-shot sequence), "mixture" (a share of repeated-segment
            sequences mixed in: `mixture`) or "prior" (a learned prior and in-context overrides of it: `prior`).
        task_weights: relative frequency of lookup, rule and classification sequences in the stream.
        lookup_keys: (min, max) distinct inputs of a training lookup sequence (they repeat, so later
            demonstrations are predictable by induction).
        mixture: stream == "mixture" only: its settings (`MixtureConfig`; default when None).
        prior: stream == "prior" only: its settings (`PriorConfig`; default when None).
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
    mixture: MixtureConfig | None = None
    prior: PriorConfig | None = None

    def __post_init__(self) -> None:
        self.task_weights = tuple(float(w) for w in self.task_weights)
        self.lookup_keys = tuple(int(n) for n in self.lookup_keys)
        for name, kind in (("mixture", MixtureConfig), ("prior", PriorConfig)):
            value = getattr(self, name)
            if value is None and self.stream == name:
                value = kind()
            if value is not None and self.stream != name:
                raise TaskError(f"{name} settings apply to stream = {name!r} only; this stream is {self.stream!r}")
            setattr(self, name, value)
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
        check_key_range("lookup_keys", self.lookup_keys)
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
        mix = self.mixture or MixtureConfig()
        return ToyDataConfig(d_vocab=self.d_vocab, seq_len=self.seq_len, min_segment=mix.min_segment,
                             max_segment=mix.max_segment, bos_token_id=self.bos_token_id)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("task_weights", "lookup_keys"):
            d[name] = list(getattr(self, name))
        d["mixture"] = None if self.mixture is None else self.mixture.to_dict()
        d["prior"] = None if self.prior is None else self.prior.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FewShotDataConfig":
        """The config a dict records: this format, or the flat one of toolkit 0.1 (whose stream settings
        sat beside the layout: `p_repeated`, `min_segment`, `max_segment`, `prior_weights`,
        `prior_noise`, `override_keys`), which is migrated into `mixture` / `prior`."""
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "task_weights" in known:  # JSON gives lists (and ints for round floats)
            known["task_weights"] = tuple(float(w) for w in known["task_weights"])
        if "lookup_keys" in known:
            known["lookup_keys"] = tuple(int(n) for n in known["lookup_keys"])
        stream = known.get("stream", "fewshot")
        if stream == "mixture" and known.get("mixture") is None:
            known["mixture"] = MixtureConfig.from_dict({k: d[k] for k in FLAT_MIXTURE if k in d})
        if stream == "prior" and known.get("prior") is None:
            known["prior"] = PriorConfig.from_dict({new: d[old] for old, new in FLAT_PRIOR.items() if old in d})
        for name, kind in (("mixture", MixtureConfig), ("prior", PriorConfig)):
            if stream != name:  # a 0.1 record of another stream carries unused defaults: dropped
                known.pop(name, None)
            elif isinstance(known.get(name), dict):
                known[name] = kind.from_dict(known[name])
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
        gen = torch.Generator(device="cpu").manual_seed(cfg.task_seed)
        perm = torch.randperm(rule_size, generator=gen, device="cpu").tolist()
        rule_inputs = inputs[:rule_size]
        rule_labels = tuple(labels[p] for p in perm)
        pool = list(inputs[rule_size : rule_size + n_classes * per_class])
        order = torch.randperm(len(pool), generator=gen, device="cpu").tolist()
        shuffled = [pool[i] for i in order]
        exemplars = tuple(tuple(sorted(shuffled[c * per_class : (c + 1) * per_class])) for c in range(n_classes))
        class_labels = labels[rule_size : rule_size + n_classes]
        return cls(bos=cfg.bos_token_id, sep=sep, delim=delim, inputs=inputs, labels=labels, unrelated=unrelated,
                   rule_inputs=rule_inputs, rule_labels=rule_labels, class_exemplars=exemplars,
                   class_labels=class_labels, content=content)

    def rule(self, x: int) -> int:
        return self.rule_labels[self.rule_inputs.index(x)]
