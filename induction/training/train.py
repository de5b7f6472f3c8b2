"""Training: the toy models on the synthetic stream, with checkpoints that show induction heads form.

`train(cfg, out_dir)` writes a run directory::

    out_dir/
      manifest.json                  format_version, train_config, model_config, data, checkpoints, ...
      checkpoints/step_000000/       config.json + model.safetensors + meta.json (`induction.loading.models`)
      checkpoints/step_000001/ ...
      resume/step_000123/            optimizer.safetensors + state.json: what --resume needs

(the format is `induction.loading.runs`).
Checkpoints are taken at step 0, at `n_log_checkpoints` log-spaced steps (so the early plateau and
the phase change are both resolved on a log-step axis, as in Olsson et al. 2022), every
`checkpoint_every` steps, and at the final step. Step s means "after s optimizer updates".

Every write is atomic (temporary sibling + rename) and the manifest is rewritten after each
checkpoint, so a killed run leaves whole checkpoints only, each listed in the manifest once its
resume state is on disk. `train(..., resume=True)` continues from the last listed checkpoint:
weights from the checkpoint, AdamW moments and the data generator's state from ``resume/`` (as
safetensors and JSON; nothing is pickled), and ends with bit-identical checkpoints to an
uninterrupted run.

Reproducibility: the model's initial weights come from `seed` (TL-native init), the data from a
`torch.Generator` seeded with `seed`; the models have no dropout, so there is no other randomness.
Training runs single-threaded (`torch.set_num_threads(1)`, restored afterwards): with a torch build,
the same config then gives bit-identical checkpoints whatever the machine's core count. It costs
little for models this small, and on a busy CPU it is far faster: OpenMP threads that spin-wait for a
core made a 2-thread step up to 20x slower than a 1-thread one on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from circuits.memory import backward_bytes
from induction.common.checks import check_memory, check_min
from induction.common.fileio import json_default, write_json_atomic
from induction.common.provenance import package_versions
from induction.inputs.repeated import ToyDataConfig, segment_cap
from induction.inputs.streams import DataConfig, data_config_from_dict, sample_stream, training_data
from induction.loading.devices import model_device, resolve_device, resolve_dtype
from induction.loading.native import (
    META_FILE,
    ModelLoadError,
    boot_native,
    load_checkpoint,
    native_config,
    read_json,
    save_checkpoint,
)
from induction.loading.runs import (
    CHECKPOINTS_DIR,
    MANIFEST_FILE,
    RESUME_DIR,
    RunExistsError,
    check_empty,
    clean_leftovers,
    drop_resume_states,
    has_training_state,
    load_training_state,
    read_manifest,
    remove_run_files,
    run_checkpoints,
    run_lock,
    save_training_state,
    step_name,
    write_manifest,
)

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
FORMAT_VERSION = 2  # 2: train_config in parts (model / optim / schedule / data); 1 was flat
LOSS_SMOOTHING = 0.9  # EMA factor of the logged train loss (bias-corrected, as Adam's moments)
# What each training stream changes from the defaults (`TrainConfig.for_data`, `induction train --data`),
# as found in the issue-14 research (2-core CPU, under load):
# - prior: 2000 steps; the 2-layer attention-only model then holds the prior (k=0 agreement 1.00) and
#   follows contradicting demonstrations from k=1 (423 s).
# - tasks: a 2-layer model with MLPs over a 64-token vocabulary and context, 2000 steps of 32 sequences;
#   attention-only models only partly separate the tasks (0.64-0.83 at k=16) and carry no function
#   vector, having nothing after the heads that can apply a task to the input (359 s).
DATA_RECIPES: dict[str, dict[str, Any]] = {
    "prior": {"steps": 2000},
    "tasks": {"attn_only": False, "d_vocab": 64, "n_ctx": 64, "steps": 2000, "batch_size": 32},
}

__all__ = ["ModelConfig", "OptimConfig", "RunExistsError", "ScheduleConfig", "TrainConfig", "train"]


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
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
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
        return cls(**parts, data=data, seed=d.get("seed", 0))


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    wait: bool = False,
) -> Path:
    """Train `cfg`'s model on its synthetic stream, writing a run directory (module docstring).

    Args:
        cfg: the run's settings.
        out_dir: the run directory; it must not exist, or be empty, unless `resume`.
        resume: continue the run in `out_dir` from its last checkpoint (start afresh if it has
            none). Its saved train_config must equal `cfg`.
        progress: show a tqdm bar with the smoothed loss on stderr.
        stop_after: stop once this many steps are done, without a final checkpoint, as if the
            process were killed there (for tests of `resume`, and for training in slices).
        device: where to train (`induction.loading.devices`; "auto": CUDA when available). The default is
            the CPU, where runs are bit-reproducible (GPU kernels need not be).
        dtype: the precision of the forward and backward passes (autocast); weights and AdamW
            moments stay in float32. None or float32: full precision.
        wait: when another process is writing `out_dir`, wait for it (True) instead of refusing.

    Returns:
        The run directory.

    Raises:
        RunExistsError: `out_dir` holds files and `resume` is False.
        RunBusyError: another process is writing `out_dir` (and `wait` is False).
        ResourceError: a training step would need more memory than the device has.
        ValueError: resuming with a different config, or a run whose resume state is missing.
    """
    out_dir = Path(out_dir)
    target, precision = resolve_device(device), resolve_dtype(dtype)
    check_memory(f"a training step of {cfg.batch_size} sequences", step_memory(cfg), target)
    with run_lock(out_dir, wait=wait):
        return _train_locked(cfg, out_dir, resume, progress, stop_after, target, precision)


def step_memory(cfg: TrainConfig) -> int:
    """One training step's activations, forward and backward, in float32: the memory rule's backward
    through every layer (`circuits.memory.backward_bytes`)."""
    m = cfg.model
    return backward_bytes(d_model=m.d_model, d_mlp=0 if m.attn_only else (m.d_mlp or 4 * m.d_model), n_heads=m.n_heads,
                          d_vocab=m.d_vocab, batch=cfg.batch_size, n_pos=cfg.data.seq_len, element_size=4,
                          graph_layers=m.n_layers)


def _train_locked(cfg: TrainConfig, out_dir: Path, resume: bool, progress: bool, stop_after: int | None,
                  target: torch.device, precision: torch.dtype) -> Path:
    state = _resume_state(cfg, out_dir) if resume else None
    if state is None:
        check_empty(out_dir, resume)
        remove_run_files(out_dir)  # a run that never saved a checkpoint is replaced whole
        state = _fresh_state(cfg, out_dir)
    manifest = state[-1]
    start = manifest["checkpoints"][-1]["step"] if manifest["checkpoints"] else 0
    if start >= cfg.steps:
        return out_dir
    if target != model_device(state[0]):
        state[0].to(target)
        state[1].load_state_dict(state[1].state_dict())  # moves AdamW's resumed moments to the parameters' device
    state[-1].setdefault("hardware", []).append({"from_step": start, "device": str(target),
                                                 "autocast": str(precision).replace("torch.", "")})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_loop(cfg, out_dir, state, start, progress, stop_after, precision)
    finally:
        torch.set_num_threads(threads)


def _train_loop(cfg: TrainConfig, out_dir: Path, state, start: int, progress: bool, stop_after: int | None,
                precision: torch.dtype = torch.float32) -> Path:
    model, optimizer, generator, ema, manifest = state
    device = model_device(model)
    autocast = torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32)
    schedule = cfg.checkpoint_steps()
    begin = time.perf_counter()
    wall_before = float(manifest.get("train_seconds", 0.0))
    if not manifest["checkpoints"]:
        _checkpoint(model, optimizer, generator, ema, 0, cfg, out_dir, manifest, initial_loss(model, cfg, generator))
    pending = [s for s in schedule if s > start]
    end = cfg.steps if stop_after is None else min(cfg.steps, max(start, stop_after))
    model.train()
    bar = tqdm(total=cfg.steps, initial=start, desc="training", unit="step", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for step in range(start, end):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_at(step)
            tokens = sample_stream(cfg.data, cfg.batch_size, generator).to(device)
            with autocast:
                loss = model(tokens, return_type="loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            ema.update(loss.item())
            bar.update(1)
            if bar.n % 10 == 0 or step + 1 == end:
                bar.set_postfix(loss=f"{ema.value:.3f}", refresh=False)
            if pending and step + 1 == pending[0]:
                pending.pop(0)
                manifest["train_seconds"] = round(wall_before + time.perf_counter() - begin, 3)
                manifest.setdefault("checkpoint_seconds", {})[str(step + 1)] = manifest["train_seconds"]
                _checkpoint(model, optimizer, generator, ema, step + 1, cfg, out_dir, manifest, ema.value)
    finally:
        bar.close()
        model.eval()
    return out_dir


def initial_loss(model: TransformerBridge, cfg: TrainConfig, generator: torch.Generator) -> float:
    """Loss at step 0: on the first training batch, drawn from a copy so the stream is unchanged."""
    peek = torch.Generator(device="cpu").set_state(generator.get_state())
    with torch.no_grad():
        tokens = sample_stream(cfg.data, cfg.batch_size, peek).to(model_device(model))
        return float(model(tokens, return_type="loss"))


@dataclass
class SmoothedLoss:
    """Bias-corrected exponential moving average of the train loss (factor `LOSS_SMOOTHING`)."""

    avg: float = 0.0
    count: int = 0

    def update(self, loss: float) -> None:
        self.avg = LOSS_SMOOTHING * self.avg + (1 - LOSS_SMOOTHING) * loss
        self.count += 1

    @property
    def value(self) -> float:
        if self.count == 0:
            return float("nan")
        return self.avg / (1 - LOSS_SMOOTHING**self.count)


# ---- starting and resuming -----------------------------------------------------------------------

def _make_optimizer(cfg: TrainConfig, model: TransformerBridge) -> torch.optim.AdamW:
    # foreach=False pins the single-tensor implementation (torch's CPU default today), so the bits do
    # not change if a later torch switches the default to multi-tensor kernels.
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr_at(0), betas=cfg.optim.betas,
                             weight_decay=cfg.optim.weight_decay, foreach=False)


def _meta(cfg: TrainConfig, step: int, loss: float) -> dict[str, Any]:
    """A checkpoint's meta.json: everything in it follows from the config, the step and the loss."""
    return {
        "step": step, "tokens_seen": step * cfg.batch_size * cfg.data.seq_len, "loss": loss,
        "lr": cfg.lr_at(max(step - 1, 0)), "data": cfg.data.to_dict(), "bos_token_id": cfg.data.bos_token_id,
        "seed": cfg.seed,
    }


