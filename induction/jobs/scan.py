"""`scan`: every head's detector scores and the model's ICL score (`induction scan MODEL`)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from induction.icl import ICLConfig, icl_score
from induction.models import ModelLike, model_info, resolve_model
from induction.prompts import read_token_freqs
from induction.report import ScanReport, model_placement, provenance
from induction.scores import ScoreConfig, score_heads


@dataclass
class ScanConfig:
    """Settings of `scan`.

    Attributes:
        detector: the head detector (`induction.scores.ScoreConfig`: prompts, thresholds, bootstrap).
        icl: the ICL score's settings (`induction.icl.ICLConfig`); None skips the ICL score.
        freqs: a token frequency table (JSON list, one count per token id) for the prompts'
            `exclude_top` / `exclude_bottom`; None: no table.
    """

    detector: ScoreConfig = field(default_factory=ScoreConfig)
    icl: ICLConfig | None = field(default_factory=ICLConfig)
    freqs: str | os.PathLike[str] | None = None

    @property
    def seed(self) -> int:
        return self.detector.prompts.seed

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.to_dict(), "icl": None if self.icl is None else self.icl.to_dict(),
                "freqs": None if self.freqs is None else str(self.freqs)}


def scan(model: ModelLike, cfg: ScanConfig | None = None, *, progress: bool = False) -> ScanReport:
    """Score every head of `model` (a bridge or a MODEL spec) and measure its ICL score."""
    cfg = cfg or ScanConfig()
    start = time.perf_counter()
    freqs = read_token_freqs(cfg.freqs) if cfg.freqs is not None else None
    model = resolve_model(model)
    torch.manual_seed(cfg.seed)
    scores = score_heads(model, cfg.detector, token_freqs=freqs, progress=progress)
    icl = icl_score(model, cfg.icl, progress=progress) if cfg.icl is not None else None
    info = model_info(model)
    measured = None if icl is None else {k: v for k, v in asdict(icl).items()
                                         if k in ("early_pos", "late_pos", "n_sequences", "seq_len", "data")}
    settings = {**cfg.to_dict(), "icl_measured": measured, "copying_estimate": scores.copying_method}
    prov = provenance(info.spec, info.checkpoint, cfg.seed, settings, time.perf_counter() - start, **model_placement(model))
    return ScanReport(model=info.spec, checkpoint=info.checkpoint, scores=scores, icl=icl, provenance=prov)
