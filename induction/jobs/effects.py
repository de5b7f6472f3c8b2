"""`ablate` and `patch`: each head's effect on a metric (`induction ablate MODEL`, `induction patch MODEL`).

Both measure on a `MetricSpec`'s run: the model's own token stream with the ICL score or the
repeat loss, or few-shot prompts with the answer's log-probability (`induction.measures.metrics`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from transformer_lens.model_bridge import TransformerBridge

from circuits import Head
from induction.common.checks import check_choice, check_min
from induction.common.provenance import provenance
from induction.heads.scores import top_prefix_heads
from induction.jobs.plans import check_plan, effects_phases
from induction.loading.devices import placement
from induction.loading.models import ModelLike, model_info, resolve_model
from induction.measures.effects import (
    ABLATION_METHODS,
    PATCH_METHODS,
    ablation_effects,
    head_set_ablation,
    patching_effects,
)
from induction.measures.fewshot.evaluate import fewshot_metric_setup
from induction.measures.metrics import METRICS, MetricSetup, stream_metric_setup
from induction.reports.effects import HeadEffectReport


@dataclass
class MetricSpec:
    """Which metric, on which run.

    Attributes:
        name: ``icl`` (the ICL score), ``repeat-loss``, or ``fewshot`` (log-probability of the
            in-context answer; `induction.measures.metrics`).
        sequences: sequences (or few-shot prompts) the metric is measured on (32).
        seq_len: sequence length for ``icl`` / ``repeat-loss`` (None: the model's context, at most 512).
        task: the few-shot task for ``fewshot`` (lookup).
        shots: demonstrations per prompt for ``fewshot`` (4).
        seed: seeds the sequences or prompts.
    """

    name: str = "icl"
    sequences: int = 32
    seq_len: int | None = None
    task: str = "lookup"
    shots: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("metric", self.name, METRICS)
        check_min("sequences", self.sequences, 1)

    def setup(self, model: TransformerBridge) -> MetricSetup:
        if self.name == "fewshot":
            return fewshot_metric_setup(model, task=self.task, shots=self.shots, n_prompts=self.sequences, seed=self.seed)
        return stream_metric_setup(model, self.name, n_sequences=self.sequences, seed=self.seed, seq_len=self.seq_len)


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


def check_effects_memory(command: str, model: ModelLike, metric: MetricSpec, method: str) -> int | None:
    """Refuse, in one line naming the setting to lower, an ablate or patch run whose plan
    (`induction.jobs.plans.effects_phases`) would not fit; for a MODEL spec from its config.json,
    before any weights are loaded. Returns the layers per backward attribution patching can afford."""
    kind = method if command == "patch" else "ablate"
    plan = check_plan(command, model, lambda shape, dtype, budget: effects_phases(shape, metric, kind, dtype, budget))
    return None if plan is None else plan.layers_per_backward


def _prepare(model: ModelLike, metric: MetricSpec, command: str = "ablate",
             method: str = "zero") -> tuple[TransformerBridge, MetricSetup]:
    """The loaded model and the metric's run on it (seeded as the metric says)."""
    if not isinstance(model, TransformerBridge):
        check_effects_memory(command, model, metric, method)  # before loading: from the config alone
    model = resolve_model(model)
    check_effects_memory(command, model, metric, method)
    torch.manual_seed(metric.seed)
    return model, metric.setup(model)


def _report(model: TransformerBridge, command: str, method: str, metric: MetricSpec, setup: MetricSetup,
            start: float, settings: dict[str, Any], **fields: Any) -> HeadEffectReport:
    """The `HeadEffectReport` of an `ablate` or `patch` run, with its provenance."""
    info = model_info(model)
    settings = {"metric": metric.name, "sequences": metric.sequences, "metric_settings": asdict(metric),
                "data": setup.description, "method": method, **settings}
    prov = provenance(info.spec, info.checkpoint, metric.seed, settings, time.perf_counter() - start,
                      **placement(model))
    return HeadEffectReport(model=info.spec, command=command, method=method, metric=metric.name, provenance=prov,
                            **fields)


def ablate(model: ModelLike, cfg: AblateConfig | None = None, *, progress: bool = False) -> HeadEffectReport:
    """Each head's effect on the metric when ablated (and, with `top_k` or `heads`, the set's control)."""
    cfg = cfg or AblateConfig()
    start = time.perf_counter()
    model, setup = _prepare(model, cfg.metric, "ablate", cfg.method)
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
    return _report(model, "ablate", cfg.method, cfg.metric, setup, start, settings, baseline=baseline, values=values,
                   control=control, control_label=label)


def patch(model: ModelLike, cfg: PatchConfig | None = None, *, progress: bool = False) -> HeadEffectReport:
    """Each head's clean output patched into the corrupted run (or its attribution estimate)."""
    cfg = cfg or PatchConfig()
    start = time.perf_counter()
    model, setup = _prepare(model, cfg.metric, "patch", cfg.method)
    layers = check_effects_memory("patch", model, cfg.metric, cfg.method) if cfg.method == "attribution" else None
    baseline, clean, values = patching_effects(model, setup, cfg.method, progress=progress, layers_per_backward=layers)
    corrupted = ("demonstration labels replaced" if cfg.metric.name == "fewshot"
                 else "fresh random tokens at every content position")
    return _report(model, "patch", cfg.method, cfg.metric, setup, start, {"corrupted": corrupted},
                   baseline=baseline, values=values, reference=clean)
