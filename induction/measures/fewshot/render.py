"""Few-shot prompts for a model: sample episodes, manipulate their labels, render them to tokens.

Token-level tasks render one token per symbol (``[BOS] x y DELIM ... x``, or with SEP); text tasks
render ``"x -> y\n"`` lines through the model's tokenizer, and the answer is the first token of
the label as it continues the prompt after a space.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from induction.common.checks import check_choice, check_min
from induction.inputs.stream_configs import FewShotDataConfig, ToyVocab
from induction.inputs.task_inference import FUNCTION_TASKS, TaskError, TasksDataConfig, TasksVocab
from induction.inputs.tasks import TASKS, TEXT_TASKS, TOY_TASKS, Episode, Task, TextTask, load_text_task, toy_task
from induction.loading.models import model_info
from induction.measures.fewshot.labels import LABEL_VARIANTS, manipulate, shuffle_demos


@dataclass
class FewShotPromptConfig:
    """One set of few-shot prompts.

    Attributes:
        task: one of `induction.inputs.tasks.TASKS` (lookup, rule, classification, prior; a tasks-stream
            model's succ, pred, perm, ...; antonyms, country_capital, word_category).
        labels: one of `LABEL_VARIANTS` (module docstring).
        k: demonstrations per prompt (shots), >= 0.
        n_prompts: prompts (the unit of the bootstrap confidence intervals), >= 1.
        query_in_context: rule / prior / classification / task-inference tasks: whether a k >= 1
            prompt shows the query's input (class); None: the task's default, shown except for the
            task-inference tasks (lookup always shows it, text tasks never do).
        shuffle: reorder each prompt's demonstrations at random (same demonstrations, new order).
        seed: seeds the episodes; the label manipulation and the shuffle use their own streams
            derived from it, so every label variant of a (seed, k) shares its gold episodes.
    """

    task: str = "lookup"
    labels: str = "gold"
    k: int = 4
    n_prompts: int = 200
    query_in_context: bool | None = None
    shuffle: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS, TaskError)
        check_choice("label variant", self.labels, LABEL_VARIANTS, TaskError)
        check_min("the number of shots", self.k, 0, TaskError)
        check_min("n_prompts", self.n_prompts, 1, TaskError)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    config: FewShotPromptConfig

    def __len__(self) -> int:
        return self.tokens.shape[0]


def render_toy(
    episodes: Sequence[Episode], vocab: ToyVocab | TasksVocab, sep: bool, config: FewShotPromptConfig
) -> FewShotPrompts:
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
    tokens = torch.tensor(rows, dtype=torch.long, device="cpu")
    n = len(episodes)
    return FewShotPrompts(
        tokens=tokens, answer_pos=torch.full((n,), tokens.shape[1] - 1, dtype=torch.long, device="cpu"),
        answer=torch.tensor([ep.answer for ep in episodes], dtype=torch.long, device="cpu"),
        gold=torch.tensor([ep.gold for ep in episodes], dtype=torch.long, device="cpu"),
        label_pos=torch.tensor(label_pos, dtype=torch.long, device="cpu").reshape(n, config.k), episodes=list(episodes), config=config,
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


def check_known_words(tokenizer: Any, task_name: str, words: Sequence[str]) -> None:
    """Raise `TaskError` if the tokenizer turns any of `words` into its unknown token.

    A word-level tokenizer that lacks a task's words maps them all to one unknown token, so
    every prompt would ask for the same token and accuracy would be a meaningless 0.00.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return
    unknown = []
    for word in dict.fromkeys(words):
        if unk in tokenizer(" " + word, add_special_tokens=False)["input_ids"]:
            unknown.append(word)
    if unknown:
        shown = ", ".join(repr(w) for w in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise TaskError(
            f"task {task_name!r}: the model's tokenizer does not know {len(unknown)} of its words ({shown}: "
            f"they become the unknown token {tokenizer.unk_token!r}); use a model whose tokenizer encodes them"
        )


def _episode_words(episode: Episode, task: TextTask) -> list[str]:
    words = [w for d in episode.demos for w in (str(d.x), str(d.y))]
    return [*words, str(episode.query), str(episode.answer), str(episode.gold), task.separator.strip()]


def render_text(
    episodes: Sequence[Episode], task: TextTask, tokenizer: Any, bos_token_id: int | None, config: FewShotPromptConfig
) -> FewShotPrompts:
    """Tokenise text episodes (BOS first where the model uses one), right-padded with the pad token.

    Raises `TaskError` naming the words when a prompt or answer contains the unknown token.
    """
    rows, answers, golds, label_pos = [], [], [], []
    first = int(bos_token_id is not None)
    unk = getattr(tokenizer, "unk_token_id", None)
    for ep in episodes:
        text, offsets = text_prompt(ep, task)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        if unk is not None and unk in ids:
            check_known_words(tokenizer, task.name, _episode_words(ep, task))
        spans = enc.get("offset_mapping") or [(0, 0)] * len(ids)
        pos = []
        for c in offsets:  # the first token that ends after the label's first character
            pos.append(first + next((i for i, (_, end) in enumerate(spans) if end > c), len(ids) - 1))
        rows.append(([bos_token_id] if first else []) + ids)
        label_pos.append(pos)
        answers.append(first_answer_token(tokenizer, text, ids, str(ep.answer)))
        golds.append(first_answer_token(tokenizer, text, ids, str(ep.gold)))
        if unk is not None and unk in (answers[-1], golds[-1]):
            check_known_words(tokenizer, task.name, [str(ep.answer), str(ep.gold)])
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else getattr(tokenizer, "eos_token_id", None)
    pad = pad if pad is not None else 0
    length = max(len(r) for r in rows)
    tokens = torch.full((len(rows), length), int(pad), dtype=torch.long, device="cpu")
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long, device="cpu")
    n = len(episodes)
    return FewShotPrompts(
        tokens=tokens, answer_pos=torch.tensor([len(r) - 1 for r in rows], dtype=torch.long, device="cpu"),
        answer=torch.tensor(answers, dtype=torch.long, device="cpu"), gold=torch.tensor(golds, dtype=torch.long, device="cpu"),
        label_pos=torch.tensor(label_pos, dtype=torch.long, device="cpu").reshape(n, config.k), episodes=list(episodes), config=config,
    )


def toy_data_config(model: TransformerBridge) -> FewShotDataConfig | TasksDataConfig:
    """The toy task layout of `model`: the one it was trained on (the few-shot, prior or tasks
    stream), else the default few-shot layout for its vocabulary."""
    info = model_info(model)
    cfg: FewShotDataConfig | TasksDataConfig | None = None
    if TasksDataConfig.is_tasks_data(info.data):
        cfg = TasksDataConfig.from_dict(info.data)
    elif FewShotDataConfig.is_fewshot_data(info.data):
        cfg = FewShotDataConfig.from_dict(info.data)
    if cfg is not None:
        if cfg.d_vocab != model.cfg.d_vocab:
            raise TaskError(f"the model's recorded few-shot data has d_vocab {cfg.d_vocab}, the model {model.cfg.d_vocab}")
        return cfg
    seq_len = max(int(model.cfg.n_ctx), 16)
    return FewShotDataConfig(d_vocab=model.cfg.d_vocab, seq_len=seq_len, bos_token_id=info.bos_token_id)


def model_tasks(model: TransformerBridge) -> tuple[str, ...]:
    """The token-level tasks `model`'s layout offers: a tasks-stream model's own tasks, else `TOY_TASKS`."""
    cfg = toy_data_config(model)
    return cfg.tasks if isinstance(cfg, TasksDataConfig) else TOY_TASKS


def default_task(model: TransformerBridge) -> str:
    """The task `induction fewshot` runs when none is named: ``lookup``, or the first task of a
    model trained on the tasks stream (whose layout has no lookup)."""
    return model_tasks(model)[0]


def task_for_model(model: TransformerBridge, name: str, query_in_context: bool | None = None) -> Task:
    """The `Task` called `name`, set up for `model` (its toy layout, or its tokenizer for text tasks)."""
    if name in TOY_TASKS or name in FUNCTION_TASKS:
        return toy_task(name, toy_data_config(model), query_in_context)
    if name in TEXT_TASKS:
        if getattr(model, "tokenizer", None) is None:
            raise TaskError(
                f"task {name!r} is a text task and this model has no tokenizer; "
                f"use a token-level task ({', '.join(TOY_TASKS)})"
            )
        task = load_text_task(name)
        check_known_words(model.tokenizer, name, [w for pair in task.pairs for w in pair])
        return task
    check_choice("task", name, TASKS, TaskError)
    raise AssertionError("unreachable")


def prompt_stream(seed: int, *salt: int) -> torch.Generator:
    mixed = int(seed) * 1_000_003
    for s in salt:
        mixed = (mixed * 31 + s) % (2**62)
    return torch.Generator(device="cpu").manual_seed(mixed)


def sample_episodes(task: Task, cfg: FewShotPromptConfig) -> list[Episode]:
    """`cfg.n_prompts` manipulated (and optionally shuffled) episodes, reproducible from `cfg.seed`.

    The gold episodes depend on (seed, k) only, so every label variant manipulates the same ones.
    """
    task.check_shots(cfg.k)
    episodes_gen = prompt_stream(cfg.seed, cfg.k, 1)
    labels_gen = prompt_stream(cfg.seed, cfg.k, 2, LABEL_VARIANTS.index(cfg.labels))
    order_gen = prompt_stream(cfg.seed, cfg.k, 3)
    out = []
    for _ in range(cfg.n_prompts):
        ep = manipulate(task.sample(cfg.k, episodes_gen), cfg.labels, task, labels_gen)
        if cfg.shuffle:
            ep = shuffle_demos(ep, order_gen)
        out.append(ep)
    return out


def render(model: TransformerBridge, task: Task, episodes: Sequence[Episode], cfg: FewShotPromptConfig) -> FewShotPrompts:
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


def build_prompts(model: TransformerBridge, cfg: FewShotPromptConfig | None = None, **overrides: Any) -> FewShotPrompts:
    """Few-shot prompts for `model` as `cfg` (or `FewShotPromptConfig(**overrides)`) says.

    Example (a metric for `circuits.ablate_heads`)::

        prompts = build_prompts(model, task="lookup", k=8, n_prompts=64)
        values = circuits.ablate_heads(model, prompts.tokens, fewshot_metric(prompts))
    """
    cfg = replace(cfg, **overrides) if cfg is not None else FewShotPromptConfig(**overrides)
    task = task_for_model(model, cfg.task, cfg.query_in_context)
    return render(model, task, sample_episodes(task, cfg), cfg)
