"""The run directory written by `induction train` (CONTRACT, MODEL 1).

    <run>/manifest.json                 format_version, train_config, model_config, data, checkpoints, ...
    <run>/checkpoints/step_000123/      a checkpoint directory (`induction.checkpoint`)
    <run>/resume/step_000123/           optimizer.safetensors + state.json: what `--resume` needs

The manifest lists a checkpoint only once it and its resume state are whole on disk, so a reader
sees whole checkpoints only. This module reads and writes that format; `induction.train` fills it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from induction.checkpoint import ModelLoadError, read_json
from induction.fileio import current_umask, write_json_atomic

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
    """(step, checkpoint directory) for every checkpoint of a run, by step."""
    run_dir = Path(run_dir)
    out = []
    for entry in read_manifest(run_dir)["checkpoints"]:
        try:
            out.append((int(entry["step"]), run_dir / entry["path"]))
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(f"run manifest {run_dir / MANIFEST_FILE}: bad checkpoint entry {entry!r}") from None
    return sorted(out)


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(run_dir / MANIFEST_FILE, manifest)


class RunExistsError(ValueError):
    """The output directory already holds a run (or other files) and resume was not asked for."""


def check_empty(out_dir: Path, resume: bool) -> None:
    """Raise unless `out_dir` can take a new run: absent, empty, or (with `resume`) a run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RunExistsError(f"{out_dir} is a file; the run directory must be a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if is_run_dir(out_dir) and not resume:
            raise RunExistsError(f"{out_dir} already holds a run; resume it (--resume) or choose another directory")
        if not is_run_dir(out_dir):
            raise RunExistsError(f"{out_dir} is not empty and holds no run; choose an empty or new directory")


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
        write_json_atomic(tmp / STATE_FILE, {**extra, "param_groups": groups})
        os.chmod(tmp, 0o777 & ~current_umask())
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def has_training_state(directory: Path) -> bool:
    return (directory / OPTIMIZER_FILE).exists() and (directory / STATE_FILE).exists()


def load_training_state(directory: Path, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict[str, Any]:
    """Restore the optimizer and the generator from `save_training_state`'s directory; return its JSON."""
    extra = json.loads((directory / STATE_FILE).read_text())
    tensors = load_file(str(directory / OPTIMIZER_FILE))
    generator.set_state(tensors.pop("generator_state"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in extra["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
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
