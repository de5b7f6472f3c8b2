"""`induction patch MODEL`: each head's clean output patched into the corrupted run, its attribution or
AtP* estimate, or (`paths`) each sender -> receiver q|k|v path's effect."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from circuits import Head
from induction.common.checks import ConfigError, check_choice
from induction.common.provenance import provenance
from induction.jobs.head_effects import check_effects_memory, effect_report, prepare_run
from induction.loading.devices import placement
from induction.loading.models import ModelLike, model_info
from induction.measures.effects import PATCH_METHODS, patching_effects
from induction.measures.metric_spec import MetricSpec
from induction.measures.paths import path_effects
from induction.reports.effects import HeadEffectReport
from induction.reports.paths import PathPatchReport


@dataclass
class PatchConfig:
    """Settings of `patch`.

    Attributes:
        method: ``exact`` (activation patching, `circuits.patch_heads`), ``attribution`` (its
            gradient estimate, `circuits.attribute_heads`) or ``atp-star`` (AtP*, `circuits.atp`:
            later attention patterns recomputed exactly; GradDrop magnitudes per head).
        metric: what is measured (`MetricSpec`); the corrupted run is its `corrupted` tokens.
        paths: path patching instead: each (sender, receiver, q|k|v) path's effect, noising
            (`induction.measures.paths`); `method` must then be ``exact``.
        senders: the paths' sender heads (None: every head below a receiver).
        receivers: the paths' receiver heads (None: every head of layer 1 and above).
        name_fraction: a path is named when its |effect| is at least this fraction of the largest (0.001).
    """

    method: str = "exact"
    metric: MetricSpec = field(default_factory=MetricSpec)
    paths: bool = False
    senders: Sequence[Head] | None = None
    receivers: Sequence[Head] | None = None
    name_fraction: float = 0.001

    def __post_init__(self) -> None:
        check_choice("patching method", self.method, PATCH_METHODS, field="method")
        if self.paths and self.method != "exact":
            raise ConfigError(f"path patching is exact; method must be exact with paths, got {self.method!r}", "method")
        if (self.senders is not None or self.receivers is not None) and not self.paths:
            raise ConfigError("senders and receivers choose paths: set paths", "senders")
        for name in ("senders", "receivers"):
            heads = getattr(self, name)
            if heads is not None:
                setattr(self, name, tuple((int(layer), int(h)) for layer, h in heads))
        if isinstance(self.name_fraction, bool) or not isinstance(self.name_fraction, (int, float)) \
                or not 0.0 < self.name_fraction <= 1.0:
            raise ConfigError(f"name_fraction must be in (0, 1], got {self.name_fraction!r}", "name_fraction")


def patch(model: ModelLike, cfg: PatchConfig | None = None, *,
          progress: bool = False) -> HeadEffectReport | PathPatchReport:
    """Each head's clean output patched into the corrupted run (or its attribution / AtP* estimate);
    with `cfg.paths`, each path's effect (`PathPatchReport`)."""
    cfg = cfg or PatchConfig()
    start = time.perf_counter()
    model, setup = prepare_run(model, cfg.metric, "patch", cfg.method)
    corrupted = ("demonstration labels replaced" if cfg.metric.name == "fewshot"
                 else "fresh random tokens at every content position")
    if cfg.paths:
        effects = path_effects(model, setup, cfg.senders, cfg.receivers, progress=progress)
        info = model_info(model)
        settings = {"metric": cfg.metric.name, "sequences": cfg.metric.sequences, "metric_settings": asdict(cfg.metric),
                    "data": setup.description, "method": "path", "corrupted": corrupted,
                    "senders": None if cfg.senders is None else [list(h) for h in cfg.senders],
                    "receivers": None if cfg.receivers is None else [list(h) for h in cfg.receivers]}
        prov = provenance(info.spec, info.checkpoint, cfg.metric.seed, settings, time.perf_counter() - start,
                          **placement(model))
        return PathPatchReport(model=info.spec, metric=cfg.metric.name, effects=effects,
                               name_fraction=cfg.name_fraction, provenance=prov)
    details: dict[str, Any] = {}
    layers = check_effects_memory("patch", model, cfg.metric, cfg.method) if cfg.method == "attribution" else None
    baseline, clean, values = patching_effects(model, setup, cfg.method, progress=progress, details=details,
                                               layers_per_backward=layers)
    return effect_report(model, "patch", cfg.method, cfg.metric, setup, start, {"corrupted": corrupted},
                         baseline=baseline, values=values, reference=clean, head_details=details or None)
