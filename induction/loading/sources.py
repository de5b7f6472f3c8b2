"""The checkpoints of a training run, as `induction track` walks them.

A source is one checkpoint: its step, how to load it (`ModelRef`), what the run recorded about it
(tokens seen, training loss), and an identity that changes when its weights or its config.json
change (`induction.loading.cache.checkpoint_identity`), so a cached result of a retrained or
reconfigured checkpoint is not reused. Sources come from
- a run directory written by `induction train` (`run_sources`),
- a Hugging Face Trainer output directory (`trainer_sources`: its ``checkpoint-N/`` folders),
- a folder holding one model directory per revision (`revision_dir_sources`: ``step1000/``, ...), or
- a Hugging Face hub model's published revisions (`revision_sources`: Pythia ``step1000``,
  stanford-crfm ``checkpoint-400``, OLMo ``stepN-tokensNB``; or ``auto``), downloaded one at a time
  by the task that scores each (`induction.loading.hub`).
Only JSON and safetensors files of the first three are read (`induction.loading.hf_dirs`); the pickles a
Trainer writes beside them (optimizer.pt, rng_state.pth, scheduler.pt, training_args.bin) are never opened.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from induction.common.fileio import file_sha256
from induction.loading.cache import checkpoint_identity
from induction.loading.hf_dirs import (
    FolderCheckpoint,
    folder_checkpoints,
    is_trainer_output,
    split_pending,
    trainer_progress,
    weights_sha256,
)
from induction.loading.models import ModelRef
from induction.loading.native import CONFIG_FILE, WEIGHTS_FILE, ModelLoadError
from induction.loading.revisions import (
    HubConfig,
    read_record,
    resolve_revisions,
    revision_identity,
    revision_step,
    tokens_seen,
    write_record,
)
from induction.loading.runs import read_manifest, run_checkpoints, step_name


@dataclass(frozen=True)
class CheckpointSource:
    """One checkpoint to score.

    Attributes:
        step: its training step.
        ref: how to load it.
        name: a file-name-safe key for its cached result.
        identity: what its cached result must match (weights hash, revision, ...).
        tokens_seen, loss: what the run recorded, if anything.
        revision: the Hugging Face revision it is, if it is one.
    """

    step: int
    ref: ModelRef
    name: str
    identity: dict[str, Any] = field(hash=False)
    tokens_seen: int | None = None
    loss: float | None = None
    revision: str | None = None


def run_sources(run_dir: str | os.PathLike[str]) -> list[CheckpointSource]:
    """Every checkpoint of an `induction train` run directory, by step."""
    run_dir = Path(run_dir)
    entries = {int(e["step"]): e for e in read_manifest(run_dir)["checkpoints"]}
    out = []
    for step, ckpt_dir in run_checkpoints(run_dir):
        entry = entries.get(step, {})
        out.append(CheckpointSource(
            step=step, ref=ModelRef(str(run_dir), checkpoint=step), name=step_name(step),
            identity=checkpoint_identity(file_sha256(ckpt_dir / WEIGHTS_FILE), ckpt_dir / CONFIG_FILE),
            tokens_seen=entry.get("tokens_seen"), loss=entry.get("loss"),
        ))
    return out


def folder_sources(folder: str | os.PathLike[str]) -> tuple[list[CheckpointSource], dict[str, str] | None]:
    """Every checkpoint of a Hugging Face Trainer output (its ``checkpoint-N/`` folders) or of a folder
    of revisions, by step, less the newest while it is still being written
    (`induction.loading.hf_dirs.split_pending`); and that one as {"name", "reason"} (None when there is none).

    The step is the folder's number, checked against its trainer_state.json's `global_step`;
    tokens_seen and loss come from that trainer_state.json where it recorded them
    (`induction.loading.hf_dirs.trainer_progress`), else None.
    """
    folder = Path(folder)
    ckpts, pending = split_pending(folder_checkpoints(folder))
    if not ckpts:
        raise ModelLoadError(f"{folder}: no complete checkpoint yet ({pending['name']}: {pending['reason']})")
    return [_folder_source(folder, c) for c in ckpts], pending


def trainer_sources(out_dir: str | os.PathLike[str]) -> list[CheckpointSource]:
    """Every ``checkpoint-N/`` folder of a Hugging Face Trainer output directory (`folder_sources`)."""
    out_dir = Path(out_dir)
    if not is_trainer_output(out_dir):
        raise ModelLoadError(f"{out_dir} is not a Hugging Face Trainer output (no checkpoint-N/ folders)")
    return folder_sources(out_dir)[0]


def revision_dir_sources(folder: str | os.PathLike[str], revisions: Sequence[str] | None = None) -> list[CheckpointSource]:
    """The model directories of a folder holding one per revision (``step1000/``, ``rev-400/``), by step
    (`folder_sources`), or only the named `revisions`, in the given order.

    A revision's step is the number its folder name ends with (or its trainer_state.json's
    `global_step`); tokens_seen and loss as for `folder_sources`.
    """
    if revisions is None:
        return folder_sources(folder)[0]
    folder = Path(folder)
    _check_revisions(revisions)
    by_name = {c.name: c for c in folder_checkpoints(folder)}
    missing = [r for r in revisions if r not in by_name]
    if missing:
        raise ModelLoadError(f"{folder} has no folder {missing[0]!r} (folders: {', '.join(by_name)})")
    return [_folder_source(folder, by_name[r]) for r in revisions]


def _folder_source(folder: Path, ckpt: FolderCheckpoint) -> CheckpointSource:
    tokens_seen, loss = trainer_progress(ckpt.trainer_state, ckpt.step)
    return CheckpointSource(
        step=ckpt.step, ref=ModelRef(str(folder), checkpoint=ckpt.step), name=safe_name(ckpt.name),
        identity=checkpoint_identity(weights_sha256(ckpt.path), ckpt.path / CONFIG_FILE), tokens_seen=tokens_seen, loss=loss,
    )


def _check_revisions(revisions: Sequence[str]) -> None:
    if not revisions:
        raise ValueError("give at least one revision")
    if len(set(revisions)) != len(revisions):
        raise ValueError(f"revisions repeated in {list(revisions)}")


def revision_sources(spec: str, revisions: Sequence[str] | str, hub: HubConfig | None = None,
                     record_dir: Path | None = None) -> list[CheckpointSource]:
    """A Hugging Face hub model at each of the given revisions, in the given order (``auto``: a log-spaced
    pick of its step branches, `induction.loading.revisions.resolve_revisions`).

    A revision's step is the one its name carries (``step1000``, ``stage1-step1000-tokens4B``,
    ``checkpoint-400``), else its position in `revisions`; tokens_seen as the suite publishes it
    (`induction.loading.revisions.tokens_seen`); loss unknown. Each identity is the revision's commit
    and weights hash, read from the hub's listing before anything large is downloaded
    (`induction.loading.revisions.revision_identity`), so cached revisions are not downloaded again;
    the identities are recorded in `record_dir` (`induction.loading.revisions.write_record`), which
    offline stands in for revisions no longer in the Hugging Face cache.
    """
    hub = hub or HubConfig()
    record = read_record(record_dir)
    names = resolve_revisions(spec, revisions, hub, known=list(record))
    _check_revisions(names)
    out, seen = [], {}
    for revision, step in zip(names, revision_steps(names)):
        identity = seen[revision] = revision_identity(spec, revision, hub, record.get(revision))
        out.append(CheckpointSource(
            step=step, ref=ModelRef(spec, revision=revision, offline=hub.offline, allow_pickle=hub.allow_pickle),
            name=f"{safe_name(spec)}--{safe_name(revision)}", identity=identity, revision=revision,
            tokens_seen=tokens_seen(spec, revision, revision_step(revision), hub.tokens_per_step)))
    write_record(record_dir, seen)
    return out


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def revision_steps(revisions: Sequence[str]) -> list[int]:
    """The training step each revision names (`induction.loading.revisions.revision_step`), else its
    position in the list."""
    return [step if (step := revision_step(revision)) is not None else i for i, revision in enumerate(revisions)]
