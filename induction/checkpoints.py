"""The checkpoints of a training run, as `induction track` walks them.

A source is one checkpoint: its step, how to load it (`ModelRef`), what the run recorded about it
(tokens seen, training loss), and an identity that changes when its weights change (so a cached
result of a retrained checkpoint is not reused). Sources come from
- a run directory written by `induction train` (`run_sources`), or
- a Hugging Face model's published revisions (`revision_sources`: Pythia ``step1000``,
  stanford-crfm ``checkpoint-400``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from induction.checkpoint import WEIGHTS_FILE
from induction.formation import revision_steps
from induction.models import ModelRef
from induction.runs import read_manifest, run_checkpoints, step_name


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
            identity={"weights_sha256": file_sha256(ckpt_dir / WEIGHTS_FILE)},
            tokens_seen=entry.get("tokens_seen"), loss=entry.get("loss"),
        ))
    return out


def revision_sources(spec: str, revisions: Sequence[str]) -> list[CheckpointSource]:
    """A Hugging Face model at each of the given revisions, in the given order.

    A revision's step is the number its name ends with (``step1000`` -> 1000, ``checkpoint-400`` ->
    400), else its position in `revisions`. tokens_seen and loss are unknown (None).
    """
    if not revisions:
        raise ValueError("give at least one revision")
    if len(set(revisions)) != len(revisions):
        raise ValueError(f"revisions repeated in {list(revisions)}")
    return [
        CheckpointSource(step=step, ref=ModelRef(spec, revision=revision),
                         name=f"{safe_name(spec)}--{safe_name(revision)}",
                         identity={"spec": spec, "revision": revision}, revision=revision)
        for revision, step in zip(revisions, revision_steps(revisions))
    ]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_name(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"
