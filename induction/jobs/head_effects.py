"""What `ablate` and `patch` share: the metric's run on the loaded model, and their report."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from induction.common.provenance import provenance
from induction.jobs.plans import check_plan, effects_phases
from induction.loading.devices import placement
from induction.loading.models import ModelLike, model_info, resolve_model
from induction.measures.metric_spec import MetricSpec
from induction.measures.metrics import MetricSetup
from induction.reports.effects import HeadEffectReport


def check_effects_memory(command: str, model: ModelLike, metric: MetricSpec, method: str) -> int | None:
    """Refuse, in one line naming the setting to lower, an ablate or patch run whose plan
    (`induction.jobs.plans.effects_phases`) would not fit; for a MODEL spec from its config.json,
    before any weights are loaded. Returns the layers per backward attribution patching can afford."""
    kind = method if command == "patch" else "ablate"
    plan = check_plan(command, model, lambda shape, dtype, budget: effects_phases(shape, metric, kind, dtype, budget))
    return None if plan is None else plan.layers_per_backward


def prepare_run(model: ModelLike, metric: MetricSpec, command: str = "ablate",
                method: str = "zero") -> tuple[TransformerBridge, MetricSetup]:
    """The loaded model and the metric's run on it (seeded as the metric says), its memory planned
    before loading (from the config) and again after."""
    if not isinstance(model, TransformerBridge):
        check_effects_memory(command, model, metric, method)
    model = resolve_model(model)
    check_effects_memory(command, model, metric, method)
    torch.manual_seed(metric.seed)
    return model, metric.setup(model)


def effect_report(model: TransformerBridge, command: str, method: str, metric: MetricSpec, setup: MetricSetup,
            start: float, settings: dict[str, Any], **fields: Any) -> HeadEffectReport:
    """The `HeadEffectReport` of an `ablate` or `patch` run, with its provenance."""
    info = model_info(model)
    settings = {"metric": metric.name, "sequences": metric.sequences, "metric_settings": asdict(metric),
                "data": setup.description, "method": method, **settings}
    prov = provenance(info.spec, info.checkpoint, metric.seed, settings, time.perf_counter() - start,
                      **placement(model))
    return HeadEffectReport(model=info.spec, command=command, method=method, metric=metric.name, provenance=prov,
                            **fields)
