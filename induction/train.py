"""Training: the toy models on the synthetic stream, with checkpoints that show induction heads form.

`train(cfg, out_dir)` writes a run directory::

    out_dir/
      manifest.json                  format_version, train_config, model_config, data, checkpoints, ...
      checkpoints/step_000000/       config.json + model.safetensors + meta.json (`induction.models`)
      checkpoints/step_000001/ ...
      resume/step_000123/            optimizer.safetensors + state.json: what --resume needs

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
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from induction.data import ToyDataConfig
from induction.fileio import current_umask, write_json_atomic
from induction.models import (
    CHECKPOINTS_DIR,
    MANIFEST_FILE,
    boot_native,
    load_checkpoint,
    native_config,
    read_manifest,
    save_checkpoint,
)
from induction.tasks import FewShotDataConfig, data_config_from_dict, sample_stream

FORMAT_VERSION = 1
RESUME_DIR = "resume"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
LOSS_SMOOTHING = 0.9  # EMA factor of the logged train loss (bias-corrected, as Adam's moments)


@dataclass
class TrainConfig:
    """Settings of a training run; the defaults train the toolkit's default toy model.

    Model (TL-native, `induction.models.native_config`):
        n_layers: transformer blocks. 2 (default) forms induction heads; 1 cannot (an induction
            head needs a previous-token head in an earlier layer to compose with).
        d_model: residual width (64); d_head = d_model / n_heads.
        n_heads: heads per layer (4).
        n_ctx: context length (128); the data's sequences fill it.
        d_vocab: vocabulary size, BOS included (128).
        attn_only: True (default): attention-only, no LayerNorm. False: GPT-2 style, LayerNorm
            (pre-LN) and a GELU MLP of width `d_mlp` in every block.
        d_mlp: MLP width when attn_only is False; None means 4 * d_model.

    Optimisation (AdamW):
        steps: optimizer updates (1000). The default model's phase change comes at ~400-600 steps.
        batch_size: sequences per update (16).
        lr: peak learning rate; None means 1e-2 for attention-only models and 3e-3 for GPT-2-style
            models, which with LayerNorm and MLPs stay at uniform attention at higher rates.
        warmup_steps: linear warm-up from 0 to lr; None means 0 for attention-only models and 400
            for GPT-2-style ones (without it their attention stayed uniform). Constant lr after it.
        weight_decay: AdamW decoupled weight decay (0.0).
        betas: AdamW betas ((0.9, 0.99)).
        grad_clip: clip the global gradient norm to this (1.0); None disables clipping.
        seed: seeds the initial weights and the data stream (0).

    Checkpoints (step 0 and the final step are always saved):
        n_log_checkpoints: this many log-spaced steps in [1, steps] (24).
        checkpoint_every: also every this many steps (50); 0 disables.

    Data:
        data: the synthetic stream: `induction.data.ToyDataConfig` (repeated segments) or
            `induction.tasks.FewShotDataConfig` (few-shot sequences, or a mixture; see
            `induction.tasks.training_data`); None means
            ToyDataConfig(d_vocab, seq_len=n_ctx, min_segment=4, max_segment=None: (n_ctx - 1) // 2,
            capped at d_vocab - 1). Its d_vocab must equal the model's and its seq_len fit the context.
    """

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    n_ctx: int = 128
    d_vocab: int = 128
    attn_only: bool = True
    d_mlp: int | None = None
    steps: int = 1000
    batch_size: int = 16
    lr: float | None = None
    warmup_steps: int | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float | None = 1.0
    seed: int = 0
    n_log_checkpoints: int = 24
    checkpoint_every: int = 50
    data: ToyDataConfig | FewShotDataConfig | None = None

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "n_ctx", "d_vocab", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.d_mlp is not None and self.d_mlp < 1:
            raise ValueError(f"d_mlp must be a positive integer or None, got {self.d_mlp!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number or None, got {self.lr!r}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0 or None, got {self.warmup_steps!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        self.betas = tuple(float(b) for b in self.betas)  # JSON gives a list
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.n_log_checkpoints < 0:
            raise ValueError(f"n_log_checkpoints must be >= 0, got {self.n_log_checkpoints}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: off), got {self.checkpoint_every}")
        if isinstance(self.data, dict):
            self.data = data_config_from_dict(self.data)
        if self.data is None:
            # Segments hold distinct non-BOS tokens, so a small vocabulary caps their length.
            cap = self.d_vocab - 1
            max_segment = None if (self.n_ctx - 1) // 2 <= cap else cap
            self.data = ToyDataConfig(d_vocab=self.d_vocab, seq_len=self.n_ctx, max_segment=max_segment)
        if self.data.d_vocab != self.d_vocab:
            raise ValueError(f"data.d_vocab ({self.data.d_vocab}) must equal d_vocab ({self.d_vocab})")
        if self.data.seq_len > self.n_ctx:
            raise ValueError(f"data.seq_len ({self.data.seq_len}) exceeds the context n_ctx ({self.n_ctx})")

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-2 if self.attn_only else 3e-3

    @property
    def resolved_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return 0 if self.attn_only else 400

    def model_config(self) -> dict[str, Any]:
        """The TL-native config.json dict of the model this run trains."""
        extra: dict[str, Any] = {}
        if not self.attn_only:
            extra = dict(normalization_type="LN", d_mlp=self.d_mlp or 4 * self.d_model)
        return native_config(
            n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads, n_ctx=self.n_ctx,
            d_vocab=self.d_vocab, attn_only=self.attn_only, seed=self.seed, **extra,
        )

    def lr_at(self, step: int) -> float:
        """Learning rate of the update that takes the model from `step` to `step + 1`."""
        warmup = self.resolved_warmup_steps
        if warmup and step < warmup:
            return self.resolved_lr * (step + 1) / warmup
        return self.resolved_lr

    def checkpoint_steps(self) -> list[int]:
        """Every step at which a checkpoint is saved, ascending (see module docstring)."""
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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["betas"] = list(self.betas)
        out["data"] = self.data.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys are an error (they would be silently dropped)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("betas"), list):
            d["betas"] = tuple(d["betas"])
        if isinstance(d.get("data"), dict):
            d["data"] = data_config_from_dict(d["data"])
        return cls(**d)


class RunExistsError(ValueError):
    """The output directory already holds a run (or other files) and resume was not asked for."""


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
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

    Returns:
        The run directory.

    Raises:
        RunExistsError: `out_dir` holds files and `resume` is False.
        ValueError: resuming with a different config, or a run whose resume state is missing.
    """
    out_dir = Path(out_dir)
    state = _resume_state(cfg, out_dir) if resume else None
    if state is None:
        _check_empty(out_dir, resume)
        state = _fresh_state(cfg, out_dir)
    manifest = state[-1]
    start = manifest["checkpoints"][-1]["step"] if manifest["checkpoints"] else 0
    if start >= cfg.steps:
        return out_dir
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_loop(cfg, out_dir, state, start, progress, stop_after)
    finally:
        torch.set_num_threads(threads)


