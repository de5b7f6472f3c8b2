"""Label manipulations of few-shot episodes, applied to the demonstrations only.

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
- ``shuffled``: the demonstrations' labels permuted among the demonstrations (a derangement of
  their positions; with k < 2 nothing changes): the inputs, the labels shown and the format are
  kept, the input-label relation is broken (Todd et al. 2024's corrupted prompts for function
  vectors). In-context answer as for ``random``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Hashable, Sequence

import torch

import circuits
from induction.inputs.task_inference import TaskError
from induction.inputs.tasks import Demo, Episode, Task

LABEL_VARIANTS = ("gold", "random", "flipped", "unrelated", "random_inputs", "random_label_space", "shuffled")


def _shown_for_query(demos: Sequence[Demo], query: Hashable, fallback: Hashable) -> Hashable:
    for demo in reversed(demos):
        if demo.x == query:
            return demo.y
    return fallback


def manipulate(episode: Episode, variant: str, task: Task, generator: torch.Generator) -> Episode:
    """The episode with its demonstrations' labels (or inputs) manipulated (module docstring)."""
    demos, gold = episode.demos, episode.gold
    pick = lambda items: items[int(torch.randint(len(items), (1,), generator=generator, device="cpu"))]  # noqa: E731
    if variant == "gold":
        return episode
    if variant == "flipped":
        space = list(task.labels)
        if len(space) < 2:
            raise TaskError(f"flipped labels need a label space of at least 2 labels, got {len(space)}")
        perm = circuits.derangement(len(space), generator).tolist()
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
        order = torch.randperm(len(pool), generator=generator, device="cpu").tolist()
        phi = {label: pool[order[i]] for i, label in enumerate(present)}
        return Episode(tuple(replace(d, y=phi[d.gold]) for d in demos), episode.query, gold, phi[gold])
    if variant in ("random", "random_label_space"):
        space = task.labels if variant == "random" else tuple(t for t in task.unrelated if t not in set(task.labels))
        new = tuple(replace(d, y=pick(space)) for d in demos)
        return Episode(new, episode.query, gold, _shown_for_query(new, episode.query, gold))
    if variant == "shuffled":
        if len(demos) < 2:
            return episode
        perm = circuits.derangement(len(demos), generator).tolist()
        new = tuple(replace(d, y=demos[perm[i]].y) for i, d in enumerate(demos))
        return Episode(new, episode.query, gold, _shown_for_query(new, episode.query, gold))
    if variant == "random_inputs":
        pool = task.random_inputs
        new = tuple(replace(d, x=pick(pool)) for d in demos)
        return Episode(new, episode.query, gold, gold)
    raise TaskError(f"unknown label variant {variant!r}; choose one of {', '.join(LABEL_VARIANTS)}")


def shuffle_demos(episode: Episode, generator: torch.Generator) -> Episode:
    """The same episode with its demonstrations in a random order."""
    order = torch.randperm(episode.k, generator=generator, device="cpu").tolist()
    return replace(episode, demos=tuple(episode.demos[i] for i in order))
