"""Function vectors (Todd et al. 2024): the heads that carry a task from the demonstrations to the
query, the vector they write, and what adding it does to prompts that show no task.

For each task t (every task of a model trained on the tasks stream, else the one task asked for):

1. Clean prompts: `k` gold demonstrations and a query whose input is not among them.
   ``mean_z[t][l, h]``: head (l, h)'s `hook_z` at the query position, averaged over them (`mean_head_z`).
2. Corrupted prompts: the same prompts with their labels shuffled among the demonstrations (label
   variant ``shuffled``): inputs, labels shown and format kept, the input-label relation (the task) gone.
3. Causal indirect effect (Todd et al. eq. 4): ``IE_t(l, h)`` = P(gold answer) on the corrupted
   prompts with head (l, h)'s `hook_z` at the query replaced by ``mean_z[t][l, h]``, minus P(gold
   answer) without; one intervened run per head, through the `circuits.engine` engine (`indirect_effects`).
4. The function vector: the `n_heads` heads with the largest IE averaged over the tasks (Todd et al.
   choose one head set for all tasks), ``FV_t = sum_(l,h) mean_z[t][l, h] @ W_O[l, h]`` (their mean
   output, `circuits.hooks.head_outputs`).
5. Zero-shot accuracy with and without ``FV_t`` added at the query position where those heads write:
   `blocks.{L}.hook_attn_out`, L the last layer among them, so a model with MLPs reads it in layer
   L's MLP onwards (what the heads' own output would reach).

Zero-shot prompts come in two forms, both scored on the same queries (`zero_shot_prompts`):

- ``bare``: BOS and the query alone, Todd et al.'s zero-shot prompt. This is the form of the
  CONTRACT's `zero_shot_accuracy` / `fv_zero_shot_accuracy`.
- ``format``: `n_filler` demonstrations whose input and label are both unrelated tokens (outside
  every task: Min et al.'s "no inputs, no labels"), then the query: the prompt format with no
  information about any task (`format_zero_shot_accuracy` / `fv_format_zero_shot_accuracy`).
  Todd et al. also evaluate the vector in uninformative contexts (shuffled labels, natural text).

The two can differ a lot: in a bare prompt the query sits at position 1, where the model has seen
only a first demonstration's input. The lift depends on the trained model's seed (README,
"Function vectors", has the measured lifts over seeds 0-4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits import Head
from circuits.engine import ZEdit, sweep_head_z
from circuits.hooks import attn_out_name, head_outputs, n_layers_heads, z_name
from induction.common.checks import check_min
from induction.common.stats import DEFAULT_RESAMPLES, bootstrap_mean_ci
from induction.inputs.task_inference import TaskError
from induction.inputs.tasks import Demo, Episode, Task
from induction.measures.fewshot.evaluate import fewshot_per_prompt, query_logprobs, run_prompts
from induction.measures.fewshot.render import (
    FewShotPromptConfig,
    FewShotPrompts,
    prompt_stream,
    render,
    sample_episodes,
    task_for_model,
)

ZERO_SHOT_FORMS = ("bare", "format")


@dataclass
class FunctionVectorConfig:
    """Settings of the function vectors (`function_vectors`; `induction fewshot --function-vectors`).

    Attributes:
        k: demonstrations of the clean and the shuffled-label prompts the heads' mean outputs and
            indirect effects come from (8).
        n_prompts: clean and shuffled prompts per task, and zero-shot prompts per task (100).
        n_heads: heads in the vector: those with the largest indirect effect averaged over the tasks (4).
        n_filler: uninformative demonstrations before the query of a format-only zero-shot prompt (4).
    """

    k: int = 8
    n_prompts: int = 100
    n_heads: int = 4
    n_filler: int = 4

    def __post_init__(self) -> None:
        check_min("k", self.k, 2, TaskError)  # shuffling labels needs two demonstrations
        for name in ("n_prompts", "n_heads", "n_filler"):
            check_min(name, getattr(self, name), 1, TaskError)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ZeroShot:
    """Zero-shot accuracy of one prompt form, without and with the function vector (95% bootstrap CIs)."""

    form: str
    accuracy: float
    accuracy_ci: tuple[float, float] | None
    fv_accuracy: float
    fv_accuracy_ci: tuple[float, float] | None

    @property
    def lift(self) -> float:
        return self.fv_accuracy - self.accuracy


@dataclass
class TaskFunctionVector:
    """One task's function vector and what it does.

    Attributes:
        task: the task.
        indirect_effects: `[layer, head_index]`, this task's causal indirect effect of each head.
        vector: `[d_model]`, FV_t (the vector's heads' mean outputs at the query, summed).
        clean_accuracy: k-shot accuracy on the clean prompts.
        shuffled_accuracy: k-shot accuracy on the shuffled-label prompts (the corrupted runs).
        shuffled_prob: mean P(gold answer) on the shuffled-label prompts (the IE's baseline).
        zero_shot: per prompt form (`ZERO_SHOT_FORMS`), accuracy without and with the vector.
    """

    task: str
    indirect_effects: Float[Tensor, "layer head_index"]
    vector: Float[Tensor, " d_model"]
    clean_accuracy: float
    shuffled_accuracy: float
    shuffled_prob: float
    zero_shot: dict[str, ZeroShot] = field(default_factory=dict)


@dataclass
class FunctionVectors:
    """Function vectors of several tasks, from one head set added at one place.

    Attributes:
        config: the settings.
        heads: the vector's heads, largest mean indirect effect first.
        layer: FV_t is added to `blocks.{layer}.hook_attn_out` at the query position.
        tasks: one `TaskFunctionVector` per task.
    """

    config: FunctionVectorConfig
    heads: list[Head]
    layer: int
    tasks: list[TaskFunctionVector]

    @property
    def mean_indirect_effects(self) -> Float[Tensor, "layer head_index"]:
        return torch.stack([t.indirect_effects for t in self.tasks]).mean(0)

    def to_json(self) -> list[dict[str, Any]]:
        """The CONTRACT's ``function_vectors`` list: per task, every head's indirect effect (and
        whether it is in the vector), and zero-shot accuracy without and with the vector."""
        out = []
        chosen = set(self.heads)
        for t in self.tasks:
            n_layers, n_heads = t.indirect_effects.shape
            bare, fmt = t.zero_shot["bare"], t.zero_shot["format"]
            out.append({
                "task": t.task,
                "heads": [{"layer": layer, "head": h, "indirect_effect": float(t.indirect_effects[layer, h]),
                           "in_vector": (layer, h) in chosen} for layer in range(n_layers) for h in range(n_heads)],
                "zero_shot_accuracy": bare.accuracy, "fv_zero_shot_accuracy": bare.fv_accuracy,
                "zero_shot_accuracy_ci": _ci(bare.accuracy_ci), "fv_zero_shot_accuracy_ci": _ci(bare.fv_accuracy_ci),
                "format_zero_shot_accuracy": fmt.accuracy, "fv_format_zero_shot_accuracy": fmt.fv_accuracy,
                "format_zero_shot_accuracy_ci": _ci(fmt.accuracy_ci),
                "fv_format_zero_shot_accuracy_ci": _ci(fmt.fv_accuracy_ci),
                "vector_heads": [list(h) for h in self.heads], "layer": self.layer,
                "vector_norm": float(t.vector.norm()), "clean_accuracy": t.clean_accuracy,
                "shuffled_accuracy": t.shuffled_accuracy, "shuffled_prob": t.shuffled_prob,
            })
        return out


def _ci(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else list(interval)


# ---- the pieces ------------------------------------------------------------------------------------


@torch.no_grad()
def mean_head_z(model: TransformerBridge, prompts: FewShotPrompts) -> Float[Tensor, "layer head_index d_head"]:
    """Every head's `hook_z` at each prompt's query position (`answer_pos`), averaged over prompts (float32)."""
    n_layers, _ = n_layers_heads(model)
    names = {z_name(layer) for layer in range(n_layers)}
    _, cache = model.run_with_cache(prompts.tokens, names_filter=lambda name: name in names)
    z = [cache[z_name(layer)] for layer in range(n_layers)]
    rows = torch.arange(len(prompts), device=z[0].device)
    pos = prompts.answer_pos.to(z[0].device)
    return torch.stack([zl[rows, pos].float().mean(0) for zl in z])


def gold_probability(prompts: FewShotPrompts):
    """logits -> the mean over prompts of P(gold answer's first token) at the query position."""
    logprob = fewshot_per_prompt(prompts, target="gold", kind="logprob")
    return lambda logits: logprob(logits).exp().mean()


@torch.no_grad()
def indirect_effects(
    model: TransformerBridge, corrupted: FewShotPrompts, mean_z: Float[Tensor, "layer head_index d_head"]
) -> tuple[Float[Tensor, "layer head_index"], float]:
    """(IE[layer, head], baseline): P(gold answer) on `corrupted` with one head's `hook_z` at the query
    position set to `mean_z[layer, head]`, minus the baseline P(gold answer) without the edit.

    Each run edits every position of one head's `hook_z`, with the corrupted run's own value
    everywhere except at the query, so prompts of different lengths (text) need no common position.
    """
    n_layers, n_heads = n_layers_heads(model)
    names = {z_name(layer) for layer in range(n_layers)}
    _, cache = model.run_with_cache(corrupted.tokens, names_filter=lambda name: name in names)
    device = cache[z_name(0)].device
    rows, pos = torch.arange(len(corrupted), device=device), corrupted.answer_pos.to(device)

    def source(layer: int) -> Tensor:
        z = cache[z_name(layer)].clone()
        z[rows, pos] = mean_z[layer].to(z.device, z.dtype)
        return z

    runs = [(ZEdit(layer, h),) for layer in range(n_layers) for h in range(n_heads)]
    result = sweep_head_z(model, corrupted.tokens, gold_probability(corrupted), runs, source)
    return (result.values - result.baseline).reshape(n_layers, n_heads), float(result.baseline)


def function_vector(
    model: TransformerBridge, mean_z: Float[Tensor, "layer head_index d_head"], heads: Sequence[Head]
) -> Float[Tensor, " d_model"]:
    """The heads' mean outputs summed: sum over (l, h) of `mean_z[l, h] @ W_O[l, h]` (float32)."""
    total = torch.zeros(int(model.cfg.d_model), device=mean_z.device)
    for layer, h in heads:
        out = head_outputs(mean_z[layer][None, None], model.W_O[layer].detach().float().to(mean_z.device))
        total = total + out[0, 0, h]
    return total


@torch.no_grad()
def accuracy_with_vector(
    model: TransformerBridge, prompts: FewShotPrompts, vector: Float[Tensor, " d_model"] | None, layer: int,
    batch_size: int = 32,
) -> Float[Tensor, " batch"]:
    """Each prompt's top-1 correctness (vs its in-context answer) with `vector` added to
    `blocks.{layer}.hook_attn_out` at its query position (None: no edit)."""
    if vector is None:
        return run_prompts(model, prompts, batch_size).correct
    parts = []
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, start + batch_size)
        pos = prompts.answer_pos[rows]

        def add(out: Tensor, hook: Any, pos: Tensor = pos) -> Tensor:
            out = out.clone()
            out[torch.arange(out.shape[0], device=out.device), pos.to(out.device)] += vector.to(out.device, out.dtype)
            return out

        logits = model.run_with_hooks(prompts.tokens[rows], fwd_hooks=[(attn_out_name(layer), add)])
        pred = query_logprobs(logits, pos).argmax(-1).cpu()
        parts.append((pred == prompts.answer[rows]).float())
    return torch.cat(parts)


def zero_shot_prompts(
    model: TransformerBridge, task: Task, form: str, n_prompts: int, n_filler: int, seed: int
) -> FewShotPrompts:
    """Zero-shot prompts of `task` (module docstring): ``bare`` (BOS and the query) or ``format``
    (`n_filler` demonstrations of unrelated inputs and labels, then the query). Both forms share
    their queries for a given seed."""
    if form not in ZERO_SHOT_FORMS:
        raise TaskError(f"unknown zero-shot form {form!r}; choose one of {', '.join(ZERO_SHOT_FORMS)}")
    if form == "format" and (not task.random_inputs or not task.unrelated):
        raise TaskError(f"task {task.name!r} has no unrelated inputs and labels for format-only prompts")
    queries = sample_episodes(task, FewShotPromptConfig(task=task.name, k=0, n_prompts=n_prompts, seed=seed))
    gen = prompt_stream(seed, 0, 6)
    pick = lambda items: items[int(torch.randint(len(items), (1,), generator=gen, device="cpu"))]  # noqa: E731
    episodes = []
    for ep in queries:
        demos = () if form == "bare" else tuple(
            Demo(x, y, y) for x, y in ((pick(task.random_inputs), pick(task.unrelated)) for _ in range(n_filler))
        )
        episodes.append(Episode(demos, ep.query, ep.gold, ep.gold))
    k = 0 if form == "bare" else n_filler
    return render(model, task, episodes, FewShotPromptConfig(task=task.name, k=k, n_prompts=n_prompts, seed=seed))


# ---- the job's computation ---------------------------------------------------------------------------


def function_vectors(
    model: TransformerBridge,
    tasks: Sequence[str],
    cfg: FunctionVectorConfig | None = None,
    seed: int = 0,
    batch_size: int = 32,
    n_bootstrap: int = DEFAULT_RESAMPLES,
) -> FunctionVectors:
    """Indirect effects, function vectors and their zero-shot effect for each of `tasks` (module docstring)."""
    cfg = cfg or FunctionVectorConfig()
    if not tasks:
        raise TaskError("function vectors: give at least one task")
    n_layers, n_heads = n_layers_heads(model)
    if cfg.n_heads > n_layers * n_heads:
        raise TaskError(f"n_heads {cfg.n_heads} exceeds the model's {n_layers * n_heads} heads")
    found = []
    for name in tasks:
        task = task_for_model(model, name, query_in_context=False)
        clean, shuffled = (
            render(model, task, sample_episodes(task, prompt_cfg), prompt_cfg)
            for prompt_cfg in (FewShotPromptConfig(task=name, labels=labels, k=cfg.k, n_prompts=cfg.n_prompts,
                                                   query_in_context=False, seed=seed)
                               for labels in ("gold", "shuffled"))
        )
        mean_z = mean_head_z(model, clean)
        effects, baseline = indirect_effects(model, shuffled, mean_z)
        found.append((name, task, clean, shuffled, mean_z, effects, baseline))

    mean_ie = torch.stack([f[5] for f in found]).mean(0)
    order = sorted(((layer, h) for layer in range(n_layers) for h in range(n_heads)), key=lambda lh: -float(mean_ie[lh]))
    heads = order[: cfg.n_heads]
    layer = max(layer for layer, _ in heads)

    results = []
    for name, task, clean, shuffled, mean_z, effects, baseline in found:
        vector = function_vector(model, mean_z, heads)
        zero_shot = {}
        for form in ZERO_SHOT_FORMS:
            prompts = zero_shot_prompts(model, task, form, cfg.n_prompts, cfg.n_filler, seed)
            without = accuracy_with_vector(model, prompts, None, layer, batch_size)
            with_fv = accuracy_with_vector(model, prompts, vector, layer, batch_size)
            zero_shot[form] = ZeroShot(form, float(without.mean()), bootstrap_mean_ci(without, n_bootstrap, seed=seed),
                                       float(with_fv.mean()), bootstrap_mean_ci(with_fv, n_bootstrap, seed=seed))
        results.append(TaskFunctionVector(
            task=name, indirect_effects=effects, vector=vector.cpu(),
            clean_accuracy=float(run_prompts(model, clean, batch_size).correct.mean()),
            shuffled_accuracy=float(run_prompts(model, shuffled, batch_size).correct.mean()),
            shuffled_prob=baseline, zero_shot=zero_shot,
        ))
    return FunctionVectors(config=cfg, heads=heads, layer=layer, tasks=results)
