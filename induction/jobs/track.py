"""`track`: head scores, ICL score and held-out loss at every checkpoint of a run, and the phase change.

The run is an `induction train` run directory, a Hugging Face Trainer output directory
(``checkpoint-N/`` folders), a folder holding one model directory per revision, or (with
`revisions`) a Hugging Face model's published training checkpoints (`induction.loading.sources`); of
the local ones only JSON and safetensors files are read. Each checkpoint is scored with the same
settings as `induction scan` (`ScanConfig`), so a tracked checkpoint and a scanned one give the same
numbers, plus the held-out loss: the mean next-token loss on a fixed batch of the run's own data
stream (for models without one, the synthetic stream over their vocabulary), drawn with a seed
different from the training seed (training seed + `HELD_OUT_SEED_OFFSET`).

Results are cached per checkpoint (`induction.loading.cache`) in ``<run>/track/<settings-key>/`` (local
runs; a published model's revisions in `TrackConfig.cache_dir`); the key hashes every scoring
setting (the copying estimate's sources per prompt and seed included) and the source of the
scoring modules. Each checkpoint's copying score is estimated as `scan`'s (`induction.heads.scores`),
with its `copying_se` in every head record and the method in the provenance.

With `ablate` (``zero`` or ``mean``, `induction track --ablate`), each checkpoint's scoring also
ablates every head alone on the ICL score's own sequences (`induction.measures.effects.icl_head_effects`):
each head record gains ``ablation_effect`` = ICL score with the head ablated minus without. The
final checkpoint's induction heads are known only once every checkpoint is scored, so a second
pass (one task per checkpoint, through the same executor, cached in ``<cache>/induction_set/``
keyed by the head set) ablates them together at every checkpoint against layer-matched random sets
(`induction.measures.effects.icl_head_set_effect`); `finish_track` adds the summed single-head effects and
the share of the ICL score the set carries (`induction.measures.formation.induction_set_block`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch
from transformer_lens.model_bridge import TransformerBridge

from induction.common.checks import check_choice, check_min, check_range
from induction.common.fileio import file_sha256
from induction.common.provenance import provenance
from induction.heads.scores import score_heads
from induction.inputs.prompts import read_token_freqs
from induction.inputs.streams import data_config_from_dict, sample_stream
from induction.jobs.executor import Executor, LocalExecutor
from induction.jobs.plans import check_plan, track_phases
from induction.jobs.scan import ScanConfig
from induction.loading.cache import ResultCache
from induction.loading.devices import check_device_name, resolve_device, resolve_dtype
from induction.loading.hf_dirs import is_checkpoint_folder
from induction.loading.models import ModelRef, model_info
from induction.loading.runs import MANIFEST_FILE, is_run_dir, read_manifest
from induction.loading.sources import (
    CheckpointSource,
    folder_sources,
    revision_dir_sources,
    revision_sources,
    run_sources,
)
from induction.measures.audit import DEFAULT_TOLERANCE, audit_of, checkpoint_audit_data, fit_mask, release_reference
from induction.measures.effects import HeadSetEffect, icl_head_effects, icl_head_set_effect
from induction.measures.formation import CheckpointScores, induction_set_block, phase_change_of
from induction.measures.icl import default_stream_config, icl_score, icl_tokens
from induction.measures.losses import per_token_loss
from induction.reports.track import TrackReport

TRACK_DIR = "track"
TRACK_FORMAT_VERSION = 1
HELD_OUT_SEED_OFFSET = 1_000_003  # held-out seed = training seed + this: never the training stream
HELD_OUT_TOKENS = 8192  # the held-out batch's size by default: this many tokens, in whole sequences
TRACK_ABLATIONS = ("zero", "mean")
INDUCTION_SET_DIR = "induction_set"


@dataclass
class TrackConfig:
    """Settings of `track`; the scoring ones (`scan`, `held_out_*`) are the cache key.

    Attributes:
        scan: the detector and ICL settings, as `induction scan` (`ScanConfig`).
        held_out_sequences: sequences in the held-out batch; unset: as many as make 8192 tokens
            (`HELD_OUT_TOKENS`: 64 of the toys' 128, 16 of GPT-2's 512). Its full-vocabulary
            forward is most of what `track` adds to a scan, so it is sized in tokens, not sequences;
            the batch is the same at every checkpoint.
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
        device: where each checkpoint is scored (`induction.loading.devices`; None: auto).
        dtype: the checkpoints' precision (None: float32). Results are cached per device type and
            dtype, since they differ in the last digits.
        ablate: zero or mean: also each head's ablation effect on the ICL score at every
            checkpoint, and the final induction heads ablated together; None: off. Part of the
            cache key only when set, so tracks without it share their cache (module docstring).
        ablate_draws: layer-matched random head sets of the joint ablation's control (10).
        keep_suspect: keep the checkpoints the audit finds suspect in the phase-change fit (False:
            left out; `induction.measures.audit`).
        audit_tolerance: the relative fall of a checkpoint's distance from the first one that makes it
            suspect (0.05).
    """

    scan: ScanConfig = field(default_factory=ScanConfig)
    held_out_sequences: int | None = None
    held_out_seed: int | None = None
    phase_threshold: float | None = None
    min_icl_range: float = 0.05
    revisions: Sequence[str] | None = None
    cache: bool = True
    cache_dir: str | os.PathLike[str] | None = None
    device: str | None = None
    dtype: str | None = None
    ablate: str | None = None
    ablate_draws: int = 10
    keep_suspect: bool = False
    audit_tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if self.held_out_sequences is not None:
            check_min("held_out_sequences", self.held_out_sequences, 1)
        if self.phase_threshold is not None:
            check_range("phase_threshold", self.phase_threshold, 0, 1)
        check_min("min_icl_range", self.min_icl_range, 0)
        if self.revisions is not None:
            self.revisions = tuple(self.revisions)
        if self.ablate is not None:
            check_choice("ablation method", self.ablate, TRACK_ABLATIONS)
            if self.scan.icl is None:
                raise ValueError("ablation effects are on the ICL score: --ablate needs the ICL score")
        check_min("ablate_draws", self.ablate_draws, 1)
        check_range("audit_tolerance", self.audit_tolerance, 0, 1)
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
        settings = {
            "format": TRACK_FORMAT_VERSION, "code_sha256": scoring_code_hash(),
            "detector": self.scan.detector.to_dict(), "token_freqs_sha256": freqs, "icl": icl_settings,
            "held_out": {"n_sequences": self.held_out_sequences, "tokens": HELD_OUT_TOKENS, "seed": self.held_out_seed,
                         "seed_offset": HELD_OUT_SEED_OFFSET},
        }
        if self.ablate is not None:  # only when set: tracks without it keep their key
            settings["ablate"] = {"method": self.ablate, "code_sha256": ablation_code_hash()}
        return settings

    def cache_key(self) -> str:
        blob = json.dumps(self.scoring_settings(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"scan": self.scan.to_dict(), "held_out_sequences": self.held_out_sequences,
                "held_out_seed": self.held_out_seed, "phase_threshold": self.phase_threshold,
                "min_icl_range": self.min_icl_range, "revisions": None if self.revisions is None else list(self.revisions),
                "cache": self.cache, "cache_dir": None if self.cache_dir is None else str(self.cache_dir),
                "device": self.device, "dtype": self.dtype, "ablate": self.ablate, "ablate_draws": self.ablate_draws,
                "keep_suspect": self.keep_suspect, "audit_tolerance": self.audit_tolerance}


def scoring_code_hash() -> str:
    """A hash of the source of the modules that compute a checkpoint's numbers, so that a changed
    definition (a new copying score, say) invalidates cached results instead of mixing with them."""
    import induction.heads.offsets
    import induction.heads.scores
    import induction.inputs.prompts
    import induction.inputs.repeated
    import induction.measures.icl
    import induction.measures.losses

    digest = hashlib.sha256()
    for module in (induction.heads.scores, induction.heads.offsets, induction.measures.icl, induction.measures.losses, induction.inputs.prompts,
                   induction.inputs.repeated, sys.modules[__name__]):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def ablation_code_hash() -> str:
    """`scoring_code_hash`'s counterpart for the ablation effects (`track --ablate`)."""
    import circuits.ablation
    import circuits.engine
    import induction.measures.effects
    import induction.measures.metrics

    digest = hashlib.sha256()
    for module in (induction.measures.effects, induction.measures.metrics, circuits.ablation, circuits.engine):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def held_out_stream(model: TransformerBridge):
    """The stream the held-out batch is drawn from: the model's recorded training stream
    (`induction.inputs.streams`), else the synthetic stream over its vocabulary."""
    data = model_info(model).data
    return data_config_from_dict(data) if data else default_stream_config(model)


