"""The run directory written by `induction train` (CONTRACT, MODEL 1).

    <run>/manifest.json                 format_version, train_config, model_config, data, checkpoints, ...
    <run>/checkpoints/step_000123/      a checkpoint directory (`induction.loading.native`)
    <run>/resume/step_000123/           optimizer.safetensors + state.json: what `--resume` needs

The manifest lists a checkpoint only once it and its resume state are whole on disk, so a reader
sees whole checkpoints only. This module reads and writes that format; `induction.training.train` fills it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from induction.common.fileio import give_default_mode, write_json_atomic
from induction.loading.native import ModelLoadError, one_line, read_json

MANIFEST_FILE = "manifest.json"
CHECKPOINTS_DIR = "checkpoints"
RESUME_DIR = "resume"


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def is_run_dir(path: Path) -> bool:
    return (path / MANIFEST_FILE).exists()


def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run directory's manifest: ``{"checkpoints": [{"step", "path", ...}], "train_config", ...}``."""
    run_dir = Path(run_dir)
    manifest = read_json(run_dir / MANIFEST_FILE, "run manifest")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("checkpoints"), list):
        raise ModelLoadError(f"run manifest {run_dir / MANIFEST_FILE} has no 'checkpoints' list")
    return manifest


def run_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, checkpoint directory) for every checkpoint of a run, by step.

    A checkpoint path must stay inside the run's checkpoints/ folder: a manifest cannot point a
    run at another run's weights (``../other/checkpoints/...``) or at an absolute path.
    """
    run_dir = Path(run_dir)
    root = (run_dir / CHECKPOINTS_DIR).resolve()
    out = []
    for entry in read_manifest(run_dir)["checkpoints"]:
        try:
            step, rel = int(entry["step"]), str(entry["path"])
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(f"run manifest {run_dir / MANIFEST_FILE}: bad checkpoint entry {entry!r}") from None
        path = (run_dir / rel).resolve()
        if Path(rel).is_absolute() or path.parent != root:
            raise ModelLoadError(f"run manifest {run_dir / MANIFEST_FILE}: checkpoint path {rel!r} is outside "
                                 f"the run's {CHECKPOINTS_DIR}/ folder")
        out.append((step, run_dir / rel))
    return sorted(out)


@contextmanager
def run_lock(run_dir: Path, wait: bool = False) -> Iterator[None]:
    """Hold the run directory's writer lock (a sibling ``.<name>.lock`` file, flock'ed).

    One process writes a run at a time: a second `induction train` into the same directory is
    refused in one line (`wait=False`), or waits its turn (`wait=True`, as the default-model cache
    does). The lock dies with its process, so a killed writer never leaves the run locked.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{run_dir.name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RunBusyError(f"{run_dir} is being written by another process (another `induction train`?); "
                               "wait for it to finish or choose another directory") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class RunBusyError(ValueError):
    """Another process holds the run directory's writer lock."""


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(run_dir / MANIFEST_FILE, manifest)


class RunExistsError(ValueError):
    """The output directory already holds a run (or other files) and resume was not asked for."""


def check_empty(out_dir: Path, resume: bool) -> None:
    """Raise unless `out_dir` can take a new run: absent, empty, a run that never saved a checkpoint
    (nothing to lose: it is replaced), or (with `resume`) a run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RunExistsError(f"{out_dir} is a file; the run directory must be a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if is_run_dir(out_dir) and not resume and not _never_checkpointed(out_dir):
            raise RunExistsError(f"{out_dir} already holds a run; resume it (resume = True) or choose another directory")
        if not is_run_dir(out_dir):
            raise RunExistsError(f"{out_dir} is not empty and holds no run; choose an empty or new directory")


def _never_checkpointed(out_dir: Path) -> bool:
    try:
        return not read_manifest(out_dir)["checkpoints"]
    except ModelLoadError:
        return False


# ---- the resume state ----------------------------------------------------------------------------
# AdamW moments and the data generator's state as safetensors; the rest (step, param groups, the
# smoothed loss) as JSON. Nothing is pickled.

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def save_training_state(
    directory: Path, optimizer: torch.optim.Optimizer, generator: torch.Generator, extra: dict[str, Any]
) -> None:
    """Write the optimizer's and the generator's state, and `extra` (JSON), atomically as one directory."""
    opt_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"generator_state": generator.get_state()}
    for index, per_param in opt_state["state"].items():
        for key, value in per_param.items():
            tensors[f"state.{index}.{key}"] = value.detach().contiguous().cpu()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt_state["param_groups"]]
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        give_default_mode(tmp / OPTIMIZER_FILE)
        write_json_atomic(tmp / STATE_FILE, {**extra, "param_groups": groups})
        give_default_mode(tmp, directory=True)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def has_training_state(directory: Path) -> bool:
    return (directory / OPTIMIZER_FILE).exists() and (directory / STATE_FILE).exists()


def load_training_state(directory: Path, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict[str, Any]:
    """Restore the optimizer and the generator from `save_training_state`'s directory; return its JSON.

    Raises:
        ModelLoadError: one line naming the file that is unreadable, corrupt or incomplete.
    """
    extra = read_json(directory / STATE_FILE, "resume state")
    if not isinstance(extra, dict) or not all(k in extra for k in ("param_groups", "loss_avg", "loss_count")):
        raise ModelLoadError(f"resume state: {directory / STATE_FILE} lacks param_groups, loss_avg or loss_count")
    try:
        tensors = load_file(str(directory / OPTIMIZER_FILE))
    except PermissionError:
        raise ModelLoadError(f"resume state: cannot read {directory / OPTIMIZER_FILE}: permission denied") from None
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelLoadError(f"resume state: {directory / OPTIMIZER_FILE} is corrupt ({one_line(exc)})") from None
    try:
        generator.set_state(tensors.pop("generator_state"))
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
        groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in extra["param_groups"]]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelLoadError(f"resume state: {directory} does not match this run's optimizer ({one_line(exc)})") from None
    return extra


def remove_run_files(out_dir: Path) -> None:
    """A run killed before its first checkpoint: start it again from nothing."""
    for name in (CHECKPOINTS_DIR, RESUME_DIR):
        shutil.rmtree(out_dir / name, ignore_errors=True)


def clean_leftovers(out_dir: Path, keep: str) -> None:
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


def drop_resume_states(out_dir: Path, keep: str) -> None:
    """Remove every resume state but `keep`'s (after a newer checkpoint is listed)."""
    for old in (out_dir / RESUME_DIR).iterdir():
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