def _repair_meta(ckpt_dir: Path, meta: dict[str, Any]) -> None:
    """Rewrite a missing or damaged meta.json of the checkpoint a run resumes from (it holds nothing
    the manifest and the config do not), so a resumed run never ends with an unreadable checkpoint."""
    try:
        current = read_json(ckpt_dir / META_FILE, "checkpoint meta")
    except ModelLoadError:
        current = None
    if current != json.loads(json.dumps(meta, default=json_default)):
        write_json_atomic(ckpt_dir / META_FILE, meta)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}, to name the fields two configs differ in."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _fresh_state(cfg: TrainConfig, out_dir: Path):
    model = boot_native(cfg.model_config())
    optimizer = _make_optimizer(cfg, model)
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": "induction-training-run",
        "train_config": cfg.to_dict(),
        "resolved": {"lr": cfg.resolved_lr, "warmup_steps": cfg.resolved_warmup_steps, "batch_size": cfg.batch_size},
        "model_config": cfg.model_config(),
        "data": cfg.data.to_dict(),
        "checkpoint_steps": cfg.checkpoint_steps(),
        "checkpoints": [],
        "complete": False,
        "train_seconds": 0.0,
        "checkpoint_seconds": {"0": 0.0},  # step -> training wall time when it was saved (not part of the bits)
        "versions": package_versions(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(out_dir, manifest)
    return model, optimizer, generator, SmoothedLoss(), manifest


def _resume_state(cfg: TrainConfig, out_dir: Path):
    """The state to continue from, or None when `out_dir` holds no run yet (or one without checkpoints)."""
    if not (out_dir / MANIFEST_FILE).exists():
        return None
    manifest = read_manifest(out_dir)
    if not manifest["checkpoints"]:
        return None  # nothing was saved: start afresh, whatever config the aborted start had
    saved = TrainConfig.from_dict(manifest.get("train_config") or {}).to_dict()
    wanted = cfg.to_dict()
    if saved != wanted:
        a, b = _flatten(saved), _flatten(wanted)
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise ValueError(f"cannot resume {out_dir}: its train_config differs in {', '.join(diff) or 'format'}")
    last = manifest["checkpoints"][-1]
    step = int(last["step"])
    clean_leftovers(out_dir, keep=step_name(step))
    resume_dir = out_dir / RESUME_DIR / step_name(step)
    if not has_training_state(resume_dir):
        raise ValueError(f"cannot resume {out_dir}: the training state of step {step} ({resume_dir}) is missing")
    ckpt_dir = dict(run_checkpoints(out_dir))[step]
    _repair_meta(ckpt_dir, _meta(cfg, step, last["loss"]))
    model = load_checkpoint(ckpt_dir)
    optimizer = _make_optimizer(cfg, model)
    generator = torch.Generator(device="cpu")
    extra = load_training_state(resume_dir, optimizer, generator)
    ema = SmoothedLoss(avg=float(extra["loss_avg"]), count=int(extra["loss_count"]))
    manifest["train_config"] = wanted
    return model, optimizer, generator, ema, manifest


# ---- saving --------------------------------------------------------------------------------------

def _checkpoint(
    model: TransformerBridge,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    ema: SmoothedLoss,
    step: int,
    cfg: TrainConfig,
    out_dir: Path,
    manifest: dict[str, Any],
    loss: float,
) -> None:
    """Save weights, then the resume state, then list the checkpoint in the manifest; then drop the
    previous resume state. A kill at any point leaves the manifest naming whole checkpoints only,
    the last of which has its resume state."""
    name = step_name(step)
    meta = _meta(cfg, step, loss)
    tokens_seen = meta["tokens_seen"]
    save_checkpoint(model, out_dir / CHECKPOINTS_DIR / name, meta)
    save_training_state(out_dir / RESUME_DIR / name, optimizer, generator,
                        {"step": step, "loss_avg": ema.avg, "loss_count": ema.count})
    entry = {"step": step, "path": f"{CHECKPOINTS_DIR}/{name}", "tokens_seen": tokens_seen, "loss": loss}
    manifest["checkpoints"] = [c for c in manifest["checkpoints"] if c["step"] != step] + [entry]
    manifest["complete"] = step == cfg.steps
    write_manifest(out_dir, manifest)
    drop_resume_states(out_dir, keep=name)
