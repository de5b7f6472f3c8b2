"""`fewshot`: few-shot accuracy by number of demonstrations per label variant (`induction fewshot MODEL`),
and optionally which heads carry it (a head set ablated vs layer-matched random sets; every head
per label variant) and the tasks' function vectors."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Sequence

import torch
from transformer_lens.model_bridge import TransformerBridge

from circuits import Head
from induction.common.checks import check_choice, check_min
from induction.common.provenance import provenance
from induction.common.stats import DEFAULT_RESAMPLES
from induction.inputs.stream_configs import FewShotDataConfig
from induction.inputs.streams import prior_bayes_flipped
from induction.inputs.task_inference import FUNCTION_TASKS, TaskError
from induction.inputs.tasks import TASKS, TEXT_TASKS
from induction.jobs.plans import check_plan, fewshot_phases
from induction.loading.devices import placement
from induction.loading.models import ModelLike, model_info, resolve_model
from induction.measures.effects import ABLATION_METHODS
from induction.measures.fewshot.ablation import ablate_fewshot_heads, attribute_fewshot_heads, check_attribution_size
from induction.measures.fewshot.evaluate import evaluate_fewshot
from induction.measures.fewshot.labels import LABEL_VARIANTS
from induction.measures.fewshot.render import FewShotPromptConfig, default_task, model_tasks, toy_data_config
from induction.measures.fewshot.vectors import FunctionVectorConfig, function_vectors
from induction.reports.fewshot import FewShotReport


@dataclass
class FewShotConfig:
    """Settings of `fewshot`.

    Attributes:
        task: one of `induction.inputs.tasks.TASKS` (lookup, rule, classification, prior; succ, pred,
            perm, ... on a model trained on the tasks stream; antonyms, country_capital,
            word_category); None: lookup, or the first task of a tasks-stream model.
        labels: label variants (`LABEL_VARIANTS`), each evaluated on the same gold prompts.
        shots: numbers of demonstrations k.
        n_prompts: prompts per (labels, k) point (200).
        orders: also score each prompt with its demonstrations in `orders - 1` random orders (1).
        query_in_context: rule / prior / classification / tasks-stream tasks: whether a k >= 1
            prompt shows the query's input (class); None: the task's default (shown, except for the
            tasks-stream tasks, whose query must be inferred from the task).
        batch_size: prompts per forward pass (32).
        n_bootstrap: bootstrap resamples for the intervals (0: none).
        seed: seeds the prompts.
        ablate_top_k: also ablate this many top prefix-matching heads together against layer-matched
            random sets (0: off; `AblateConfig.top_k`'s idea).
        ablate_heads: instead, ablate this head set.
        ablate_shots: k of the ablation prompts (None: the largest of `shots`).
        ablate_draws: random head sets (10).
        ablate_method: `circuits.METHODS`.
        attribute: per label variant, also ablate every head alone, then the this-many heads that
            matter most for following the demonstrations together vs layer-matched random sets
            (0: off; `induction.measures.fewshot.ablation.attribute_fewshot_heads`; k and method as the ablation's).
        function_vectors: also compute function vectors (Todd et al. 2024) for every task of a
            tasks-stream model, else for `task` (`induction.measures.fewshot.vectors`); None: off.
    """

    task: str | None = None
    labels: Sequence[str] = ("gold",)
    shots: Sequence[int] = (0, 1, 2, 4, 8)
    n_prompts: int = 200
    orders: int = 1
    query_in_context: bool | None = None
    batch_size: int = 32
    n_bootstrap: int = DEFAULT_RESAMPLES
    seed: int = 0
    ablate_top_k: int = 0
    ablate_heads: Sequence[Head] | None = None
    ablate_shots: int | None = None
    ablate_draws: int = 10
    ablate_method: str = "zero"
    attribute: int = 0
    function_vectors: FunctionVectorConfig | None = None

    def __post_init__(self) -> None:
        self.labels, self.shots = tuple(self.labels), tuple(int(k) for k in self.shots)
        if self.ablate_heads is not None:
            self.ablate_heads = tuple((int(layer), int(h)) for layer, h in self.ablate_heads)
        if self.task is not None:
            check_choice("task", self.task, TASKS, TaskError)
        for name in self.labels:
            check_choice("label variant", name, LABEL_VARIANTS, TaskError)
        if not self.labels or not self.shots:
            raise TaskError("give at least one label variant and one number of shots")
        check_min("the number of shots", min(self.shots), 0, TaskError)
        for name in ("n_prompts", "orders", "batch_size", "ablate_draws"):
            check_min(name, getattr(self, name), 1, TaskError)
        check_min("ablate_top_k", self.ablate_top_k, 0, TaskError)
        check_min("attribute", self.attribute, 0, TaskError)
        check_choice("ablation method", self.ablate_method, ABLATION_METHODS, TaskError)

    @property
    def ablating(self) -> bool:
        return bool(self.ablate_top_k or self.ablate_heads)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bayes_reference(model: TransformerBridge, cfg: FewShotConfig, task: str) -> list[dict[str, Any]] | None:
    """For `--task prior --labels ...flipped...` on a model trained on the prior stream (query shown):
    per k, what the Bayes-optimal predictor of that stream gives flipped labels (`prior_bayes_flipped`)."""
    if task != "prior" or "flipped" not in cfg.labels or cfg.query_in_context is False:
        return None
    layout = toy_data_config(model)
    if not isinstance(layout, FewShotDataConfig) or layout.stream != "prior":
        return None
    return [dict(zip(("k", "p_answer", "p_gold"), (k, *prior_bayes_flipped(layout, k)))) for k in cfg.shots]


def vector_tasks(model: TransformerBridge, task: str) -> tuple[str, ...]:
    """The tasks `--function-vectors` covers: every task of a tasks-stream model, else `task`."""
    tasks = model_tasks(model)
    return tasks if task in FUNCTION_TASKS and task in tasks else (task,)


def _phases(shape, dtype, budget, cfg: FewShotConfig):
    return fewshot_phases(shape, cfg, dtype)


def fewshot(model: ModelLike, cfg: FewShotConfig | None = None, *, progress: bool = False) -> FewShotReport:
    """Accuracy vs k per label variant (`evaluate_fewshot`); if asked for, the head-set ablation, the
    per-label-variant head attribution and the function vectors; for ``--task prior`` on a
    prior-stream model, the Bayes-optimal reference for flipped labels."""
    cfg = cfg or FewShotConfig()
    start = time.perf_counter()
    phases = partial(_phases, cfg=cfg)
    if not isinstance(model, TransformerBridge):
        check_plan("fewshot", model, phases)  # before loading: from the config alone
    model = resolve_model(model)
    check_plan("fewshot", model, phases)
    if cfg.attribute:
        check_attribution_size(model, cfg.attribute)
    n_heads = int(model.cfg.n_layers) * int(model.cfg.n_heads)
    if cfg.function_vectors is not None and cfg.function_vectors.n_heads > n_heads:
        raise TaskError(f"n_heads = {cfg.function_vectors.n_heads} exceeds the model's {n_heads} heads (function vectors)")
    torch.manual_seed(cfg.seed)
    task = cfg.task if cfg.task is not None else default_task(model)
    results = evaluate_fewshot(model, task, cfg.labels, cfg.shots, n_prompts=cfg.n_prompts, seed=cfg.seed,
                               query_in_context=cfg.query_in_context, n_orders=cfg.orders,
                               batch_size=cfg.batch_size, n_bootstrap=cfg.n_bootstrap, progress=progress)
    k = cfg.ablate_shots if cfg.ablate_shots is not None else max(cfg.shots)
    prompts = FewShotPromptConfig(task=task, labels=cfg.labels[0], k=k, n_prompts=cfg.n_prompts,
                                  query_in_context=cfg.query_in_context, seed=cfg.seed)
    ablation = attribution = vectors = None
    if cfg.ablating:
        ablation = ablate_fewshot_heads(model, prompts, n_heads=cfg.ablate_top_k or None, heads=cfg.ablate_heads,
                                        n_draws=cfg.ablate_draws, method=cfg.ablate_method,
                                        n_bootstrap=cfg.n_bootstrap, progress=progress)
    if cfg.attribute:
        attribution = attribute_fewshot_heads(model, prompts, cfg.labels, n_heads=cfg.attribute,
                                              n_draws=cfg.ablate_draws, method=cfg.ablate_method,
                                              n_bootstrap=cfg.n_bootstrap, progress=progress)
    if cfg.function_vectors is not None:
        vectors = function_vectors(model, vector_tasks(model, task), cfg.function_vectors, seed=cfg.seed,
                                   batch_size=cfg.batch_size, n_bootstrap=cfg.n_bootstrap)
    info = model_info(model)
    settings = {**cfg.to_dict(), "task": task}
    if task not in TEXT_TASKS:
        settings["toy_layout"] = toy_data_config(model).resolved().to_dict()
    prov = provenance(info.spec, info.checkpoint, cfg.seed, settings, time.perf_counter() - start,
                      **placement(model))
    return FewShotReport(model=info.spec, task=task, labels=list(cfg.labels), shots=results, ablation=ablation,
                         attribution=attribution, function_vectors=vectors,
                         bayes_flipped=bayes_reference(model, cfg, task), provenance=prov)
