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
from induction.loading.devices import check_job_memory, placement
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
from induction.measures.paths import path_effects
from induction.reports.effects import HeadEffectReport
from induction.reports.paths import PathPatchReport


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
        check_choice("patching method", self.method, PATCH_METHODS)
        if self.paths and self.method != "exact":
            raise ValueError(f"path patching is exact; method must be exact with paths, got {self.method!r}")
        if (self.senders is not None or self.receivers is not None) and not self.paths:
            raise ValueError("senders and receivers choose paths: set paths")
        for name in ("senders", "receivers"):
            heads = getattr(self, name)
            if heads is not None:
                setattr(self, name, tuple((int(layer), int(h)) for layer, h in heads))
        if isinstance(self.name_fraction, bool) or not isinstance(self.name_fraction, (int, float)) \
                or not 0.0 < self.name_fraction <= 1.0:
            raise ValueError(f"name_fraction must be in (0, 1], got {self.name_fraction!r}")


def _prepare(model: ModelLike, metric: MetricSpec) -> tuple[TransformerBridge, MetricSetup]:
    """The loaded model and the metric's run on it (seeded as the metric says)."""
    model = resolve_model(model)
    seq = metric.seq_len or min(int(model.cfg.n_ctx), 512)
    # Every intervened run is a forward over all the sequences (and the unintervened one is cached).
    check_job_memory(f"--sequences {metric.sequences}", model, metric.sequences * 8 * seq, 2 * metric.sequences, seq)
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
    model, setup = _prepare(model, cfg.metric)
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


def patch(model: ModelLike, cfg: PatchConfig | None = None, *,
          progress: bool = False) -> HeadEffectReport | PathPatchReport:
    """Each head's clean output patched into the corrupted run (or its attribution / AtP* estimate);
    with `cfg.paths`, each path's effect (`PathPatchReport`)."""
    cfg = cfg or PatchConfig()
    start = time.perf_counter()
    model, setup = _prepare(model, cfg.metric)
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
    baseline, clean, values = patching_effects(model, setup, cfg.method, progress=progress, details=details)
    return _report(model, "patch", cfg.method, cfg.metric, setup, start, {"corrupted": corrupted},
                   baseline=baseline, values=values, reference=clean, head_details=details or None)
