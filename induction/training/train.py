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
the same config then gives bit-identical checkpoints whatever the machine's core count, and models
this small lose little (README, "Design notes").
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from circuits.memory import backward_bytes
from circuits.progress import progress_bar
from induction.common.checks import check_memory
from induction.common.fileio import json_default, write_json_atomic
from induction.common.provenance import package_versions
from induction.inputs.streams import sample_stream
from induction.loading.devices import model_device, resolve_device, resolve_dtype
from induction.loading.native import (
    META_FILE,
    ModelLoadError,
    boot_native,
    load_checkpoint,
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
from induction.training.config import (  # the configs, importable from here as before
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
)
from induction.training.interventions import TrainingInterventions

FORMAT_VERSION = 2  # 2: train_config in parts (model / optim / schedule / data); 1 was flat


LOSS_SMOOTHING = 0.9  # EMA factor of the logged train loss (bias-corrected, as Adam's moments)


__all__ = ["ModelConfig", "OptimConfig", "RunExistsError", "ScheduleConfig", "TrainConfig", "train"]


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
        progress: show a tqdm bar with the smoothed loss on stderr (on a terminal; else one line at the end).
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
    interventions = TrainingInterventions(cfg.interventions, model, cfg.model_config())
    if not manifest["checkpoints"]:
        with interventions.hooks(0):
            loss0 = initial_loss(model, cfg, generator)
        _checkpoint(model, optimizer, generator, ema, 0, cfg, out_dir, manifest, loss0)
    pending = [s for s in schedule if s > start]
    end = cfg.steps if stop_after is None else min(cfg.steps, max(start, stop_after))
    model.train()
    bar = progress_bar(total=cfg.steps, initial=start, desc="training", unit="step", enabled=progress, stage=True,
                       dynamic_ncols=True)
    try:
        for step in range(start, end):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_at(step)
            tokens = sample_stream(cfg.data, cfg.batch_size, generator).to(device)
            with autocast, interventions.hooks(step):
                loss = model(tokens, return_type="loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            interventions.before_clip(step)
            if cfg.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            interventions.after_step(step)
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
