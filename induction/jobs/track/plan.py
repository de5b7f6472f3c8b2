"""Which checkpoints a track scores: the kind of run, its sources, what the cache already holds, and the
joint-ablation pass over the final induction heads."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch

from induction.common.checks import ConfigError
from induction.jobs.track.config import INDUCTION_SET_DIR, TRACK_DIR, TrackConfig
from induction.jobs.track.tasks import valid_result, valid_set_result
from induction.loading.cache import ResultCache
from induction.loading.devices import check_device_name, resolve_device, resolve_dtype
from induction.loading.hf_dirs import is_checkpoint_folder
from induction.loading.models import ModelRef
from induction.loading.revisions import hub_track_dir
from induction.loading.runs import MANIFEST_FILE, is_run_dir, read_manifest
from induction.loading.sources import (
    CheckpointSource,
    folder_sources,
    revision_dir_sources,
    revision_sources,
    run_sources,
)
from induction.measures.heldout import HELD_OUT_SEED_OFFSET


def _sources(run: str, cfg: TrackConfig) -> tuple[list[CheckpointSource], dict[str, Any], Path | None, dict[str, str] | None]:
    """The checkpoints to score, the run's manifest ({} unless an `induction train` run), its cache
    root, and the checkpoint left out because it is still being written (`folder_sources`; None when
    none is); which kind of run `run` is decides (module docstring)."""
    path = Path(run).expanduser()
    if path.is_dir() and is_run_dir(path):
        if cfg.revisions:
            raise ConfigError(f"{run} is a run directory, which has no revisions: revisions name Hugging Face "
                             "revisions or the folders of a folder of revision directories; a run's checkpoints "
                              "are all tracked", "revisions")
        return run_sources(path), read_manifest(path), path / TRACK_DIR, None
    if path.is_dir() and is_checkpoint_folder(path):
        if cfg.revisions:  # the named folders only
            return revision_dir_sources(path, cfg.revisions), {}, path / TRACK_DIR, None
        sources, pending = folder_sources(path)
        return sources, {}, path / TRACK_DIR, pending
    if cfg.revisions:
        root = hub_track_dir(run, cfg.cache_dir)
        return revision_sources(run, cfg.revisions, cfg.hub, root if cfg.cache else None), {}, root, None
    if not path.exists():
        raise ValueError(f"{run} does not exist")
    raise ValueError(f"{run} is not a run directory: no {MANIFEST_FILE} (induction train), no checkpoint-N/ "
                     "folders (Hugging Face Trainer) and no model folders (one per revision); for a Hugging Face "
                     "model's published checkpoints give revisions = R1,R2,...")


@dataclass
class TrackPlan:
    """One run's checkpoints, what the cache already holds, and the tasks that score the rest."""

    run: str
    cfg: TrackConfig
    sources: list[CheckpointSource]
    manifest: dict[str, Any]
    held_out_seed: int
    cache_key: str
    cache_dir: Path | None
    placement: dict[str, str]
    cached: dict[int, dict[str, Any]]
    tasks: list[tuple]
    identities: list[dict[str, Any]] = field(default_factory=list)  # per source: its cache identity
    refs: list[ModelRef] = field(default_factory=list)  # per source: how a task loads it
    pending: dict[str, str] | None = None  # a live run's newest checkpoint, still being written: left out

    @property
    def missing(self) -> list[int]:
        """Indices (into `sources`) of the checkpoints still to score, one task each."""
        return [i for i in range(len(self.sources)) if i not in self.cached]

    def results(self, computed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every checkpoint's result, in `sources` order, given the results of `tasks` (in task order)."""
        scored = dict(self.cached)
        scored.update(zip(self.missing, computed))
        return [scored[i] for i in range(len(self.sources))]


def plan_track(run: str | os.PathLike[str], cfg: TrackConfig, remote: bool = False) -> TrackPlan:
    """What `track` must do for `run`: its checkpoints, the cached results, one task per missing one.

    `remote`: the tasks run elsewhere (Ray workers), so `cfg.device` must exist there, not here.
    """
    run = str(run)
    device = torch.device(_remote_device(cfg.device)) if remote else resolve_device(cfg.device)  # before any I/O
    sources, manifest, cache_root, pending = _sources(run, cfg)
    train_seed = (manifest.get("train_config") or {}).get("seed")
    held_out_seed = cfg.held_out_seed if cfg.held_out_seed is not None else int(train_seed or 0) + HELD_OUT_SEED_OFFSET
    key = cfg.cache_key()
    cache_dir = cache_root / key if (cfg.cache and cache_root is not None) else None
    cache = ResultCache(cache_dir, cfg.scoring_settings(), validate=partial(valid_result, ablate=cfg.ablate))
    where = {"device_type": device.type, "dtype": str(resolve_dtype(cfg.dtype)).replace("torch.", "")}
    cached, tasks, identities, refs = {}, [], [], []
    first = min(sources, key=lambda s: s.step) if sources else None  # the audit's reference
    reference = None if first is None else (replace(first.ref, device=str(device), dtype=where["dtype"],
                                                    offline=cfg.hub.offline, allow_pickle=cfg.hub.allow_pickle),
                                            first.identity)
    for i, source in enumerate(sources):
        identity = {**source.identity, "held_out_seed": held_out_seed, **where}
        ref = replace(source.ref, device=str(device), dtype=where["dtype"], offline=cfg.hub.offline,
                      allow_pickle=cfg.hub.allow_pickle)
        identities.append(identity)
        refs.append(ref)
        hit = cache.read(source.name, identity)
        if hit is not None:
            cached[i] = hit
        else:
            tasks.append((ref, cfg, held_out_seed, cache_dir, source.name, identity, torch.get_num_threads(),
                          reference))
    return TrackPlan(run, cfg, sources, manifest, held_out_seed, key, cache_dir,
                     {"device": str(device), "dtype": where["dtype"]}, cached, tasks, identities, refs, pending)


def _remote_device(device: str | None) -> str:
    """The device a remote task loads on: "auto" resolves on the worker, not here."""
    name = check_device_name(device)
    return "cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name)


@dataclass
class InductionSetPlan:
    """The second pass of `track --ablate`: the final induction heads, cached results, and tasks."""

    heads: list[tuple[int, int]]
    cached: dict[int, dict[str, Any]]
    tasks: list[tuple]
    indices: list[int]  # the checkpoint each task ablates

    def results(self, computed: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        out = dict(self.cached)
        out.update(zip(self.indices, computed))
        return out


def final_checkpoint(results: Sequence[dict[str, Any]], sources: Sequence[CheckpointSource]) -> dict[str, Any]:
    """The result of the checkpoint with the highest step (the trained model)."""
    return max(zip(sources, results), key=lambda pair: pair[0].step)[1]


def plan_induction_set(plan: TrackPlan, results: list[dict[str, Any]]) -> InductionSetPlan:
    """One task per checkpoint whose joint ablation of the final induction heads is not cached.

    Nothing to do without `cfg.ablate`, or when the final checkpoint has no induction heads.
    """
    cfg = plan.cfg
    if cfg.ablate is None or not plan.sources:
        return InductionSetPlan([], {}, [], [])
    heads = sorted((int(h["layer"]), int(h["head"])) for h in final_checkpoint(results, plan.sources)["heads"]
                   if h["is_induction"])
    if not heads:
        return InductionSetPlan([], {}, [], [])
    directory = None if plan.cache_dir is None else plan.cache_dir / INDUCTION_SET_DIR
    cache = ResultCache(directory, validate=valid_set_result)
    cached, tasks, indices = {}, [], []
    for i, source in enumerate(plan.sources):
        identity = {**plan.identities[i], "heads": [list(h) for h in heads], "n_draws": cfg.ablate_draws,
                    "seed": cfg.scan.seed}
        hit = cache.read(source.name, identity)
        if hit is not None:
            cached[i] = hit
        else:
            tasks.append((plan.refs[i], cfg, heads, directory, source.name, identity, torch.get_num_threads()))
            indices.append(i)
    return InductionSetPlan(heads, cached, tasks, indices)