def _train_loop(cfg: TrainConfig, out_dir: Path, state, start: int, progress: bool, stop_after: int | None) -> Path:
    model, optimizer, generator, ema, manifest = state
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
            tokens = sample_stream(cfg.data, cfg.batch_size, generator)
            loss = model(tokens, return_type="loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
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
    peek = torch.Generator().set_state(generator.get_state())
    with torch.no_grad():
        return float(model(sample_stream(cfg.data, cfg.batch_size, peek), return_type="loss"))


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


def step_name(step: int) -> str:
    return f"step_{step:06d}"


# ---- starting and resuming -----------------------------------------------------------------------

def _make_optimizer(cfg: TrainConfig, model: TransformerBridge) -> torch.optim.AdamW:
    # foreach=False pins the single-tensor implementation (torch's CPU default today), so the bits do
    # not change if a later torch switches the default to multi-tensor kernels.
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr_at(0), betas=cfg.betas,
                             weight_decay=cfg.weight_decay, foreach=False)


def _fresh_state(cfg: TrainConfig, out_dir: Path):
    model = boot_native(cfg.model_config())
    optimizer = _make_optimizer(cfg, model)
    generator = torch.Generator().manual_seed(cfg.seed)
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": "induction-training-run",
        "train_config": cfg.to_dict(),
        "model_config": cfg.model_config(),
        "data": cfg.data.to_dict(),
        "checkpoint_steps": cfg.checkpoint_steps(),
        "checkpoints": [],
        "complete": False,
        "train_seconds": 0.0,
        "checkpoint_seconds": {"0": 0.0},  # step -> training wall time when it was saved (not part of the bits)
        "versions": _versions(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    return model, optimizer, generator, SmoothedLoss(), manifest


def _check_empty(out_dir: Path, resume: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RunExistsError(f"{out_dir} is a file; the run directory must be a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if (out_dir / MANIFEST_FILE).exists() and not resume:
            raise RunExistsError(f"{out_dir} already holds a run; resume it (--resume) or choose another directory")
        if not (out_dir / MANIFEST_FILE).exists():
            raise RunExistsError(f"{out_dir} is not empty and holds no run; choose an empty or new directory")


def _resume_state(cfg: TrainConfig, out_dir: Path):
    """The state to continue from, or None when `out_dir` holds no run yet (or one without checkpoints)."""
    if not (out_dir / MANIFEST_FILE).exists():
        return None
    manifest = read_manifest(out_dir)
    saved = manifest.get("train_config")
    if saved != cfg.to_dict():
        diff = sorted(k for k in set(saved or {}) | set(cfg.to_dict()) if (saved or {}).get(k) != cfg.to_dict().get(k))
        raise ValueError(f"cannot resume {out_dir}: its train_config differs in {', '.join(diff) or 'format'}")
    if not manifest["checkpoints"]:
        _remove_run_files(out_dir)
        return None
    last = manifest["checkpoints"][-1]
    step = int(last["step"])
    _clean_leftovers(out_dir, keep=step_name(step))
    resume_dir = out_dir / RESUME_DIR / step_name(step)
    if not (resume_dir / OPTIMIZER_FILE).exists() or not (resume_dir / STATE_FILE).exists():
        raise ValueError(f"cannot resume {out_dir}: the training state of step {step} ({resume_dir}) is missing")
    model = load_checkpoint(out_dir / last["path"])
    optimizer = _make_optimizer(cfg, model)
    generator = torch.Generator()
    extra = json.loads((resume_dir / STATE_FILE).read_text())
    _load_training_state(resume_dir / OPTIMIZER_FILE, extra, optimizer, generator)
    ema = SmoothedLoss(avg=float(extra["loss_avg"]), count=int(extra["loss_count"]))
    return model, optimizer, generator, ema, manifest


def _remove_run_files(out_dir: Path) -> None:
    """A run killed before its first checkpoint: start it again from nothing."""
    for name in (CHECKPOINTS_DIR, RESUME_DIR):
        shutil.rmtree(out_dir / name, ignore_errors=True)


def _clean_leftovers(out_dir: Path, keep: str) -> None:
    """Remove what a killed run may leave: temporary dirs and resume states other than `keep`'s."""
    for parent in (out_dir / CHECKPOINTS_DIR, out_dir / RESUME_DIR):
        if not parent.is_dir():
            continue
        for child in parent.iterdir():
            # A kill between save_checkpoint's two renames leaves the only copy in `.<name>.old.*/ck`.
            if child.name.startswith(".") and ".old." in child.name and (child / "ck").is_dir():
                name = child.name[1:].split(".old.")[0]
                if not (parent / name).exists():
                    os.replace(child / "ck", parent / name)
            if child.name.startswith(".") or (parent.name == RESUME_DIR and child.name != keep):
                shutil.rmtree(child, ignore_errors=True)


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
    tokens_seen = step * cfg.batch_size * cfg.data.seq_len
    meta = {
        "step": step, "tokens_seen": tokens_seen, "loss": loss, "lr": cfg.lr_at(max(step - 1, 0)),
        "data": cfg.data.to_dict(), "bos_token_id": cfg.data.bos_token_id, "seed": cfg.seed,
    }
    save_checkpoint(model, out_dir / CHECKPOINTS_DIR / name, meta)
    _save_training_state(out_dir / RESUME_DIR / name, optimizer, generator, ema, step)
    entry = {"step": step, "path": f"{CHECKPOINTS_DIR}/{name}", "tokens_seen": tokens_seen, "loss": loss}
    manifest["checkpoints"] = [c for c in manifest["checkpoints"] if c["step"] != step] + [entry]
    manifest["complete"] = step == cfg.steps
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    for old in (out_dir / RESUME_DIR).iterdir():
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _save_training_state(
    directory: Path, optimizer: torch.optim.Optimizer, generator: torch.Generator, ema: SmoothedLoss, step: int
) -> None:
    """AdamW moments and the generator state as safetensors, the rest as JSON, written atomically."""
    opt_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"generator_state": generator.get_state()}
    for index, per_param in opt_state["state"].items():
        for key, value in per_param.items():
            tensors[f"state.{index}.{key}"] = value.detach().contiguous().cpu()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt_state["param_groups"]]
    extra = {"step": step, "loss_avg": ema.avg, "loss_count": ema.count, "param_groups": groups}
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        write_json_atomic(tmp / STATE_FILE, extra)
        os.chmod(tmp, 0o777 & ~current_umask())
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_training_state(
    path: Path, extra: dict[str, Any], optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> None:
    tensors = load_file(str(path))
    generator.set_state(tensors.pop("generator_state"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in extra["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("induction-toolkit", "torch", "transformer-lens"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


# ---- the report ---------------------------------------------------------------------------------

@dataclass
class TrainReport:
    """`induction train`: the run directory's checkpoints and settings, read from its manifest.

    JSON: ``{"run", "complete", "train_config", "data", "train_seconds", "checkpoints": [{"step",
    "path", "tokens_seen", "loss"}], "provenance"}``.
    """

    run: str
    manifest: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    title = "Training run"
    columns = ("step", "tokens_seen", "loss", "path")

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "run": self.run, "complete": m.get("complete"), "train_config": m.get("train_config"),
            "data": m.get("data"), "train_seconds": m.get("train_seconds"), "checkpoints": m["checkpoints"],
            "provenance": self.provenance,
        }

    def rows(self) -> list[dict[str, Any]]:
        return [{c: entry.get(c) for c in self.columns} for entry in self.manifest["checkpoints"]]

    def summary(self) -> list[str]:
        m = self.manifest
        cfg = m.get("train_config") or {}
        kind = "attention-only" if cfg.get("attn_only") else "GPT-2-style (LayerNorm + MLP)"
        lines = [f"run: {self.run} ({'complete' if m.get('complete') else 'incomplete: continue with --resume'})",
                 f"model: {cfg.get('n_layers')}-layer {kind}, d_model {cfg.get('d_model')}, {cfg.get('n_heads')} heads; "
                 f"{cfg.get('steps')} steps of {cfg.get('batch_size')} sequences, seed {cfg.get('seed')}"]
        if m["checkpoints"]:
            last = m["checkpoints"][-1]
            lines.append(f"{len(m['checkpoints'])} checkpoints; last: step {last['step']}, loss {last['loss']:.3f}; "
                         f"training time {m.get('train_seconds', 0.0):.1f} s")
        return lines

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=list(self.columns))


def train_report(
    run_dir: str | os.PathLike[str], provenance_fn: Callable[[dict[str, Any], float], dict[str, Any]] | None = None,
    runtime_s: float = 0.0,
) -> TrainReport:
    """The `TrainReport` of a run directory (its manifest as it is now)."""
    manifest = read_manifest(run_dir)
    settings = {"train_config": manifest.get("train_config")}
    prov = provenance_fn(settings, runtime_s) if provenance_fn else {"settings": settings, "runtime_s": round(runtime_s, 3)}
    return TrainReport(run=str(run_dir), manifest=manifest, provenance=prov)