def held_out_count(cfg: TrackConfig, stream: Any) -> int:
    """Sequences in the held-out batch: `cfg.held_out_sequences`, else `HELD_OUT_TOKENS` worth."""
    return cfg.held_out_sequences or max(1, HELD_OUT_TOKENS // int(stream.seq_len))


def check_track_memory(model: ModelRef | TransformerBridge, cfg: TrackConfig) -> None:
    """Refuse, in one line naming the setting to lower, a checkpoint whose scoring would not fit
    (`induction.jobs.plans.track_phases`: scan's phases, the held-out batch, with `ablate` one forward
    over all the ICL sequences, and the audit's reference weights); before loading from its config."""
    held_len = held_n = None
    if isinstance(model, TransformerBridge):
        stream = held_out_stream(model)
        held_len, held_n = int(stream.seq_len), held_out_count(cfg, stream)
    check_plan("track", model, lambda shape, dtype, budget: track_phases(shape, cfg, dtype, held_len, held_n),
               extra_parameter_copies=1)


def score_checkpoint(model: TransformerBridge, cfg: TrackConfig, held_out_seed: int,
                     token_freqs: torch.Tensor | None = None) -> dict[str, Any]:
    """Head scores, ICL score and held-out loss of one model: the cached part of a checkpoint.

    The held-out batch comes from the model's recorded training stream (`induction.inputs.streams`), else
    from the synthetic stream over its vocabulary (`induction.measures.icl.default_stream_config`).
    With `cfg.ablate`, each head record also has ``ablation_effect`` on the ICL score's own
    sequences, and ``ablation`` holds the method and the unablated ICL score of that computation.
    """
    scores = score_heads(model, cfg.scan.detector, token_freqs=token_freqs)
    icl = icl_score(model, cfg.scan.icl) if cfg.scan.icl is not None else None
    stream = held_out_stream(model)
    tokens = sample_stream(stream, held_out_count(cfg, stream), torch.Generator(device="cpu").manual_seed(held_out_seed))
    held_out = per_token_loss(model, tokens)[:, 1:].mean()
    out = {"heads": scores.to_records(), "icl_score": None if icl is None else icl.score,
           "icl": None if icl is None else icl.to_dict(), "held_out_loss": float(held_out)}
    if cfg.ablate is not None:
        icl_seqs, _ = icl_tokens(model, cfg.scan.icl)  # the sequences icl_score just read
        baseline, effects = icl_head_effects(model, icl_seqs, cfg.ablate, seed=cfg.scan.seed)
        for rec in out["heads"]:
            rec["ablation_effect"] = float(effects[rec["layer"], rec["head"]])
        out["ablation"] = {"method": cfg.ablate, "baseline": baseline}
    return out


HEAD_NUMBERS = ("prefix_matching", "copying", "copying_ov", "previous_token", "duplicate_token")
HEAD_OFFSET_NUMBERS = ("offset_prefix_matching", "offset_copying")
"""Finite or None (null: an offset the prompts could not score, or offset copying at d < 1)."""
HEAD_FLAGS = ("is_induction", "is_shifted_induction")


def valid_result(result: dict[str, Any], ablate: str | None = None) -> bool:
    """Whether a cached checkpoint result is whole: every (layer, head) of a full grid exactly once,
    with finite scores (the offset ones finite or null, `induction_offset` an integer or null), both
    flags, and a finite held-out loss (and ICL score, when there is one); with `ablate`, a finite
    ablation effect for every head and the method's unablated baseline."""
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
        if ablate is not None:
            if result["ablation"]["method"] != ablate:
                return False
            numbers += [float(h["ablation_effect"]) for h in heads] + [float(result["ablation"]["baseline"])]
    except (KeyError, TypeError, ValueError):
        return False
    if not all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in offsets):
        return False
    n_layers = 1 + max(layer for layer, _ in cells)
    n_heads = 1 + max(head for _, head in cells)
    return (len(heads) == len(cells) == n_layers * n_heads and all(math.isfinite(x) for x in numbers)
            and all(isinstance(h.get(flag), bool) for h in heads for flag in HEAD_FLAGS))


