"""Few-shot prompts: label manipulations, accuracy by number of shots, and the heads that carry it.

Pipeline: a task (`induction.tasks`) samples gold `Episode`s; `manipulate` changes their labels;
`render` turns them into tokens (`FewShotPrompts`); `score_logits` / `evaluate_fewshot` score a
model; `ablate_fewshot_heads` asks which heads carry the accuracy.

Label manipulations (`LABEL_VARIANTS`), applied to the demonstrations only; each defines the
*in-context answer*, the label the demonstrations imply for the query:

- ``gold``: the task's labels. In-context answer = gold.
- ``random``: each demonstration's label drawn uniformly from the task's label space (Min et al.
  2022). In-context answer = the label shown with the query's input if a demonstration shows that
  input (the last one that does), else gold.
- ``flipped``: a per-prompt derangement pi of the label space (a permutation with no fixed point;
  Wei et al. 2023's flipped labels) applied to every label. In-context answer = pi(gold).
- ``unrelated``: a per-prompt injective map phi from the labels in the prompt to tokens (words)
  outside the label space (Wei et al. 2023's semantically-unrelated labels). In-context answer =
  phi(gold).
- ``random_inputs``: each demonstration's input replaced by a random input from outside the task,
  its gold label kept: format and label space kept, input distribution broken (Min et al. 2022).
  In-context answer = gold.
- ``random_label_space``: each demonstration's label replaced by a random token (word) from outside
  the label space, independently: format and inputs kept, label space broken (Min et al. 2022).
  In-context answer as for ``random``.

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

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Hashable, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from induction.models import model_info
from induction.stats import bootstrap_mean_ci
from induction.tasks import (
    TASKS,
    TEXT_TASKS,
    TOY_TASKS,
    Demo,
    Episode,
    FewShotDataConfig,
    Task,
    TaskError,
    TextTask,
    ToyVocab,
    load_text_task,
    toy_task,
)

LABEL_VARIANTS = ("gold", "random", "flipped", "unrelated", "random_inputs", "random_label_space")
TARGETS = ("answer", "gold")


# ---- configuration -----------------------------------------------------------------------------


@dataclass
class FewShotConfig:
    """One set of few-shot prompts.

    Attributes:
        task: one of `induction.tasks.TASKS` (lookup, rule, classification; antonyms,
            country_capital, word_category).
        labels: one of `LABEL_VARIANTS` (module docstring).
        k: demonstrations per prompt (shots), >= 0.
        n_prompts: prompts (the unit of the bootstrap confidence intervals), >= 1.
        query_in_context: rule / classification: a k >= 1 prompt shows the query's input / class
            (lookup always does, text tasks never do).
        shuffle: reorder each prompt's demonstrations at random (same demonstrations, new order).
        seed: seeds the episodes; the label manipulation and the shuffle use their own streams
            derived from it, so every label variant of a (seed, k) shares its gold episodes.
    """

    task: str = "lookup"
    labels: str = "gold"
    k: int = 4
    n_prompts: int = 200
    query_in_context: bool = True
    shuffle: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise TaskError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.labels not in LABEL_VARIANTS:
            raise TaskError(f"unknown label variant {self.labels!r}; choose one of {', '.join(LABEL_VARIANTS)}")
        if self.k < 0:
            raise TaskError(f"the number of shots must be >= 0, got {self.k}")
        if self.n_prompts < 1:
            raise TaskError(f"n_prompts must be >= 1, got {self.n_prompts}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- label manipulations -----------------------------------------------------------------------


def derangement(n: int, generator: torch.Generator) -> list[int]:
    """A uniformly random permutation of range(n) with no fixed point (by rejection; P ~ 1/e)."""
    if n < 2:
        raise TaskError(f"flipped labels need a label space of at least 2 labels, got {n}")
    while True:
        perm = torch.randperm(n, generator=generator)
        if not bool((perm == torch.arange(n)).any()):
            return perm.tolist()


def _shown_for_query(demos: Sequence[Demo], query: Hashable, fallback: Hashable) -> Hashable:
    for demo in reversed(demos):
        if demo.x == query:
            return demo.y
    return fallback


def manipulate(episode: Episode, variant: str, task: Task, generator: torch.Generator) -> Episode:
    """The episode with its demonstrations' labels (or inputs) manipulated (module docstring)."""
    demos, gold = episode.demos, episode.gold
    pick = lambda items: items[int(torch.randint(len(items), (1,), generator=generator))]  # noqa: E731
    if variant == "gold":
        return episode
    if variant == "flipped":
        space = list(task.labels)
        perm = derangement(len(space), generator)
        flip = {label: space[perm[i]] for i, label in enumerate(space)}
        return Episode(tuple(replace(d, y=flip[d.gold]) for d in demos), episode.query, gold, flip[gold])
    if variant == "unrelated":
        present = list(dict.fromkeys([d.gold for d in demos] + [gold]))
        pool = [t for t in task.unrelated if t not in set(task.labels)]
        if len(present) > len(pool):
            raise TaskError(
                f"unrelated labels: a prompt with {len(present)} distinct labels needs as many unrelated "
                f"substitutes, task {task.name!r} has {len(pool)}; use fewer shots"
            )
        order = torch.randperm(len(pool), generator=generator).tolist()
        phi = {label: pool[order[i]] for i, label in enumerate(present)}
        return Episode(tuple(replace(d, y=phi[d.gold]) for d in demos), episode.query, gold, phi[gold])
    if variant in ("random", "random_label_space"):
        space = task.labels if variant == "random" else tuple(t for t in task.unrelated if t not in set(task.labels))
        new = tuple(replace(d, y=pick(space)) for d in demos)
        return Episode(new, episode.query, gold, _shown_for_query(new, episode.query, gold))
    if variant == "random_inputs":
        pool = task.random_inputs
        new = tuple(replace(d, x=pick(pool)) for d in demos)
        return Episode(new, episode.query, gold, gold)
    raise TaskError(f"unknown label variant {variant!r}; choose one of {', '.join(LABEL_VARIANTS)}")


