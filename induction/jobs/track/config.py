"""`induction track`'s settings (`TrackConfig`) and what its cache keys hash."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from induction.common.checks import ConfigError, check_choice, check_min, check_range
from induction.common.fileio import file_sha256
from induction.inputs.prompts import read_token_freqs
from induction.jobs.scan import ScanConfig
from induction.loading.cache import code_hash
from induction.loading.devices import check_device_name, resolve_dtype
from induction.loading.revisions import AUTO, HubConfig
from induction.measures.audit import DEFAULT_TOLERANCE
from induction.measures.heldout import HELD_OUT_SEED_OFFSET, HELD_OUT_TOKENS

TRACK_DIR = "track"


TRACK_FORMAT_VERSION = 1


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
        revisions: Hugging Face revisions to score instead of a run directory's checkpoints, or ``auto``
            (a log-spaced pick of the hub repository's step branches) (for a folder of revision
            directories: the folders to score).
        cache: read and write cached results (a run's ``<run>/track/``; for revisions, `cache_dir`).
        cache_dir: where a hub model's revisions' results are cached (None: ``$INDUCTION_CACHE/track/<repo>/``).
        hub: how a hub model's revisions are fetched (`induction.loading.revisions.HubConfig`: offline,
            pickles, whether downloaded weights are kept, how many ``auto`` picks, tokens per step).
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
        paths: also path-patch every earlier-layer head into the final induction heads' queries,
            keys and values at every checkpoint (`induction.jobs.track.paths`); cached on its own,
            so the checkpoint scores keep their cache key.
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
    paths: bool = False
    keep_suspect: bool = False
    audit_tolerance: float = DEFAULT_TOLERANCE
    hub: HubConfig = field(default_factory=HubConfig)

    def __post_init__(self) -> None:
        if self.held_out_sequences is not None:
            check_min("held_out_sequences", self.held_out_sequences, 1)
        if self.phase_threshold is not None:
            check_range("phase_threshold", self.phase_threshold, 0, 1)
        check_min("min_icl_range", self.min_icl_range, 0)
        if self.revisions is not None:
            self.revisions = (AUTO,) if self.revisions == AUTO else tuple(self.revisions)
        if self.ablate is not None:
            check_choice("ablation method", self.ablate, TRACK_ABLATIONS)
            if self.scan.icl is None:
                raise ConfigError(f"ablation effects are on the ICL score: ablate = {self.ablate} needs the ICL score "
                                  "(scan.icl is None)", "ablate")
        check_min("ablate_draws", self.ablate_draws, 1)
        check_range("audit_tolerance", self.audit_tolerance, 0, 1)
        if self.paths and self.scan.icl is None:
            raise ConfigError("path effects are measured on the ICL score's sequences: paths needs the ICL score "
                              "(scan.icl is None)", "paths")
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
                "paths": self.paths, "keep_suspect": self.keep_suspect, "audit_tolerance": self.audit_tolerance,
                "hub": self.hub.to_dict()}


SCORING_MODULES = ("induction.heads.scores", "induction.heads.config", "induction.heads.records",
                   "induction.heads.copying", "induction.heads.offsets", "induction.measures.icl",
                   "induction.measures.losses", "induction.measures.heldout", "induction.inputs.prompts",
                   "induction.inputs.repeated", "induction.jobs.track.tasks", "induction.measures.audit")
"""The code that computes a checkpoint's numbers: its hash is part of the cache key."""
ABLATION_MODULES = ("induction.measures.effects", "induction.measures.metrics", "circuits.ablation", "circuits.engine",
                    "circuits.resume")


def scoring_code_hash() -> str:
    """`induction.loading.cache.code_hash` of `SCORING_MODULES`."""
    return code_hash(SCORING_MODULES)


def ablation_code_hash() -> str:
    """`scoring_code_hash`'s counterpart for the ablation effects (`track --ablate`)."""
    return code_hash(ABLATION_MODULES)