def _sources(run: str, cfg: TrackConfig) -> tuple[list[CheckpointSource], dict[str, Any], Path | None, dict[str, str] | None]:
    """The checkpoints to score, the run's manifest ({} unless an `induction train` run), its cache
    root, and the checkpoint left out because it is still being written (`folder_sources`; None when
    none is); which kind of run `run` is decides (module docstring)."""
    path = Path(run).expanduser()
    if path.is_dir() and is_run_dir(path):
        if cfg.revisions:
            raise ValueError(f"{run} is a run directory, which has no revisions: --revisions names Hugging Face "
                             "revisions or the folders of a folder of revision directories; a run's checkpoints "
                             "are all tracked")
        return run_sources(path), read_manifest(path), path / TRACK_DIR, None
    if path.is_dir() and is_checkpoint_folder(path):
        if cfg.revisions:  # the named folders only
            return revision_dir_sources(path, cfg.revisions), {}, path / TRACK_DIR, None
        sources, pending = folder_sources(path)
        return sources, {}, path / TRACK_DIR, pending
    if cfg.revisions:
        root = None if cfg.cache_dir is None else Path(cfg.cache_dir)
        return revision_sources(run, cfg.revisions), {}, root, None
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
    reference = None if first is None else (replace(first.ref, device=str(device), dtype=where["dtype"]), first.identity)
    for i, source in enumerate(sources):
        identity = {**source.identity, "held_out_seed": held_out_seed, **where}
        ref = replace(source.ref, device=str(device), dtype=where["dtype"])
        identities.append(identity)
        refs.append(ref)
        hit = cache.read(source.name, identity)
        if hit is not None:
            cached[i] = hit
        else:
            tasks.append((ref, cfg, held_out_seed, cache_dir, source.name, identity, torch.get_num_threads(), reference))
    return TrackPlan(run, cfg, sources, manifest, held_out_seed, key, cache_dir,
                     {"device": str(device), "dtype": where["dtype"]}, cached, tasks, identities, refs, pending)


