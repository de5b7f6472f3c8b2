"""What a training run is: the model, the optimiser, the schedule, the data and the seed (`TrainConfig`).

The defaults train the toolkit's default toy model; fields left at None take their value from the
model kind (attention-only or GPT-2-style with MLPs), see `DEFAULT_LR` and its neighbours, and
`TrainConfig.for_data` applies a training stream's recipe (`DATA_RECIPES`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

from induction.common.checks import check_min
from induction.inputs.repeated import ToyDataConfig, segment_cap
from induction.inputs.streams import DataConfig, data_config_from_dict, training_data
from induction.loading.native import (
    native_config,
)
from induction.training.interventions import HeadIntervention, check_interventions

# Defaults by model kind, for the fields left at None. GPT-2-style models (LayerNorm + MLP) need a
# lower lr with warm-up (at 1e-2 their attention stayed uniform), and segments of at least 16 tokens:
# with the shortest segments at 4, they learned a shortcut first (layer-0 heads at offsets 11, 23, 35
# solve every period dividing 12, 24 or 36) and then a *shifted* induction circuit built on it
# (layer-1 heads attending 12 tokens after the earlier occurrence), whatever the lr, warm-up or batch
# size; from 16 on, canonical induction heads formed (2 of 2 seeds, batch 32; batch 16 formed none
# by step 3000). See README, "Training recipes".
DEFAULT_LR = {"attn_only": 1e-2, "mlp": 3e-3}  # peak lr when OptimConfig.lr is None


DEFAULT_WARMUP = {"attn_only": 0, "mlp": 400}  # warm-up steps when ScheduleConfig.warmup_steps is None


DEFAULT_BATCH = {"attn_only": 16, "mlp": 32}  # sequences per update when OptimConfig.batch_size is None


DEFAULT_MIN_SEGMENT = {"attn_only": 4, "mlp": 16}  # shortest repeated segment of the default data


# What each training stream changes from the defaults (`TrainConfig.for_data`, `induction train --data`):
# - prior: 2000 steps, so that the 2-layer attention-only model holds the prior at k = 0 and follows
#   contradicting demonstrations from k = 1;
# - tasks: a 2-layer model with MLPs (attention-only models have nothing after the heads that can apply
#   a task to the input, so they carry no function vector). README, "Training recipes", has the numbers.
DATA_RECIPES: dict[str, dict[str, Any]] = {
    "prior": {"steps": 2000},
    "tasks": {"attn_only": False, "d_vocab": 64, "n_ctx": 64, "steps": 2000, "batch_size": 32},
}


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class ModelConfig:
    """The TL-native toy transformer (`induction.loading.native.native_config`).

    Attributes:
        n_layers: transformer blocks. 2 (default) forms induction heads; 1 cannot (an induction
            head needs a previous-token head in an earlier layer to compose with).
        d_model: residual width (64); d_head = d_model / n_heads.
        n_heads: heads per layer (4).
        n_ctx: context length (128); the data's sequences fill it.
        d_vocab: vocabulary size, BOS included (128).
        attn_only: True (default): attention-only, no LayerNorm. False: GPT-2 style, LayerNorm
            (pre-LN) and a GELU MLP of width `d_mlp` in every block.
        d_mlp: MLP width when attn_only is False; None means 4 * d_model.
    """

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    n_ctx: int = 128
    d_vocab: int = 128
    attn_only: bool = True
    d_mlp: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "n_ctx", "d_vocab"):
            _positive_int(name, getattr(self, name))
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.d_mlp is not None:
            _positive_int("d_mlp", self.d_mlp)

    def native_config(self, seed: int) -> dict[str, Any]:
        """The TL-native config.json dict of this model, initialised from `seed`."""
        extra: dict[str, Any] = {}
        if not self.attn_only:
            extra = dict(normalization_type="LN", d_mlp=self.d_mlp or 4 * self.d_model)
        return native_config(n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads, n_ctx=self.n_ctx,
                             d_vocab=self.d_vocab, attn_only=self.attn_only, seed=seed, **extra)


@dataclass
class OptimConfig:
    """AdamW, one batch per update.

    Attributes:
        lr: peak learning rate; None means 1e-2 for attention-only models and 3e-3 for GPT-2-style
            models, which with LayerNorm and MLPs stay at uniform attention at higher rates.
        batch_size: sequences per update; None means 16 for attention-only models and 32 for
            GPT-2-style ones.
        weight_decay: decoupled weight decay (0.0).
        betas: AdamW betas ((0.9, 0.99)).
        grad_clip: clip the global gradient norm to this (1.0); None disables clipping.
    """

    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float = 0.0
    betas: Sequence[float] = (0.9, 0.99)
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number or None, got {self.lr!r}")
        check_min("weight_decay", self.weight_decay, 0)
        self.betas = tuple(float(b) for b in self.betas)  # JSON gives a list
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")


@dataclass
class ScheduleConfig:
    """How long to train, the learning-rate warm-up, and when to save checkpoints.

    Attributes:
        steps: optimizer updates (1000). The default model's phase change comes at ~400-600 steps.
        warmup_steps: linear warm-up from 0 to the peak lr; None means 0 for attention-only models
            and 400 for GPT-2-style ones (without it their attention stayed uniform). Constant after.
        n_log_checkpoints: checkpoints at this many log-spaced steps in [1, steps] (24), so the
            early plateau and the phase change are both resolved on a log-step axis.
        checkpoint_every: also a checkpoint every this many steps (50); 0 disables. Step 0 and the
            final step are always saved.
    """

    steps: int = 1000
    warmup_steps: int | None = None
    n_log_checkpoints: int = 24
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        _positive_int("steps", self.steps)
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0 or None, got {self.warmup_steps!r}")
        check_min("n_log_checkpoints", self.n_log_checkpoints, 0)
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: off), got {self.checkpoint_every}")

    def checkpoint_steps(self) -> list[int]:
        """Every step at which a checkpoint is saved, ascending."""
        steps = {0, self.steps}
        n = self.n_log_checkpoints
        if n == 1:
            steps.add(1)
        elif n > 1:
            top = math.log(self.steps)
            steps |= {int(round(math.exp(top * i / (n - 1)))) for i in range(n)}
        if self.checkpoint_every:
            steps |= set(range(self.checkpoint_every, self.steps + 1, self.checkpoint_every))
        return sorted(s for s in steps if 0 <= s <= self.steps)


_PARTS = {"model": ModelConfig, "optim": OptimConfig, "schedule": ScheduleConfig}


@dataclass
class TrainConfig:
    """A training run: the model, the optimiser, the schedule, the data, and the seed.

    The defaults train the toolkit's default toy model. `TrainConfig.from_flat(n_layers=1,
    steps=300)` routes each field name to its part.

    Attributes:
        model: `ModelConfig`.
        optim: `OptimConfig`.
        schedule: `ScheduleConfig`.
        data: the synthetic stream: `induction.inputs.repeated.ToyDataConfig` (repeated segments),
            `induction.inputs.stream_configs.FewShotDataConfig` (few-shot sequences, a mixture, or a learned prior)
            or `induction.inputs.stream_configs.TasksDataConfig` (task inference); see
            `induction.inputs.streams.training_data`. None means repeated segments filling the context
            (`ToyDataConfig(d_vocab, seq_len=n_ctx)`). Its d_vocab must equal the model's and its
            seq_len fit the context.
        seed: seeds the initial weights (TL-native init) and the data stream (0).
        interventions: heads zeroed, mean-ablated or frozen at every training step of a window
            (`induction.training.interventions.HeadIntervention`; empty: none). Dicts are read as
            HeadIntervention fields.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig | None = None
    seed: int = 0
    interventions: Sequence[HeadIntervention | dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        self.interventions = check_interventions(self.interventions, self.model.n_layers, self.model.n_heads, self.steps)
        if self.data is None:
            # The shortest segment of the default data depends on the model kind (DEFAULT_MIN_SEGMENT),
            # within what the vocabulary and context allow.
            cap = segment_cap(self.model.d_vocab - 1, self.model.n_ctx - 1)
            self.data = ToyDataConfig(d_vocab=self.model.d_vocab, seq_len=self.model.n_ctx,
                                      min_segment=max(2, min(DEFAULT_MIN_SEGMENT[self.kind], cap)))
        if self.data.d_vocab != self.model.d_vocab:
            raise ValueError(f"data.d_vocab ({self.data.d_vocab}) must equal d_vocab ({self.model.d_vocab})")
        if self.data.seq_len > self.model.n_ctx:
            raise ValueError(f"data.seq_len ({self.data.seq_len}) exceeds the context n_ctx ({self.model.n_ctx})")

    @classmethod
    def from_flat(cls, data: DataConfig | dict | None = None, seed: int = 0,
                  **fields_: Any) -> "TrainConfig":
        """A config from field names alone (``n_layers``, ``lr``, ``steps``, ...), each routed to its part."""
        parts: dict[str, dict[str, Any]] = {name: {} for name in _PARTS}
        owner = {f.name: name for name, part in _PARTS.items() for f in fields(part)}
        unknown = sorted(set(fields_) - set(owner))
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        for key, value in fields_.items():
            parts[owner[key]][key] = value
        if isinstance(data, dict):
            data = data_config_from_dict(data)
        return cls(**{name: _PARTS[name](**values) for name, values in parts.items()}, data=data, seed=seed)

    @classmethod
    def for_data(cls, kind: str, seed: int = 0, **fields_: Any) -> "TrainConfig":
        """The run ``induction train --data KIND`` makes: the stream's recipe (`DATA_RECIPES`), any
        field in `fields_` (flat names, as `from_flat`) overriding it, on
        `induction.inputs.streams.training_data(kind, d_vocab, n_ctx)`."""
        flat = {**DATA_RECIPES.get(kind, {}), **fields_}
        base = cls.from_flat(seed=seed, **flat)
        return cls.from_flat(data=training_data(kind, base.model.d_vocab, base.model.n_ctx), seed=seed, **flat)

    @property
    def kind(self) -> str:
        """"attn_only" or "mlp": what the defaults left at None resolve by."""
        return "attn_only" if self.model.attn_only else "mlp"

    @property
    def resolved_lr(self) -> float:
        if self.optim.lr is not None:
            return self.optim.lr
        return DEFAULT_LR[self.kind]

    @property
    def batch_size(self) -> int:
        return self.optim.batch_size if self.optim.batch_size is not None else DEFAULT_BATCH[self.kind]

    @property
    def resolved_warmup_steps(self) -> int:
        if self.schedule.warmup_steps is not None:
            return self.schedule.warmup_steps
        return DEFAULT_WARMUP[self.kind]

    @property
    def steps(self) -> int:
        return self.schedule.steps

    def model_config(self) -> dict[str, Any]:
        """The TL-native config.json dict of the model this run trains."""
        return self.model.native_config(self.seed)

    def lr_at(self, step: int) -> float:
        """Learning rate of the update that takes the model from `step` to `step + 1`."""
        warmup = self.resolved_warmup_steps
        if warmup and step < warmup:
            return self.resolved_lr * (step + 1) / warmup
        return self.resolved_lr

    def checkpoint_steps(self) -> list[int]:
        return self.schedule.checkpoint_steps()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["optim"]["betas"] = list(self.optim.betas)
        out["data"] = self.data.to_dict()
        if not self.interventions:  # runs without interventions keep the dict (and cache keys) they had
            out.pop("interventions")
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; also reads format 1's flat dicts. Unknown keys are an error."""
        d = dict(d)
        if not any(name in d for name in _PARTS):  # format 1: flat
            return cls.from_flat(**d)
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        parts = {name: part(**d[name]) for name, part in _PARTS.items() if name in d}
        data = data_config_from_dict(d["data"]) if isinstance(d.get("data"), dict) else d.get("data")
        return cls(**parts, data=data, seed=d.get("seed", 0), interventions=d.get("interventions") or [])