def shuffle_demos(episode: Episode, generator: torch.Generator) -> Episode:
    """The same episode with its demonstrations in a random order."""
    order = torch.randperm(episode.k, generator=generator).tolist()
    return replace(episode, demos=tuple(episode.demos[i] for i in order))


# ---- rendering ---------------------------------------------------------------------------------


@dataclass
class FewShotPrompts:
    """Rendered few-shot prompts, right-padded to a common length.

    Attributes:
        tokens: [batch, pos] token ids (BOS first where the model uses one).
        answer_pos: [batch] the position whose logits predict the answer: the query's last token.
        answer: [batch] the in-context answer's (first) token.
        gold: [batch] the gold label's (first) token.
        label_pos: [batch, k] positions of the demonstrations' (first) label tokens.
        episodes: what was rendered, one `Episode` per prompt.
        config: the settings that built them.
    """

    tokens: Int[Tensor, "batch pos"]
    answer_pos: Int[Tensor, " batch"]
    answer: Int[Tensor, " batch"]
    gold: Int[Tensor, " batch"]
    label_pos: Int[Tensor, "batch k"]
    episodes: list[Episode]
    config: FewShotConfig

    def __len__(self) -> int:
        return self.tokens.shape[0]


def render_toy(episodes: Sequence[Episode], vocab: ToyVocab, sep: bool, config: FewShotConfig) -> FewShotPrompts:
    """``[BOS] x SEP y DELIM ... x SEP`` (or without SEP), one token per symbol."""
    rows, label_pos = [], []
    first = int(vocab.bos is not None)
    for ep in episodes:
        row = [vocab.bos] if vocab.bos is not None else []
        for d in ep.demos:
            row += [d.x, vocab.sep, d.y, vocab.delim] if sep else [d.x, d.y, vocab.delim]
        row += [ep.query, vocab.sep] if sep else [ep.query]
        rows.append(row)
        step = 3 + sep
        label_pos.append([first + i * step + 1 + sep for i in range(ep.k)])
    tokens = torch.tensor(rows, dtype=torch.long)
    n = len(episodes)
    return FewShotPrompts(
        tokens=tokens, answer_pos=torch.full((n,), tokens.shape[1] - 1, dtype=torch.long),
        answer=torch.tensor([ep.answer for ep in episodes], dtype=torch.long),
        gold=torch.tensor([ep.gold for ep in episodes], dtype=torch.long),
        label_pos=torch.tensor(label_pos, dtype=torch.long).reshape(n, config.k), episodes=list(episodes), config=config,
    )


