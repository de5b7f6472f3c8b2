"""The x axis of formation figures: the training step, or the tokens seen (``--x-axis tokens``).

Suites of different batch sizes (Pythia's 2,097,152 tokens per step, OLMo's) only line up against
tokens; a phase change is drawn at the tokens of the checkpoints it lies between (linear in step).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Sequence

from induction.measures.formation import CheckpointScores

X_AXES = ("step", "tokens")
TITLES = {"step": "training step (log scale)", "tokens": "tokens seen (log scale)"}


def check_x_axis(x_axis: str, points: Sequence[CheckpointScores] = ()) -> None:
    """Refuse an unknown axis, or ``tokens`` when a checkpoint's tokens seen are unknown."""
    if x_axis not in X_AXES:
        raise ValueError(f"x_axis must be one of {', '.join(X_AXES)}, got {x_axis!r}")
    if x_axis == "tokens":
        unknown = [c.step for c in points if c.tokens_seen is None]
        if unknown:
            raise ValueError(f"x_axis tokens: the tokens seen at step {unknown[0]} are unknown (give tokens_per_step)")


def plotted(points: Sequence[CheckpointScores], x_axis: str) -> list[CheckpointScores]:
    """The checkpoints a log axis can show (step, or tokens, at least 1)."""
    check_x_axis(x_axis, points)
    return [c for c in points if (c.step if x_axis == "step" else c.tokens_seen) >= 1]


def x_of(c: CheckpointScores, x_axis: str) -> float:
    return float(c.step if x_axis == "step" else c.tokens_seen)


def step_to_x(step: int | float, points: Sequence[CheckpointScores], x_axis: str) -> float:
    """Where `step` sits on the axis: itself, or the tokens interpolated between the checkpoints around it."""
    if x_axis == "step" or not points:
        return float(step)
    ordered = sorted(points, key=lambda c: c.step)
    steps = [c.step for c in ordered]
    i = bisect_left(steps, step)
    if i < len(steps) and steps[i] == step:
        return float(ordered[i].tokens_seen)
    lo, hi = ordered[max(i - 1, 0)], ordered[min(i, len(ordered) - 1)]
    if hi.step == lo.step:
        return float(lo.tokens_seen)
    return lo.tokens_seen + (hi.tokens_seen - lo.tokens_seen) * (step - lo.step) / (hi.step - lo.step)
