"""`train`: a toy model trained on its synthetic stream into a run directory (`induction train --out DIR`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from induction.common.provenance import provenance
from induction.loading.runs import read_manifest
from induction.reports.train import TrainReport
from induction.training.config import TrainConfig
from induction.training.train import train as train_run


def train(out_dir: str | os.PathLike[str], cfg: TrainConfig | None = None, *, resume: bool = False,
          device: str | None = "cpu", dtype: str | None = None, progress: bool = False) -> TrainReport:
    """Train `cfg` into `out_dir` (or continue it with `resume`) on `device` and report the run's checkpoints.

    `dtype` is the autocast precision of the passes (weights stay float32; `induction.training.train.train`).
    """
    cfg = cfg or TrainConfig()
    start = time.perf_counter()
    train_run(cfg, out_dir, resume=resume, progress=progress, device=device, dtype=dtype)
    manifest = read_manifest(out_dir)
    settings = {"train_config": manifest.get("train_config"), "hardware": manifest.get("hardware")}
    last = (manifest.get("hardware") or [{}])[-1]
    prov = provenance(str(out_dir), None, cfg.seed, settings, time.perf_counter() - start,
                      device=last.get("device", "cpu"), dtype=last.get("autocast", "float32"))
    return TrainReport(run=str(Path(out_dir)), manifest=manifest, provenance=prov)
