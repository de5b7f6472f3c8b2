"""What `ablate` and `patch` share: the metric's run on the loaded model, and their report."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from induction.common.provenance import provenance
from induction.loading.devices import check_job_memory, placement
from induction.loading.models import ModelLike, model_info, resolve_model
from induction.measures.metric_spec import MetricSpec
from induction.measures.metrics import MetricSetup
from induction.reports.effects import HeadEffectReport


def prepare_run(model: ModelLike, metric: MetricSpec) -> tuple[TransformerBridge, MetricSetup]:
    """The loaded model and the metric's run on it (seeded as the metric says)."""
    model = resolve_model(model)
    seq = metric.seq_len or min(int(model.cfg.n_ctx), 512)
    # Every intervened run is a forward over all the sequences (and the unintervened one is cached).
    check_job_memory("sequences", metric.sequences, model, metric.sequences * 8 * seq, 2 * metric.sequences, seq)
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