def text_prompt(episode: Episode, task: TextTask) -> tuple[str, list[int]]:
    """The prompt string and the character offsets of the demonstrations' labels."""
    parts, offsets, n = [], [], 0
    for d in episode.demos:
        head = f"{d.x}{task.separator} "
        offsets.append(n + len(head))
        line = f"{head}{d.y}{task.delimiter}"
        parts.append(line)
        n += len(line)
    parts.append(f"{episode.query}{task.separator}")
    return "".join(parts), offsets


def first_answer_token(tokenizer: Any, prompt: str, prompt_ids: list[int], answer: str) -> int:
    """The first token of `answer` as it continues `prompt` after a space (how a model would write it)."""
    full = tokenizer(prompt + " " + answer, add_special_tokens=False)["input_ids"]
    if len(full) > len(prompt_ids) and full[: len(prompt_ids)] == prompt_ids:
        return int(full[len(prompt_ids)])
    alone = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    if not alone:
        raise TaskError(f"the tokenizer turns the answer {answer!r} into no tokens")
    return int(alone[0])


def render_text(
    episodes: Sequence[Episode], task: TextTask, tokenizer: Any, bos_token_id: int | None, config: FewShotConfig
) -> FewShotPrompts:
    """Tokenise text episodes (BOS first where the model uses one), right-padded with the pad token."""
    rows, answers, golds, label_pos = [], [], [], []
    first = int(bos_token_id is not None)
    for ep in episodes:
        text, offsets = text_prompt(ep, task)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        spans = enc.get("offset_mapping") or [(0, 0)] * len(ids)
        pos = []
        for c in offsets:  # the first token that ends after the label's first character
            pos.append(first + next((i for i, (_, end) in enumerate(spans) if end > c), len(ids) - 1))
        rows.append(([bos_token_id] if first else []) + ids)
        label_pos.append(pos)
        answers.append(first_answer_token(tokenizer, text, ids, str(ep.answer)))
        golds.append(first_answer_token(tokenizer, text, ids, str(ep.gold)))
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else getattr(tokenizer, "eos_token_id", None)
    pad = pad if pad is not None else 0
    length = max(len(r) for r in rows)
    tokens = torch.full((len(rows), length), int(pad), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    n = len(episodes)
    return FewShotPrompts(
        tokens=tokens, answer_pos=torch.tensor([len(r) - 1 for r in rows], dtype=torch.long),
        answer=torch.tensor(answers, dtype=torch.long), gold=torch.tensor(golds, dtype=torch.long),
        label_pos=torch.tensor(label_pos, dtype=torch.long).reshape(n, config.k), episodes=list(episodes), config=config,
    )


# ---- building prompts for a model --------------------------------------------------------------


def toy_data_config(model: TransformerBridge) -> FewShotDataConfig:
    """The toy task layout of `model`: the one it was trained on, else the default for its vocabulary."""
    info = model_info(model)
    if FewShotDataConfig.is_fewshot_data(info.data):
        cfg = FewShotDataConfig.from_dict(info.data)
        if cfg.d_vocab != model.cfg.d_vocab:
            raise TaskError(f"the model's recorded few-shot data has d_vocab {cfg.d_vocab}, the model {model.cfg.d_vocab}")
        return cfg
    seq_len = max(int(model.cfg.n_ctx), 16)
    return FewShotDataConfig(d_vocab=model.cfg.d_vocab, seq_len=seq_len, bos_token_id=info.bos_token_id)


def task_for_model(model: TransformerBridge, name: str, query_in_context: bool = True) -> Task:
    """The `Task` called `name`, set up for `model` (its toy layout, or its tokenizer for text tasks)."""
    if name in TOY_TASKS:
        return toy_task(name, toy_data_config(model), query_in_context)
    if name in TEXT_TASKS:
        if getattr(model, "tokenizer", None) is None:
            raise TaskError(
                f"task {name!r} is a text task and this model has no tokenizer; "
                f"use a token-level task ({', '.join(TOY_TASKS)})"
            )
        return load_text_task(name)
    raise TaskError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")


def _stream(seed: int, *salt: int) -> torch.Generator:
    mixed = int(seed) * 1_000_003
    for s in salt:
        mixed = (mixed * 31 + s) % (2**62)
    return torch.Generator().manual_seed(mixed)


def sample_episodes(task: Task, cfg: FewShotConfig) -> list[Episode]:
    """`cfg.n_prompts` manipulated (and optionally shuffled) episodes, reproducible from `cfg.seed`.

    The gold episodes depend on (seed, k) only, so every label variant manipulates the same ones.
    """
    task.check_shots(cfg.k)
    episodes_gen = _stream(cfg.seed, cfg.k, 1)
    labels_gen = _stream(cfg.seed, cfg.k, 2, LABEL_VARIANTS.index(cfg.labels))
    order_gen = _stream(cfg.seed, cfg.k, 3)
    out = []
    for _ in range(cfg.n_prompts):
        ep = manipulate(task.sample(cfg.k, episodes_gen), cfg.labels, task, labels_gen)
        if cfg.shuffle:
            ep = shuffle_demos(ep, order_gen)
        out.append(ep)
    return out


def render(model: TransformerBridge, task: Task, episodes: Sequence[Episode], cfg: FewShotConfig) -> FewShotPrompts:
    """Render episodes for `model` and check that they fit its context."""
    if task.kind == "text":
        prompts = render_text(episodes, task, model.tokenizer, model_info(model).bos_token_id, cfg)
    else:
        data = toy_data_config(model)
        prompts = render_toy(episodes, data.vocab, data.sep, cfg)
    if prompts.tokens.shape[1] > model.cfg.n_ctx:
        raise TaskError(
            f"k={cfg.k} demonstrations make {task.name} prompts of {prompts.tokens.shape[1]} tokens, beyond the "
            f"model's context of {model.cfg.n_ctx}; use fewer shots"
        )
    return prompts


def build_prompts(model: TransformerBridge, cfg: FewShotConfig | None = None, **overrides: Any) -> FewShotPrompts:
    """Few-shot prompts for `model` as `cfg` (or `FewShotConfig(**overrides)`) says.

    Example (a metric for `circuits.ablate_heads`)::

        prompts = build_prompts(model, task="lookup", k=8, n_prompts=64)
        values = circuits.ablate_heads(model, prompts.tokens, fewshot_metric(prompts))
    """
    cfg = replace(cfg, **overrides) if cfg is not None else FewShotConfig(**overrides)
    task = task_for_model(model, cfg.task, cfg.query_in_context)
    return render(model, task, sample_episodes(task, cfg), cfg)


# ---- scoring -----------------------------------------------------------------------------------


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


def fewshot_metric(
    prompts: FewShotPrompts, target: str = "answer", kind: str = "logprob"
) -> Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]]:
    """A metric for `circuits.ablate_heads` / `patch_heads`: logits [batch, pos, d_vocab] -> 0-d tensor.

    Args:
        prompts: the prompts the logits come from (same order).
        target: "answer" (the in-context answer) or "gold".
        kind: "logprob" (mean log-probability of the target's first token at the query position;
            differentiable, so also usable by attribution patching) or "accuracy" (fraction of
            prompts whose top prediction is the target).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if kind not in ("logprob", "accuracy"):
        raise ValueError(f"kind must be logprob or accuracy, got {kind!r}")
    pos = prompts.answer_pos
    tokens = prompts.answer if target == "answer" else prompts.gold

    def metric(logits: Tensor) -> Tensor:
        if logits.shape[0] != pos.shape[0]:
            raise ValueError(f"fewshot metric: logits for {logits.shape[0]} prompts, expected {pos.shape[0]}")
        logp = query_logprobs(logits, pos)
        if kind == "accuracy":
            return (logp.argmax(-1) == tokens.to(logp.device)).float().mean()
        return logp.gather(1, tokens.to(logp.device)[:, None]).mean()

    return metric


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
        picks = allowed[torch.randint(allowed.numel(), (prompts.label_pos.shape[1],), generator=generator)]
        tokens[b, prompts.label_pos[b]] = picks
    return tokens


def fewshot_metric_setup(
    model: TransformerBridge, task: str = "lookup", shots: int = 4, n_prompts: int = 32, seed: int = 0,
    labels: str = "gold",
):
    """Clean prompts, a corrupted counterpart and `fewshot_metric`, for `induction ablate/patch --metric fewshot`.

    Clean: `build_prompts(model, task=task, labels=labels, k=shots, ...)`; corrupted: `corrupt_labels`;
    metric: mean log-probability of the in-context answer at the query position.
    """
    from induction.effects import MetricSetup

    if shots < 1:
        raise TaskError(f"--metric fewshot needs at least 1 demonstration, got {shots}")
    prompts = build_prompts(model, FewShotConfig(task=task, labels=labels, k=shots, n_prompts=n_prompts, seed=seed))
    corrupted = corrupt_labels(prompts, _stream(seed, shots, 5))
    description = f"{task} few-shot prompts ({n_prompts}, k={shots}, {labels} labels; corrupted: demonstration labels replaced)"
    return MetricSetup("fewshot", prompts.tokens, corrupted, fewshot_metric(prompts), description)


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


# ---- accuracy vs number of shots ---------------------------------------------------------------


@dataclass
class ShotResult:
    """One (label variant, k) point of the accuracy curve."""

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("accuracy_ci", "accuracy_gold_ci"):
            d[key] = None if d[key] is None else list(d[key])
        return d


def evaluate_shots(
    model: TransformerBridge,
    cfg: FewShotConfig,
    n_orders: int = 1,
    batch_size: int = 32,
    n_bootstrap: int = 1000,
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
    gen = _stream(cfg.seed, cfg.k, 4)
    for _ in range(n_orders - 1):
        shuffled = render(model, task, [shuffle_demos(ep, gen) for ep in episodes], cfg)
        runs.append(run_prompts(model, shuffled, batch_size))
    mean = PromptScores(*(torch.stack([getattr(r, f) for r in runs]).mean(0)
                          for f in ("correct", "correct_gold", "logprob", "logprob_gold")))
    result = ShotResult(
        labels=cfg.labels, k=cfg.k, accuracy=float(mean.correct.mean()),
        accuracy_ci=bootstrap_mean_ci(mean.correct, n_bootstrap, seed=cfg.seed),
        accuracy_gold=float(mean.correct_gold.mean()),
        accuracy_gold_ci=bootstrap_mean_ci(mean.correct_gold, n_bootstrap, seed=cfg.seed),
        mean_logprob=float(mean.logprob.mean()), mean_logprob_gold=float(mean.logprob_gold.mean()),
        n_prompts=len(prompts), accuracy_by_order=[float(r.correct.mean()) for r in runs] if n_orders > 1 else None,
    )
    return result, prompts, mean


def evaluate_fewshot(
    model: TransformerBridge,
    task: str = "lookup",
    labels: Sequence[str] = ("gold",),
    shots: Sequence[int] = (0, 1, 2, 4, 8),
    n_prompts: int = 200,
    seed: int = 0,
    query_in_context: bool = True,
    n_orders: int = 1,
    batch_size: int = 32,
    n_bootstrap: int = 1000,
    progress: bool = False,
) -> list[ShotResult]:
    """Accuracy vs number of shots k, for each label variant (one `ShotResult` per (labels, k)).

    All settings are checked before any forward pass, so a bad k or label fails fast.
    """
    configs = [
        FewShotConfig(task=task, labels=variant, k=int(k), n_prompts=n_prompts, query_in_context=query_in_context, seed=seed)
        for variant in labels for k in shots
    ]
    if not configs:
        raise TaskError("no label variants or shots to evaluate")
    check = task_for_model(model, task, query_in_context)
    for cfg in configs:
        check.check_shots(cfg.k)
        render(model, check, sample_episodes(check, replace(cfg, n_prompts=1)), cfg)  # context / label checks
    out = []
    for cfg in tqdm(configs, desc="few-shot", disable=not progress, leave=False):
        out.append(evaluate_shots(model, cfg, n_orders, batch_size, n_bootstrap)[0])
    return out


# ---- which heads carry it ----------------------------------------------------------------------


@dataclass
class HeadSetResult:
    """Few-shot scores with a set of heads ablated (empty: the unablated model)."""

    heads: list[tuple[int, int]]
    accuracy: float
    accuracy_ci: tuple[float, float] | None
    mean_logprob: float
    mean_logprob_ci: tuple[float, float] | None
    correct: Tensor = field(repr=False)
    logprob: Tensor = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "heads": [list(h) for h in self.heads], "accuracy": self.accuracy,
            "accuracy_ci": None if self.accuracy_ci is None else list(self.accuracy_ci),
            "mean_logprob": self.mean_logprob,
            "mean_logprob_ci": None if self.mean_logprob_ci is None else list(self.mean_logprob_ci),
        }


@dataclass
class FewShotAblation:
    """Ablating the top heads by prefix-matching score vs layer-matched random heads (Crosbie & Shutova 2024).

    Attributes:
        config: the prompts' settings.
        method: the ablation (`circuits.ablate_head_set`'s method).
        prefix_matching: the top heads' prefix-matching scores, in `top.heads` order.
        baseline, top: unablated; top heads ablated (CIs: bootstrap over prompts).
        random: one result per layer-matched random draw.
        random_accuracy, random_accuracy_ci: mean over draws, and a bootstrap CI over draws.
        drop_difference, drop_difference_ci: (accuracy with random heads ablated, averaged over
            draws) - (accuracy with the top heads ablated); CI by a joint bootstrap over prompts and
            draws. Positive: the top heads carry more of the accuracy than random heads.
    """

    config: FewShotConfig
    method: str
    prefix_matching: list[float]
    baseline: HeadSetResult
    top: HeadSetResult
    random: list[HeadSetResult]
    random_accuracy: float
    random_accuracy_ci: tuple[float, float] | None
    random_logprob: float
    drop_difference: float
    drop_difference_ci: tuple[float, float] | None

    @property
    def n_distinct_random_sets(self) -> int:
        """Distinct random head sets among the draws (few when the layers have few other heads)."""
        return len({tuple(r.heads) for r in self.random})

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.config.task, "labels": self.config.labels, "k": self.config.k,
            "n_prompts": self.config.n_prompts, "method": self.method,
            "top_heads": [list(h) for h in self.top.heads], "prefix_matching": self.prefix_matching,
            "baseline": self.baseline.to_dict(), "top": self.top.to_dict(),
            "random": [r.to_dict() for r in self.random],
            "n_distinct_random_sets": self.n_distinct_random_sets,
            "random_accuracy": self.random_accuracy,
            "random_accuracy_ci": None if self.random_accuracy_ci is None else list(self.random_accuracy_ci),
            "random_mean_logprob": self.random_logprob,
            "drop_difference": self.drop_difference,
            "drop_difference_ci": None if self.drop_difference_ci is None else list(self.drop_difference_ci),
        }


def _head_set_result(heads, correct: Tensor, logprob: Tensor, n_bootstrap: int, seed: int) -> HeadSetResult:
    return HeadSetResult(
        heads=[(int(l), int(h)) for l, h in heads], accuracy=float(correct.mean()),
        accuracy_ci=bootstrap_mean_ci(correct, n_bootstrap, seed=seed), mean_logprob=float(logprob.mean()),
        mean_logprob_ci=bootstrap_mean_ci(logprob, n_bootstrap, seed=seed), correct=correct, logprob=logprob,
    )


def top_prefix_heads(model: TransformerBridge, n_heads: int | None = None, seed: int = 0, n_prompts: int = 32) -> tuple[list[tuple[int, int]], list[float]]:
    """`induction.scores.top_prefix_heads`, with a `TaskError` for a bad count."""
    from induction.scores import top_prefix_heads as top

    try:
        return top(model, n_heads, seed, n_prompts)
    except ValueError as exc:
        raise TaskError(str(exc)) from None


def ablate_fewshot_heads(
    model: TransformerBridge,
    cfg: FewShotConfig,
    n_heads: int | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
    n_draws: int = 10,
    method: str = "zero",
    n_bootstrap: int = 1000,
    progress: bool = False,
) -> FewShotAblation:
    """Few-shot accuracy with the top prefix-matching heads ablated vs layer-matched random heads.

    Crosbie & Shutova (2024) ablate the heads with the highest prefix-matching scores and compare with
    as many random heads; here the random sets come from the same layers as the top set
    (`circuits.layer_matched_random_heads`, `n_draws` seeded draws) and each set is ablated together
    with `circuits.ablate_head_set` (all positions, `method` = zero | mean | resample | pattern).

    Args:
        cfg: the prompts (task, label variant, k, n_prompts, seed).
        n_heads: how many top heads (None: the number of detected induction heads, at least 1).
        heads: the set to ablate instead of the top prefix-matching heads.
        n_draws: random layer-matched sets.
    """
    try:
        from circuits import ablate_head_set, layer_matched_random_heads
    except ImportError as exc:  # pragma: no cover - circuits ships with the package
        raise TaskError(f"head ablation needs circuits.ablate_head_set and layer_matched_random_heads ({exc})") from None
    if n_draws < 1:
        raise TaskError(f"n_draws must be >= 1, got {n_draws}")
    prompts = build_prompts(model, cfg)
    if heads is None:
        top, prefix = top_prefix_heads(model, n_heads, cfg.seed)
    else:
        top = [(int(l), int(h)) for l, h in heads]
        from induction.scores import ScoreConfig, score_heads  # their scores, for the report

        pm = score_heads(model, ScoreConfig(n_bootstrap=0)).prefix_matching
        prefix = [float(pm[l, h]) for l, h in top]
    draws = layer_matched_random_heads(model, top, n_draws=n_draws, seed=cfg.seed)

    record: list[PromptScores] = []

    def metric(logits: Tensor) -> Tensor:
        scores = score_logits(logits, prompts)
        record.append(scores)
        return scores.logprob.mean()

    def ablated(head_set: Sequence[tuple[int, int]]) -> PromptScores:
        value = ablate_head_set(model, prompts.tokens, metric, list(head_set), method=method, seed=cfg.seed)
        last = record[-1]
        if not np.isclose(float(last.logprob.mean()), value, rtol=1e-5, atol=1e-5):
            raise RuntimeError("circuits.ablate_head_set did not score the ablated run last; cannot read per-prompt values")
        return last

    base = run_prompts(model, prompts)
    results = []
    for head_set in tqdm([top, *draws], desc="ablating head sets", disable=not progress, leave=False):
        s = ablated(head_set)
        results.append(_head_set_result(head_set, s.correct, s.logprob, n_bootstrap, cfg.seed))
    top_result, random_results = results[0], results[1:]
    rand_acc = np.array([r.accuracy for r in random_results])
    # Joint bootstrap over prompts and draws of (mean random-set accuracy) - (top-set accuracy).
    top_c = top_result.correct.double().numpy()
    rand_c = np.stack([r.correct.double().numpy() for r in random_results])  # [draw, prompt]
    diff_ci = None
    if n_bootstrap > 0 and len(top_c) > 1:
        rng = np.random.default_rng(cfg.seed)
        p = rng.integers(0, len(top_c), size=(n_bootstrap, len(top_c)))
        d = rng.integers(0, len(rand_c), size=(n_bootstrap, len(rand_c)))
        boot = np.array([rand_c[d[b]][:, p[b]].mean() - top_c[p[b]].mean() for b in range(n_bootstrap)])
        diff_ci = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))
    return FewShotAblation(
        config=cfg, method=method, prefix_matching=prefix,
        baseline=_head_set_result([], base.correct, base.logprob, n_bootstrap, cfg.seed),
        top=top_result, random=random_results, random_accuracy=float(rand_acc.mean()),
        random_accuracy_ci=bootstrap_mean_ci(rand_acc, n_bootstrap, seed=cfg.seed),
        random_logprob=float(np.mean([r.mean_logprob for r in random_results])),
        drop_difference=float(rand_acc.mean() - top_result.accuracy), drop_difference_ci=diff_ci,
    )


# ---- the report --------------------------------------------------------------------------------


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}]"


@dataclass
class FewShotReport:
    """`induction fewshot`: accuracy vs number of shots per label variant, and optionally the head ablation.

    JSON (CONTRACT): ``{"model", "task", "labels", "shots": [{"k", "accuracy", "accuracy_ci",
    "mean_logprob", ...}], "provenance"}``. With one label variant ``labels`` is its name; with
    several it is their list and every shot entry names its variant in ``"labels"``.
    """

    model: str
    task: str
    labels: list[str]
    shots: list[ShotResult]
    ablation: FewShotAblation | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    title = "Few-shot accuracy"
    columns = ("labels", "k", "accuracy", "ci_low", "ci_high", "accuracy_gold", "mean_logprob", "mean_logprob_gold", "n_prompts")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model, "task": self.task,
            "labels": self.labels[0] if len(self.labels) == 1 else list(self.labels),
            "shots": [s.to_dict() for s in self.shots],
        }
        if self.ablation is not None:
            out["ablation"] = self.ablation.to_dict()
        out["provenance"] = self.provenance
        return out

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"labels": s.labels, "k": s.k, "accuracy": s.accuracy,
             "ci_low": None if s.accuracy_ci is None else s.accuracy_ci[0],
             "ci_high": None if s.accuracy_ci is None else s.accuracy_ci[1],
             "accuracy_gold": s.accuracy_gold, "mean_logprob": s.mean_logprob,
             "mean_logprob_gold": s.mean_logprob_gold, "n_prompts": s.n_prompts}
            for s in self.shots
        ]

    def summary(self) -> list[str]:
        lines = [
            f"model: {self.model}; task: {self.task}; labels: {', '.join(self.labels)}",
            "accuracy: top-1 match with the answer the demonstrations imply; accuracy_gold: with the task's gold label",
        ]
        a = self.ablation
        if a is not None:
            heads = ", ".join(f"L{l}H{h}" for l, h in a.top.heads)
            lines.append(f"head ablation ({a.method}, k={a.config.k}, {a.config.n_prompts} prompts, labels {a.config.labels}):")
            lines.append(f"  unablated accuracy {a.baseline.accuracy:.3f}{_fmt_ci(a.baseline.accuracy_ci)}")
            lines.append(f"  top prefix-matching heads {heads} ablated: {a.top.accuracy:.3f}{_fmt_ci(a.top.accuracy_ci)}")
            lines.append(
                f"  {len(a.random)} layer-matched random sets ({a.n_distinct_random_sets} distinct) ablated: "
                f"mean {a.random_accuracy:.3f}{_fmt_ci(a.random_accuracy_ci)} (over draws)"
            )
            lines.append(f"  random minus top: {a.drop_difference:.3f}{_fmt_ci(a.drop_difference_ci)}")
        return lines

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=list(self.columns))

    def plot(self, kind: str = "shots"):
        """``shots``: accuracy vs k per label variant; ``ablation``: the head-ablation comparison."""
        from induction import plots  # figures read reports (see induction.plots)

        if kind == "shots":
            return plots.plot_fewshot(self)
        if kind == "ablation":
            if self.ablation is None:
                raise ValueError("this report has no head ablation (run with ablate > 0)")
            return plots.plot_fewshot_ablation(self.ablation)
        raise ValueError(f"unknown few-shot plot {kind!r}; choose shots or ablation")


def fewshot_report(
    model: TransformerBridge,
    task: str = "lookup",
    labels: Sequence[str] = ("gold",),
    shots: Sequence[int] = (0, 1, 2, 4, 8),
    ablate: int = 0,
    ablate_shots: int | None = None,
    ablate_draws: int = 10,
    ablate_method: str = "zero",
    provenance_fn: Callable[[dict[str, Any], float], dict[str, Any]] | None = None,
    **kwargs: Any,
) -> FewShotReport:
    """Run `evaluate_fewshot` (and, with `ablate` > 0, `ablate_fewshot_heads` on that many top heads
    at `ablate_shots` shots, default the largest k, with the first label variant) into a report."""
    start = time.perf_counter()
    results = evaluate_fewshot(model, task, labels, shots, **kwargs)
    ablation = None
    if ablate:
        cfg = FewShotConfig(task=task, labels=labels[0], k=ablate_shots if ablate_shots is not None else max(shots),
                            n_prompts=kwargs.get("n_prompts", 200), query_in_context=kwargs.get("query_in_context", True),
                            seed=kwargs.get("seed", 0))
        ablation = ablate_fewshot_heads(model, cfg, n_heads=ablate, n_draws=ablate_draws, method=ablate_method,
                                        n_bootstrap=kwargs.get("n_bootstrap", 1000), progress=kwargs.get("progress", False))
    info = model_info(model)
    settings = {"task": task, "labels": list(labels), "shots": [int(k) for k in shots],
                **{k: v for k, v in kwargs.items() if k != "progress"},
                "ablate": ablate, "ablate_shots": ablate_shots, "ablate_draws": ablate_draws, "ablate_method": ablate_method}
    if task in TOY_TASKS:
        settings["toy_layout"] = toy_data_config(model).resolved().to_dict()
    prov = provenance_fn(settings, time.perf_counter() - start) if provenance_fn else {"settings": settings}
    return FewShotReport(model=info.spec, task=task, labels=list(labels), shots=results, ablation=ablation, provenance=prov)
