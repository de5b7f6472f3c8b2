"""Scoring few-shot prompts: accuracy and log-probability of the in-context and gold answers.

Two accuracies are always reported: ``accuracy``, agreement with the in-context answer (does the
model follow the demonstrations?), and ``accuracy_gold``, agreement with the gold label (does it
still answer the task?). Both are exact matches of the model's top prediction (argmax over the whole
vocabulary) at the query's last token with the answer's first token. For ``gold`` they coincide. On
``lookup`` the gold label of a ``flipped`` prompt is never shown, so a model that follows the
demonstrations scores ``accuracy`` ~1 and ``accuracy_gold`` 0. Whether an in-context answer is
inferable depends on the task: on toy tasks the query's input (lookup, rule) or class
(classification) is shown; on text tasks the query pair never is, so there ``flipped`` and
``unrelated`` are only inferable when a demonstration shares the query's gold label (word_category,
six labels) and not on one-to-one tasks (antonyms, country_capital).

`mean_logprob` is the mean log-probability of the in-context answer's first token at the query
position (`mean_logprob_gold` the gold one's); `fewshot_metric(prompts)` is the same number as a
function of logits, for `circuits.ablate_heads` / `patch_heads`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits.progress import progress_bar
from induction.common.stats import DEFAULT_RESAMPLES, bootstrap_mean_ci
from induction.inputs.task_inference import TaskError, TasksVocab
from induction.inputs.tasks import FunctionTask
from induction.measures.fewshot.labels import shuffle_demos
from induction.measures.fewshot.render import (
    FewShotPromptConfig,
    FewShotPrompts,
    build_prompts,
    prompt_stream,
    render,
    sample_episodes,
    task_for_model,
)
from induction.measures.metrics import MetricSetup

TARGETS = ("answer", "gold")


@dataclass
class PromptScores:
    """Per-prompt results: top-1 correctness and log-probability, of the in-context and gold answers."""

    correct: Float[Tensor, " batch"]
    correct_gold: Float[Tensor, " batch"]
    logprob: Float[Tensor, " batch"]
    logprob_gold: Float[Tensor, " batch"]

    @classmethod
    def cat(cls, parts: Sequence["PromptScores"]) -> "PromptScores":
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in ("correct", "correct_gold", "logprob", "logprob_gold")))


def query_logprobs(
    logits: Float[Tensor, "batch pos d_vocab"], answer_pos: Int[Tensor, " batch"]
) -> Float[Tensor, "batch d_vocab"]:
    """Log-softmax of the logits at each prompt's answer position."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return torch.log_softmax(logits[rows, answer_pos.to(logits.device)].float(), dim=-1)


def score_logits(logits: Float[Tensor, "batch pos d_vocab"], prompts: FewShotPrompts) -> PromptScores:
    """Correctness (argmax == answer token) and log-probabilities of each prompt's answers."""
    if logits.shape[0] != len(prompts):
        raise ValueError(f"logits for {logits.shape[0]} prompts, but there are {len(prompts)} prompts")
    logp = query_logprobs(logits, prompts.answer_pos)
    pred = logp.argmax(-1).cpu()
    answer, gold = prompts.answer.to(logp.device), prompts.gold.to(logp.device)
    return PromptScores(
        correct=(pred == prompts.answer).float(), correct_gold=(pred == prompts.gold).float(),
        logprob=logp.gather(1, answer[:, None])[:, 0].cpu(), logprob_gold=logp.gather(1, gold[:, None])[:, 0].cpu(),
    )


