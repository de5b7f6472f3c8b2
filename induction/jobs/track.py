"""`track`: head scores, ICL score and held-out loss at every checkpoint of a run, and the phase change.

The run is an `induction train` run directory, a Hugging Face Trainer output directory
(``checkpoint-N/`` folders), a folder holding one model directory per revision, or (with
`revisions`) a Hugging Face model's published training checkpoints (`induction.checkpoints`); of
the local ones only JSON and safetensors files are read. Each checkpoint is scored with the same
settings as `induction scan` (`ScanConfig`), so a tracked checkpoint and a scanned one give the same
numbers, plus the held-out loss: the mean next-token loss on a fixed batch of the run's own data
stream (for models without one, the synthetic stream over their vocabulary), drawn with a seed
different from the training seed (training seed + `HELD_OUT_SEED_OFFSET`).

Results are cached per checkpoint (`induction.cache`) in ``<run>/track/<settings-key>/`` (local
runs; a published model's revisions in `TrackConfig.cache_dir`); the key hashes every scoring
setting (the copying estimate's sources per prompt and seed included) and the source of the
scoring modules. Each checkpoint's copying score is estimated as `scan`'s (`induction.scores`),
with its `copying_se` in every head record and the method in the provenance.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from transformer_lens.model_bridge import TransformerBridge

from induction.cache import ResultCache
from induction.checkpoints import (
    CheckpointSource,
    revision_dir_sources,
    revision_sources,
    run_sources,
    trainer_sources,
)
from induction.checks import check_min, check_range
from induction.devices import check_device_name, resolve_device, resolve_dtype
from induction.executor import Executor, LocalExecutor
from induction.fileio import file_sha256
from induction.formation import CheckpointScores, phase_change_of
from induction.hf_dirs import is_checkpoint_folder, is_trainer_output
from induction.icl import default_stream_config, icl_score
from induction.jobs.scan import ScanConfig, check_scan_memory
from induction.losses import per_token_loss
from induction.models import ModelRef, model_info
from induction.prompts import read_token_freqs
from induction.report import TrackReport, provenance
from induction.runs import MANIFEST_FILE, is_run_dir, read_manifest
from induction.scores import score_heads
from induction.streams import data_config_from_dict, sample_stream

TRACK_DIR = "track"
TRACK_FORMAT_VERSION = 1
HELD_OUT_SEED_OFFSET = 1_000_003  # held-out seed = training seed + this: never the training stream


@dataclass
class TrackConfig:
    """Settings of `track`; the scoring ones (`scan`, `held_out_*`) are the cache key.

    Attributes:
        scan: the detector and ICL settings, as `induction scan` (`ScanConfig`).
        held_out_sequences: sequences in the held-out batch (64).
        held_out_seed: seed of the held-out batch; None means the run's training seed +
            `HELD_OUT_SEED_OFFSET` (just the offset for models with no recorded seed).
        phase_threshold: the best prefix-matching score must reach this for a phase change to be
            reported; None means the detector's prefix_threshold.
        min_icl_range: the ICL score joins the phase-change signal only if it moves by at least this
            many nats over the run (0.05).
        revisions: Hugging Face revisions to score instead of a run directory's checkpoints (for a
            folder of revision directories: the folders to score).
        cache: read and write cached results (a run's ``<run>/track/``; for revisions, `cache_dir`).
        cache_dir: where revisions' results are cached (None: not cached).
        device: where each checkpoint is scored (`induction.devices`; None: auto).
        dtype: the checkpoints' precision (None: float32). Results are cached per device type and
            dtype, since they differ in the last digits.
    """

    scan: ScanConfig = field(default_factory=ScanConfig)
    held_out_sequences: int = 64
    held_out_seed: int | None = None
    phase_threshold: float | None = None
    min_icl_range: float = 0.05
    revisions: Sequence[str] | None = None
    cache: bool = True
    cache_dir: str | os.PathLike[str] | None = None
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        check_min("held_out_sequences", self.held_out_sequences, 1)
        if self.phase_threshold is not None:
            check_range("phase_threshold", self.phase_threshold, 0, 1)
        check_min("min_icl_range", self.min_icl_range, 0)
        if self.revisions is not None:
            self.revisions = tuple(self.revisions)
        check_device_name(self.device), resolve_dtype(self.dtype)  # fail before any work

    @property
    def resolved_phase_threshold(self) -> float:
        return self.scan.detector.prefix_threshold if self.phase_threshold is None else self.phase_threshold

    def scoring_settings(self) -> dict[str, Any]:
        """What a checkpoint's numbers depend on (the phase-change settings do not)."""
        icl = self.scan.icl
        icl_settings = None
        if icl is not None:
            text = None if icl.text is None else {"path": str(icl.text), "sha256": file_sha256(Path(icl.text))}
            icl_settings = {**icl.to_dict(), "text": text}
        freqs = None
        if self.scan.freqs is not None:
            table = read_token_freqs(self.scan.freqs)
            freqs = hashlib.sha256(table.double().numpy().tobytes()).hexdigest()
        return {
            "format": TRACK_FORMAT_VERSION, "code_sha256": scoring_code_hash(),
            "detector": self.scan.detector.to_dict(), "token_freqs_sha256": freqs, "icl": icl_settings,
            "held_out": {"n_sequences": self.held_out_sequences, "seed": self.held_out_seed,
                         "seed_offset": HELD_OUT_SEED_OFFSET},
        }

    def cache_key(self) -> str:
        blob = json.dumps(self.scoring_settings(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"scan": self.scan.to_dict(), "held_out_sequences": self.held_out_sequences,
                "held_out_seed": self.held_out_seed, "phase_threshold": self.phase_threshold,
                "min_icl_range": self.min_icl_range, "revisions": None if self.revisions is None else list(self.revisions),
                "cache": self.cache, "cache_dir": None if self.cache_dir is None else str(self.cache_dir),
                "device": self.device, "dtype": self.dtype}


def scoring_code_hash() -> str:
    """A hash of the source of the modules that compute a checkpoint's numbers, so that a changed
    definition (a new copying score, say) invalidates cached results instead of mixing with them."""
    import induction.data
    import induction.icl
    import induction.losses
    import induction.offsets
    import induction.prompts
    import induction.scores

    digest = hashlib.sha256()
    for module in (induction.scores, induction.offsets, induction.icl, induction.losses, induction.prompts,
                   induction.data, sys.modules[__name__]):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def score_checkpoint(model: TransformerBridge, cfg: TrackConfig, held_out_seed: int,
                     token_freqs: torch.Tensor | None = None) -> dict[str, Any]:
    """Head scores, ICL score and held-out loss of one model: the cached part of a checkpoint.

    The held-out batch comes from the model's recorded training stream (`induction.streams`), else
    from the synthetic stream over its vocabulary (`induction.icl.default_stream_config`).
    """
    scores = score_heads(model, cfg.scan.detector, token_freqs=token_freqs)
    icl = icl_score(model, cfg.scan.icl) if cfg.scan.icl is not None else None
    data = model_info(model).data
    stream = data_config_from_dict(data) if data else default_stream_config(model)
    tokens = sample_stream(stream, cfg.held_out_sequences, torch.Generator(device="cpu").manual_seed(held_out_seed))
    held_out = per_token_loss(model, tokens)[:, 1:].mean()
    return {"heads": scores.to_records(), "icl_score": None if icl is None else icl.score,
            "icl": None if icl is None else icl.to_dict(), "held_out_loss": float(held_out)}


HEAD_NUMBERS = ("prefix_matching", "copying", "copying_ov", "previous_token", "duplicate_token")
HEAD_OFFSET_NUMBERS = ("offset_prefix_matching", "offset_copying")
"""Finite or None (null: an offset the prompts could not score, or offset copying at d < 1)."""
HEAD_FLAGS = ("is_induction", "is_shifted_induction")


def valid_result(result: dict[str, Any]) -> bool:
    """Whether a cached checkpoint result is whole: every (layer, head) of a full grid exactly once,
    with finite scores (the offset ones finite or null, `induction_offset` an integer or null), both
    flags, and a finite held-out loss (and ICL score, when there is one)."""
    heads = result.get("heads")
    if not isinstance(heads, list) or not heads or not all(isinstance(h, dict) for h in heads):
        return False
    try:
        cells = {(int(h["layer"]), int(h["head"])) for h in heads}
        numbers = [float(h[k]) for h in heads for k in HEAD_NUMBERS] + [float(result["held_out_loss"])]
        numbers += [float(h[k]) for h in heads for k in HEAD_OFFSET_NUMBERS if h[k] is not None]
        if result.get("icl_score") is not None:
            numbers.append(float(result["icl_score"]))
        offsets = [h["induction_offset"] for h in heads]
    except (KeyError, TypeError, ValueError):
        return False
    if not all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in offsets):
        return False
    n_layers = 1 + max(layer for layer, _ in cells)
    n_heads = 1 + max(head for _, head in cells)
    return (len(heads) == len(cells) == n_layers * n_heads and all(math.isfinite(x) for x in numbers)
            and all(isinstance(h.get(flag), bool) for h in heads for flag in HEAD_FLAGS))


def _sources(run: str, cfg: TrackConfig) -> tuple[list[CheckpointSource], dict[str, Any], Path | None]:
    """The checkpoints to score, the run's manifest ({} unless an `induction train` run), and its
    cache root; which kind of run `run` is decides (module docstring)."""
    path = Path(run).expanduser()
    if path.is_dir() and is_run_dir(path):
        return run_sources(path), read_manifest(path), path / TRACK_DIR
    if path.is_dir() and is_checkpoint_folder(path):
        if cfg.revisions:  # the named folders only
            return revision_dir_sources(path, cfg.revisions), {}, path / TRACK_DIR
        sources = trainer_sources(path) if is_trainer_output(path) else revision_dir_sources(path)
        return sources, {}, path / TRACK_DIR
    if cfg.revisions:
        root = None if cfg.cache_dir is None else Path(cfg.cache_dir)
        return revision_sources(run, cfg.revisions), {}, root
    if not path.exists():
        raise ValueError(f"{run} does not exist")
    raise ValueError(f"{run} is not a run directory: no {MANIFEST_FILE} (induction train), no checkpoint-N/ "
                     "folders (Hugging Face Trainer) and no model folders (one per revision); for a Hugging Face "
                     "model's published checkpoints give --revisions")


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

    @property
    def missing(self) -> list[int]:
        """Indices (into `sources`) of the checkpoints still to score, one task each."""
        return [i for i in range(len(self.sources)) if i not in self.cached]


def plan_track(run: str | os.PathLike[str], cfg: TrackConfig, remote: bool = False) -> TrackPlan:
    """What `track` must do for `run`: its checkpoints, the cached results, one task per missing one.

    `remote`: the tasks run elsewhere (Ray workers), so `cfg.device` must exist there, not here.
    """
    run = str(run)
    device = torch.device(_remote_device(cfg.device)) if remote else resolve_device(cfg.device)  # before any I/O
    sources, manifest, cache_root = _sources(run, cfg)
    train_seed = (manifest.get("train_config") or {}).get("seed")
    held_out_seed = cfg.held_out_seed if cfg.held_out_seed is not None else int(train_seed or 0) + HELD_OUT_SEED_OFFSET
    key = cfg.cache_key()
    cache_dir = cache_root / key if (cfg.cache and cache_root is not None) else None
    cache = ResultCache(cache_dir, cfg.scoring_settings(), validate=valid_result)
    where = {"device_type": device.type, "dtype": str(resolve_dtype(cfg.dtype)).replace("torch.", "")}
    cached, tasks = {}, []
    for i, source in enumerate(sources):
        identity = {**source.identity, "held_out_seed": held_out_seed, **where}
        hit = cache.read(source.name, identity)
        if hit is not None:
            cached[i] = hit
        else:
            ref = replace(source.ref, device=str(device), dtype=where["dtype"])
            tasks.append((ref, cfg, held_out_seed, cache_dir, source.name, identity, torch.get_num_threads()))
    return TrackPlan(run, cfg, sources, manifest, held_out_seed, key, cache_dir,
                     {"device": str(device), "dtype": where["dtype"]}, cached, tasks)


def _remote_device(device: str | None) -> str:
    """The device a remote task loads on: "auto" resolves on the worker, not here."""
    name = check_device_name(device)
    return "cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name)


def score_task(ref: ModelRef, cfg: TrackConfig, held_out_seed: int, cache_dir: Path | None, name: str,
               identity: dict[str, Any], threads: int) -> dict[str, Any]:
    """Score one checkpoint and write its cache entry: the unit of work and of resumption.

    The same function runs in this process and in Ray workers (`induction.executor`), with the same
    torch thread count, so both give the same numbers; the entry is written (atomically) by whoever
    computed it, so a driver interrupted after a task finished loses nothing.
    """
    torch.set_num_threads(threads)  # Ray workers are reused and keep the count torch chose at import
    freqs = read_token_freqs(cfg.scan.freqs) if cfg.scan.freqs is not None else None
    model = ref.load()
    check_scan_memory(model, cfg.scan)
    torch.manual_seed(cfg.scan.seed)
    scored = score_checkpoint(model, cfg, held_out_seed, freqs)
    ResultCache(cache_dir).write(name, identity, scored)
    return json.loads(json.dumps(scored))  # as a cached result reads back: the same floats either way


def finish_track(plan: TrackPlan, computed: list[dict[str, Any]], start: float,
                 execution: dict[str, Any] | None = None) -> TrackReport:
    """The TrackReport of a plan, given the results of its tasks (in task order)."""
    scored = dict(plan.cached)
    scored.update(zip(plan.missing, computed))
    results = [CheckpointScores(step=s.step, tokens_seen=s.tokens_seen, loss=s.loss, revision=s.revision,
                                **scored[i]) for i, s in enumerate(plan.sources)]
    cfg = plan.cfg
    phase = phase_change_of(results, cfg.resolved_phase_threshold, cfg.min_icl_range)
    settings = {"track": cfg.to_dict(), "held_out_seed": plan.held_out_seed, "cache_key": plan.cache_key,
                "copying_estimate": cfg.scan.detector.copying_method(),
                "data": plan.manifest.get("data"), "train_config": plan.manifest.get("train_config"),
                "checkpoints_computed": len(computed), "checkpoints_cached": len(plan.cached)}
    prov = provenance(plan.run, None, cfg.scan.seed, settings, time.perf_counter() - start, **plan.placement)
    prov.update(execution or {"executor": "local", "workers": 1})
    return TrackReport(run=plan.run, checkpoints=results, phase_change=phase, provenance=prov)


def track(run: str | os.PathLike[str], cfg: TrackConfig | None = None, *, progress: bool = False,
          executor: Executor | None = None) -> TrackReport:
    """Score every checkpoint of `run` and find its phase change (module docstring).

    `executor` runs the missing checkpoints (`induction.executor`: this process by default, or Ray
    tasks); the report is the same either way.
    """
    cfg = cfg or TrackConfig()
    start = time.perf_counter()
    executor = executor or LocalExecutor()
    plan = plan_track(run, cfg, remote=executor.name != "local")
    computed = executor.map(score_task, plan.tasks, progress=progress, desc="tracking")
    return finish_track(plan, computed, start, executor.describe())
