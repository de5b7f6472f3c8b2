"""`track`: head scores, ICL score and held-out loss at every checkpoint of a run, and the phase change.

The run is an `induction train` run directory, or (with `revisions`) a Hugging Face model's
published training checkpoints (`induction.checkpoints`). Each checkpoint is scored with the same
settings as `induction scan` (`ScanConfig`), so a tracked checkpoint and a scanned one give the same
numbers, plus the held-out loss: the mean next-token loss on a fixed batch of the run's own data
stream (for models without one, the synthetic stream over their vocabulary), drawn with a seed
different from the training seed (training seed + `HELD_OUT_SEED_OFFSET`).

Results are cached per checkpoint (`induction.cache`) in ``<run>/track/<settings-key>/``; the key
hashes every scoring setting (the copying estimate's sources per prompt and seed included) and the
source of the scoring modules. Each checkpoint's copying score is estimated as `scan`'s
(`induction.scores`), with its `copying_se` in every head record and the method in the provenance.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from induction.cache import ResultCache
from induction.checkpoints import CheckpointSource, file_sha256, revision_sources, run_sources
from induction.checks import check_min, check_range
from induction.formation import CheckpointScores, phase_change_of
from induction.icl import default_stream_config, icl_score
from induction.jobs.scan import ScanConfig
from induction.losses import per_token_loss
from induction.models import model_info
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
        revisions: Hugging Face revisions to score instead of a run directory's checkpoints.
        cache: read and write cached results (a run's ``<run>/track/``; for revisions, `cache_dir`).
        cache_dir: where revisions' results are cached (None: not cached).
    """

    scan: ScanConfig = field(default_factory=ScanConfig)
    held_out_sequences: int = 64
    held_out_seed: int | None = None
    phase_threshold: float | None = None
    min_icl_range: float = 0.05
    revisions: Sequence[str] | None = None
    cache: bool = True
    cache_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        check_min("held_out_sequences", self.held_out_sequences, 1)
        if self.phase_threshold is not None:
            check_range("phase_threshold", self.phase_threshold, 0, 1)
        check_min("min_icl_range", self.min_icl_range, 0)
        if self.revisions is not None:
            self.revisions = tuple(self.revisions)

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
                "cache": self.cache, "cache_dir": None if self.cache_dir is None else str(self.cache_dir)}


def scoring_code_hash() -> str:
    """A hash of the source of the modules that compute a checkpoint's numbers, so that a changed
    definition (a new copying score, say) invalidates cached results instead of mixing with them."""
    import induction.data
    import induction.icl
    import induction.losses
    import induction.prompts
    import induction.scores

    digest = hashlib.sha256()
    for module in (induction.scores, induction.icl, induction.losses, induction.prompts, induction.data,
                   sys.modules[__name__]):
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
    tokens = sample_stream(stream, cfg.held_out_sequences, torch.Generator().manual_seed(held_out_seed))
    held_out = per_token_loss(model, tokens)[:, 1:].mean()
    return {"heads": scores.to_records(), "icl_score": None if icl is None else icl.score,
            "icl": None if icl is None else icl.to_dict(), "held_out_loss": float(held_out)}


def _sources(run: str, cfg: TrackConfig) -> tuple[list[CheckpointSource], dict[str, Any], Path | None]:
    """The checkpoints to score, the run's manifest ({} for revisions), and its cache root."""
    if cfg.revisions:
        root = None if cfg.cache_dir is None else Path(cfg.cache_dir)
        return revision_sources(run, cfg.revisions), {}, root
    path = Path(run)
    if not path.exists():
        raise ValueError(f"{run} does not exist")
    if not is_run_dir(path):
        raise ValueError(f"{run} is not a run directory (no {MANIFEST_FILE}); for a Hugging Face model's "
                         "published checkpoints give --revisions")
    return run_sources(path), read_manifest(path), path / TRACK_DIR


def track(run: str | os.PathLike[str], cfg: TrackConfig | None = None, *, progress: bool = False) -> TrackReport:
    """Score every checkpoint of `run` and find its phase change (module docstring)."""
    cfg = cfg or TrackConfig()
    start = time.perf_counter()
    run = str(run)
    sources, manifest, cache_root = _sources(run, cfg)
    train_seed = (manifest.get("train_config") or {}).get("seed")
    held_out_seed = cfg.held_out_seed if cfg.held_out_seed is not None else int(train_seed or 0) + HELD_OUT_SEED_OFFSET
    freqs = read_token_freqs(cfg.scan.freqs) if cfg.scan.freqs is not None else None
    key = cfg.cache_key()
    cache = ResultCache(cache_root / key if (cfg.cache and cache_root is not None) else None,
                        cfg.scoring_settings())
    results = []
    for source in tqdm(sources, desc="tracking", unit="ckpt", disable=not progress):
        identity = {**source.identity, "held_out_seed": held_out_seed}
        scored = cache.read(source.name, identity)
        if scored is None:
            model = source.ref.load()
            torch.manual_seed(cfg.scan.seed)
            scored = score_checkpoint(model, cfg, held_out_seed, freqs)
            del model
            cache.write(source.name, identity, scored)
        results.append(CheckpointScores(step=source.step, tokens_seen=source.tokens_seen, loss=source.loss,
                                        revision=source.revision, **scored))
    phase = phase_change_of(results, cfg.resolved_phase_threshold, cfg.min_icl_range)
    settings = {"track": cfg.to_dict(), "held_out_seed": held_out_seed, "cache_key": key,
                "copying_estimate": cfg.scan.detector.copying_method(),
                "data": manifest.get("data"), "train_config": manifest.get("train_config")}
    prov = provenance(run, None, cfg.scan.seed, settings, time.perf_counter() - start, device="cpu", dtype="float32")
    return TrackReport(run=run, checkpoints=results, phase_change=phase, provenance=prov)