def fewshot_per_prompt(
    prompts: FewShotPrompts, target: str = "answer", kind: str = "logprob"
) -> Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, " batch"]]:
    """logits -> each prompt's log-probability of the target's first token at the query position
    (`kind="logprob"`, differentiable) or whether it is the top prediction (`kind="accuracy"`).

    Args:
        prompts: the prompts the logits come from (same order).
        target: "answer" (the in-context answer) or "gold".
        kind: "logprob" or "accuracy".
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if kind not in ("logprob", "accuracy"):
        raise ValueError(f"kind must be logprob or accuracy, got {kind!r}")
    pos = prompts.answer_pos
    tokens = prompts.answer if target == "answer" else prompts.gold

    def per_prompt(logits: Tensor) -> Tensor:
        if logits.shape[0] != pos.shape[0]:
            raise ValueError(f"fewshot metric: logits for {logits.shape[0]} prompts, expected {pos.shape[0]}")
        logp = query_logprobs(logits, pos)
        wanted = tokens.to(logp.device)
        if kind == "accuracy":
            return (logp.argmax(-1) == wanted).float()
        return logp.gather(1, wanted[:, None])[:, 0]

    return per_prompt


def fewshot_metric(
    prompts: FewShotPrompts, target: str = "answer", kind: str = "logprob"
) -> Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]]:
    """A metric for `circuits.ablate_heads` / `patch_heads`: the mean over prompts of `fewshot_per_prompt`."""
    per_prompt = fewshot_per_prompt(prompts, target, kind)
    return lambda logits: per_prompt(logits).mean()


def correct_and_logprob(prompts: FewShotPrompts) -> Callable[[Tensor], Float[Tensor, "batch 3"]]:
    """logits -> per prompt, (top-1 correct, log-probability) of the in-context answer and top-1
    correct vs the gold answer; for head-set ablation."""
    correct, logprob = fewshot_per_prompt(prompts, kind="accuracy"), fewshot_per_prompt(prompts)
    correct_gold = fewshot_per_prompt(prompts, target="gold", kind="accuracy")
    return lambda logits: torch.stack([correct(logits), logprob(logits), correct_gold(logits)], dim=-1)


def corrupt_labels(prompts: FewShotPrompts, generator: torch.Generator) -> Int[Tensor, "batch pos"]:
    """The prompts' tokens with every demonstration's (first) label token replaced by another label token.

    The replacement is drawn uniformly from the label tokens that occur in the prompts, never the
    prompt's own in-context answer, so the corrupted prompt (same length, same positions) no longer
    tells the answer: the "corrupted run" for `circuits.patch_heads` with `fewshot_metric`.
    """
    tokens = prompts.tokens.clone()
    pool = torch.unique(torch.cat([prompts.tokens.gather(1, prompts.label_pos).flatten(), prompts.answer]))
    if pool.numel() < 2:
        raise TaskError("cannot corrupt labels: the prompts use fewer than 2 distinct label tokens")
    for b in range(tokens.shape[0]):
        allowed = pool[pool != prompts.answer[b]]
        picks = allowed[torch.randint(allowed.numel(), (prompts.label_pos.shape[1],), generator=generator, device="cpu")]
        tokens[b, prompts.label_pos[b]] = picks
    return tokens


def fewshot_metric_setup(
    model: TransformerBridge, task: str = "lookup", shots: int = 4, n_prompts: int = 32, seed: int = 0,
    labels: str = "gold",
) -> MetricSetup:
    """Clean prompts, a corrupted counterpart and `fewshot_metric`, for `induction ablate/patch --metric fewshot`.

    Clean: `build_prompts(model, task=task, labels=labels, k=shots, ...)`; corrupted: `corrupt_labels`;
    metric: mean log-probability of the in-context answer at the query position.
    """
    if shots < 1:
        raise TaskError(f"the fewshot metric needs at least 1 demonstration (shots), got {shots}")
    prompts = build_prompts(model, FewShotPromptConfig(task=task, labels=labels, k=shots, n_prompts=n_prompts, seed=seed))
    corrupted = corrupt_labels(prompts, prompt_stream(seed, shots, 5))
    description = f"{task} few-shot prompts ({n_prompts}, k={shots}, {labels} labels; corrupted: demonstration labels replaced)"
    return MetricSetup("fewshot", prompts.tokens, corrupted, fewshot_metric(prompts), fewshot_per_prompt(prompts),
                       description)


@torch.no_grad()
def run_prompts(model: TransformerBridge, prompts: FewShotPrompts, batch_size: int = 32) -> PromptScores:
    """Score `model` on `prompts`, `batch_size` prompts per forward."""
    parts = []
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, start + batch_size)
        sub = replace(
            prompts, tokens=prompts.tokens[rows], answer_pos=prompts.answer_pos[rows], answer=prompts.answer[rows],
            gold=prompts.gold[rows], label_pos=prompts.label_pos[rows], episodes=prompts.episodes[rows],
        )
        parts.append(score_logits(model(sub.tokens), sub))
    return PromptScores.cat(parts)


@torch.no_grad()
def answer_probabilities(
    model: TransformerBridge, prompts: FewShotPrompts, answers: Int[Tensor, "batch n"], batch_size: int = 32
) -> Float[Tensor, "batch n"]:
    """Each prompt's probability (float32) of each of its `answers` tokens at the query position."""
    parts = []
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, start + batch_size)
        logp = query_logprobs(model(prompts.tokens[rows]), prompts.answer_pos[rows])
        parts.append(logp.gather(1, answers[rows].to(logp.device)).exp().cpu())
    return torch.cat(parts)


def task_probabilities(
    model: TransformerBridge, prompts: FewShotPrompts, vocab: TasksVocab, batch_size: int = 32
) -> dict[str, float]:
    """For each task s of a tasks-stream layout: the mean probability of f_s(query) over the prompts."""
    names = list(vocab.functions)
    answers = torch.tensor([[vocab.apply(s, ep.query) for s in names] for ep in prompts.episodes], dtype=torch.long, device="cpu")
    probs = answer_probabilities(model, prompts, answers.reshape(len(prompts), len(names)), batch_size)
    return {s: float(probs[:, j].mean()) for j, s in enumerate(names)}


