"""`induction ablate MODEL`: each head's effect on a metric when ablated, and a head set against
layer-matched random sets."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from circuits import Head
from induction.common.checks import check_choice, check_min
from induction.heads.scores import top_prefix_heads
from induction.jobs.head_effects import effect_report, prepare_run
from induction.loading.models import ModelLike
from induction.measures.effects import (
    ABLATION_METHODS,
    ablation_effects,
    head_set_ablation,
)
from induction.measures.metric_spec import MetricSpec
from induction.reports.effects import HeadEffectReport


@dataclass
class AblateConfig:
    """Settings of `ablate`.

    Attributes:
        method: ``zero``, ``mean`` (over the batch), ``resample`` (another prompt's output) or
            ``pattern`` (Olsson et al.'s pattern-preserving ablation).
        metric: what is measured (`MetricSpec`).
        top_k: also ablate the k strongest prefix-matching heads together, against layer-matched
            random head sets (Crosbie & Shutova 2024); 0: off.
        heads: instead of the top k, this head set for that control.
        heads_label: how the report names the set (default: its heads).
        draws: layer-matched random sets in the control (10).
    """

    method: str = "zero"
    metric: MetricSpec = field(default_factory=MetricSpec)
    top_k: int = 0
    heads: Sequence[Head] | None = None
    heads_label: str | None = None
    draws: int = 10

    def __post_init__(self) -> None:
        check_choice("ablation method", self.method, ABLATION_METHODS)
        check_min("top_k", self.top_k, 0)
        check_min("draws", self.draws, 1)
        if self.heads is not None:
            self.heads = tuple((int(layer), int(h)) for layer, h in self.heads)


def ablate(model: ModelLike, cfg: AblateConfig | None = None, *, progress: bool = False) -> HeadEffectReport:
    """Each head's effect on the metric when ablated (and, with `top_k` or `heads`, the set's control)."""
    cfg = cfg or AblateConfig()
    start = time.perf_counter()
    model, setup = prepare_run(model, cfg.metric, "ablate", cfg.method)
    seed = cfg.metric.seed
    baseline, values = ablation_effects(model, setup, cfg.method, seed=seed, progress=progress)
    control, label = None, cfg.heads_label
    heads = list(cfg.heads) if cfg.heads else None
    if heads is None and cfg.top_k:
        heads = sorted(top_prefix_heads(model, cfg.top_k, seed)[0])
        label = label or f"top-{cfg.top_k} prefix-matching heads"
    if heads:
        control = head_set_ablation(model, setup.tokens, setup.per_prompt, heads, method=cfg.method,
                                    n_draws=cfg.draws, seed=seed)
    settings = {"top_k": cfg.top_k, "draws": cfg.draws, "heads": None if heads is None else [list(h) for h in heads]}
    return effect_report(model, "ablate", cfg.method, cfg.metric, setup, start, settings, baseline=baseline, values=values,
                   control=control, control_label=label)