def _remote_device(device: str | None) -> str:
    """The device a remote task loads on: "auto" resolves on the worker, not here."""
    name = check_device_name(device)
    return "cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name)


def score_task(ref: ModelRef, cfg: TrackConfig, held_out_seed: int, cache_dir: Path | None, name: str,
               identity: dict[str, Any], threads: int,
               reference: tuple[ModelRef, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Score one checkpoint and write its cache entry: the unit of work and of resumption.

    `reference`: the first checkpoint (its ref and identity), for the audit's distance
    (`induction.measures.audit`).

    The same function runs in this process and in Ray workers (`induction.jobs.executor`), with the same
    torch thread count, so both give the same numbers; the entry is written (atomically) by whoever
    computed it, so a driver interrupted after a task finished loses nothing.
    """
    torch.set_num_threads(threads)  # Ray workers are reused and keep the count torch chose at import
    freqs = read_token_freqs(cfg.scan.freqs) if cfg.scan.freqs is not None else None
    check_track_memory(ref, cfg)
    model = ref.load()
    check_track_memory(model, cfg)
    torch.manual_seed(cfg.scan.seed)
    scored = score_checkpoint(model, cfg, held_out_seed, freqs)
    scored["audit"] = checkpoint_audit_data(model, reference, identity, ref)
    ResultCache(cache_dir).write(name, identity, scored)
    return json.loads(json.dumps(scored))  # as a cached result reads back: the same floats either way


# ---- the final induction heads ablated together, at every checkpoint (--ablate) -----------------

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


def valid_set_result(result: dict[str, Any]) -> bool:
    """Whether a cached joint-ablation result is whole (finite numbers, a control or its reason)."""
    try:
        effect = HeadSetEffect.from_dict(result)
        numbers = [effect.baseline, effect.joint_effect, *map(float, effect.control_effects or [])]
    except (KeyError, TypeError, ValueError):
        return False
    has_control = effect.control_heads is not None and len(effect.control_heads) == len(effect.control_effects or [])
    return all(math.isfinite(x) for x in numbers) and (has_control or bool(effect.control_unavailable))


def induction_set_task(ref: ModelRef, cfg: TrackConfig, heads: list[tuple[int, int]], cache_dir: Path | None,
                       name: str, identity: dict[str, Any], threads: int) -> dict[str, Any]:
    """Ablate `heads` together (and the layer-matched random sets) at one checkpoint, on the ICL
    score's sequences; cache and return the result (`score_task`'s counterpart for the second pass)."""
    torch.set_num_threads(threads)
    model = ref.load()
    check_track_memory(model, cfg)
    tokens, _ = icl_tokens(model, cfg.scan.icl)
    effect = icl_head_set_effect(model, tokens, heads, cfg.ablate, cfg.ablate_draws, cfg.scan.seed)
    result = json.loads(json.dumps(effect.to_dict()))  # tuples as lists: as it reads back from the cache
    ResultCache(cache_dir).write(name, identity, result)
    return result


# ---- the report --------------------------------------------------------------------------------

def finish_track(plan: TrackPlan, computed: list[dict[str, Any]], start: float,
                 execution: dict[str, Any] | None = None, induction_set: InductionSetPlan | None = None,
                 set_computed: list[dict[str, Any]] | None = None) -> TrackReport:
    """The TrackReport of a plan, given the results of its tasks (in task order), and with
    `cfg.ablate` those of its second pass (`plan_induction_set`)."""
    cfg = plan.cfg
    scored = plan.results(computed)
    ablation = None
    if cfg.ablate is not None:
        if induction_set is None:  # a caller that ran only the first pass: run the second here
            induction_set = plan_induction_set(plan, scored)
            set_computed = LocalExecutor().map(induction_set_task, induction_set.tasks)
        sets = induction_set.results(set_computed or [])
        scored = [{**result, "ablation": {**result["ablation"], "induction_set": induction_set_block(
                      result["heads"], HeadSetEffect.from_dict(sets[i]) if i in sets else None)}}
                  for i, result in enumerate(scored)]
        ablation = ablation_summary(cfg, induction_set.heads, [sets[i] for i in sorted(sets)])
    results = [CheckpointScores(step=s.step, tokens_seen=s.tokens_seen, loss=s.loss, revision=s.revision,
                                **scored[i]) for i, s in enumerate(plan.sources)]
    audit = audit_of(plan.sources, results, cfg.audit_tolerance, cfg.keep_suspect, plan.refs)
    fitted = [c for c, keep in zip(results, fit_mask([c.step for c in results], audit)) if keep]
    phase = phase_change_of(fitted, cfg.resolved_phase_threshold, cfg.min_icl_range)
    settings = {"track": cfg.to_dict(), "held_out_seed": plan.held_out_seed, "cache_key": plan.cache_key,
                "copying_estimate": cfg.scan.detector.copying_method(),
                "data": plan.manifest.get("data"), "train_config": plan.manifest.get("train_config"),
                "checkpoints_computed": len(computed), "checkpoints_cached": len(plan.cached),
                "pending_checkpoint": plan.pending}
    if induction_set is not None:
        settings.update(induction_set_computed=len(set_computed or []), induction_set_cached=len(induction_set.cached))
    prov = provenance(plan.run, None, cfg.scan.seed, settings, time.perf_counter() - start, **plan.placement)
    prov.update(execution or {"executor": "local", "workers": 1})
    return TrackReport(run=plan.run, checkpoints=results, phase_change=phase, provenance=prov, ablation=ablation,
                       audit=audit.to_dict())


def ablation_summary(cfg: TrackConfig, heads: list[tuple[int, int]], sets: list[dict[str, Any]]) -> dict[str, Any]:
    """The report-level ``ablation`` block: the method, the final induction heads, and the control."""
    control = next((s for s in sets if s.get("control_heads")), None)
    reason = next((s["control_unavailable"] for s in sets if s.get("control_unavailable")), None)
    if not heads:
        reason = "the final checkpoint has no induction heads: no set to ablate"
    return {"method": cfg.ablate, "induction_heads": [list(h) for h in heads], "n_draws": cfg.ablate_draws,
            "control_heads": None if control is None else control["control_heads"],
            "control_unavailable": reason}


def run_plans(plans: Sequence[TrackPlan], executor: Executor, start: float, progress: bool = False,
              desc: str = "tracking") -> list[TrackReport]:
    """Score the missing checkpoints of every plan in one `executor.map`, then (for plans with
    `ablate`) ablate each run's final induction heads at every checkpoint in a second one."""
    computed = executor.map(score_task, [t for plan in plans for t in plan.tasks], progress=progress, desc=desc)
    release_reference()  # the audit's copy of the first checkpoint (this process's; Ray workers drop theirs on exit)
    per_plan = []
    for plan in plans:
        mine, computed = computed[: len(plan.tasks)], computed[len(plan.tasks):]
        per_plan.append(mine)
    sets = [plan_induction_set(plan, plan.results(mine)) for plan, mine in zip(plans, per_plan)]
    set_tasks = [t for s in sets for t in s.tasks]
    set_computed = executor.map(induction_set_task, set_tasks, progress=progress,
                                desc="ablating the induction heads") if set_tasks else []
    reports = []
    for plan, mine, induction_set in zip(plans, per_plan, sets):
        set_mine, set_computed = set_computed[: len(induction_set.tasks)], set_computed[len(induction_set.tasks):]
        reports.append(finish_track(plan, mine, start, executor.describe(), induction_set, set_mine))
    return reports


def track(run: str | os.PathLike[str], cfg: TrackConfig | None = None, *, progress: bool = False,
          executor: Executor | None = None) -> TrackReport:
    """Score every checkpoint of `run` and find its phase change (module docstring).

    `executor` runs the missing checkpoints (`induction.jobs.executor`: this process by default, or Ray
    tasks), and with `cfg.ablate` the joint ablations of the final induction heads; the report is
    the same either way.
    """
    cfg = cfg or TrackConfig()
    start = time.perf_counter()
    executor = executor or LocalExecutor()
    plan = plan_track(run, cfg, remote=executor.name != "local")
    return run_plans([plan], executor, start, progress)[0]