@dataclass
class ShotResult:
    """One (label variant, k) point of the accuracy curve.

    `mean_prob` / `mean_prob_gold`: the mean probability of the in-context / gold answer's first
    token (top-1 accuracy saturates where the probability still moves, e.g. agreement with a prior).
    `task_probs` (models trained on the tasks stream): for each of the model's tasks s, the mean
    probability the model gives f_s(query), the answer task s would give: which task it infers.
    """

    labels: str
    k: int
    accuracy: float
    accuracy_ci: tuple[float, float] | None
    accuracy_gold: float
    accuracy_gold_ci: tuple[float, float] | None
    mean_logprob: float
    mean_logprob_gold: float
    n_prompts: int
    accuracy_by_order: list[float] | None = None
    task_probs: dict[str, float] | None = None
    mean_prob: float | None = None
    mean_prob_gold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("accuracy_ci", "accuracy_gold_ci"):
            d[key] = None if d[key] is None else list(d[key])
        return d


def evaluate_shots(
    model: TransformerBridge,
    cfg: FewShotPromptConfig,
    n_orders: int = 1,
    batch_size: int = 32,
    n_bootstrap: int = DEFAULT_RESAMPLES,
) -> tuple[ShotResult, FewShotPrompts, PromptScores]:
    """Accuracy and log-probability of `model` on the prompts of `cfg`, with bootstrap CIs over prompts.

    With `n_orders` > 1 each prompt is also scored with its demonstrations in `n_orders - 1` random
    orders; a prompt's score is its mean over orders and `accuracy_by_order` lists each order's accuracy.
    """
    if n_orders < 1:
        raise TaskError(f"n_orders must be >= 1, got {n_orders}")
    task = task_for_model(model, cfg.task, cfg.query_in_context)
    episodes = sample_episodes(task, cfg)
    prompts = render(model, task, episodes, cfg)
    runs = [run_prompts(model, prompts, batch_size)]
    gen = prompt_stream(cfg.seed, cfg.k, 4)
    for _ in range(n_orders - 1):
        shuffled = render(model, task, [shuffle_demos(ep, gen) for ep in episodes], cfg)
        runs.append(run_prompts(model, shuffled, batch_size))
    mean = PromptScores(*(torch.stack([getattr(r, f) for r in runs]).mean(0)
                          for f in ("correct", "correct_gold", "logprob", "logprob_gold")))
    mean_prob, mean_prob_gold = (torch.stack([getattr(r, f).exp() for r in runs]).mean(0) for f in ("logprob", "logprob_gold"))
    result = ShotResult(
        labels=cfg.labels, k=cfg.k, accuracy=float(mean.correct.mean()),
        accuracy_ci=bootstrap_mean_ci(mean.correct, n_bootstrap, seed=cfg.seed),
        accuracy_gold=float(mean.correct_gold.mean()),
        accuracy_gold_ci=bootstrap_mean_ci(mean.correct_gold, n_bootstrap, seed=cfg.seed),
        mean_logprob=float(mean.logprob.mean()), mean_logprob_gold=float(mean.logprob_gold.mean()),
        n_prompts=len(prompts), accuracy_by_order=[float(r.correct.mean()) for r in runs] if n_orders > 1 else None,
        task_probs=task_probabilities(model, prompts, task.vocab, batch_size) if isinstance(task, FunctionTask) else None,
        mean_prob=float(mean_prob.mean()), mean_prob_gold=float(mean_prob_gold.mean()),
    )
    return result, prompts, mean


def evaluate_fewshot(
    model: TransformerBridge,
    task: str = "lookup",
    labels: Sequence[str] = ("gold",),
    shots: Sequence[int] = (0, 1, 2, 4, 8),
    n_prompts: int = 200,
    seed: int = 0,
    query_in_context: bool | None = None,
    n_orders: int = 1,
    batch_size: int = 32,
    n_bootstrap: int = DEFAULT_RESAMPLES,
    progress: bool = False,
) -> list[ShotResult]:
    """Accuracy vs number of shots k, for each label variant (one `ShotResult` per (labels, k)).

    All settings are checked before any forward pass, so a bad k or label fails fast.
    """
    configs = [
        FewShotPromptConfig(task=task, labels=variant, k=int(k), n_prompts=n_prompts, query_in_context=query_in_context, seed=seed)
        for variant in labels for k in shots
    ]
    if not configs:
        raise TaskError("no label variants or shots to evaluate")
    check = task_for_model(model, task, query_in_context)
    for cfg in configs:
        check.check_shots(cfg.k)
        render(model, check, sample_episodes(check, replace(cfg, n_prompts=1)), cfg)  # context / label checks
    out = []
    for cfg in progress_bar(configs, desc="few-shot", enabled=progress, stage=True, leave=False):
        out.append(evaluate_shots(model, cfg, n_orders, batch_size, n_bootstrap)[0])
    return out
