"""`induction patch MODEL`: each head's clean output patched into the corrupted run, or its attribution estimate."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from induction.common.checks import check_choice
from induction.jobs.head_effects import effect_report, prepare_run
from induction.loading.models import ModelLike
from induction.measures.effects import (
    PATCH_METHODS,
    patching_effects,
)
from induction.measures.metric_spec import MetricSpec
from induction.reports.effects import HeadEffectReport


@dataclass
class PatchConfig:
    """Settings of `patch`.

    Attributes:
        method: ``exact`` (activation patching, `circuits.patch_heads`) or ``attribution`` (its
            gradient estimate, `circuits.attribute_heads`).
        metric: what is measured (`MetricSpec`); the corrupted run is its `corrupted` tokens.
    """

    method: str = "exact"
    metric: MetricSpec = field(default_factory=MetricSpec)

    def __post_init__(self) -> None:
        check_choice("patching method", self.method, PATCH_METHODS)


def patch(model: ModelLike, cfg: PatchConfig | None = None, *, progress: bool = False) -> HeadEffectReport:
    """Each head's clean output patched into the corrupted run (or its attribution estimate)."""
    cfg = cfg or PatchConfig()
    start = time.perf_counter()
    model, setup = prepare_run(model, cfg.metric)
    baseline, clean, values = patching_effects(model, setup, cfg.method, progress=progress)
    corrupted = ("demonstration labels replaced" if cfg.metric.name == "fewshot"
                 else "fresh random tokens at every content position")
    return effect_report(model, "patch", cfg.method, cfg.metric, setup, start, {"corrupted": corrupted},
                   baseline=baseline, values=values, reference=clean)
