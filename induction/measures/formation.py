"""Formation of induction heads over training: per-checkpoint results and the phase change.

Olsson et al. (2022), argument 1: induction heads and in-context learning appear together, in a
phase change early in training. `induction.jobs.track` scores every checkpoint of a run
(`CheckpointScores`: per-head scores, ICL score, held-out loss) and `detect_phase_change` finds the
change in the curves:

Phase change (`detect_phase_change`): on the log-step axis (checkpoints with step >= 1), the joint
progress g = mean(u, v) of u = best prefix-matching (max over heads) min-max normalised to [0, 1] and
v = the ICL score's fall, normalised the same way (left out when the ICL score moves by less than
`min_icl_range` nats). A logistic g ~ a + b * sigmoid((log step - x0) / w) with b > 0 is fitted by
least squares (grid search over x0 and w; a, b in closed form). ``step`` = exp(x0), the steepest
point of the fit; ``start_step`` / ``end_step`` = exp(x0 -/+ w ln 9), where the change is 10% / 90%
complete (clipped to the tracked steps). None when the best prefix-matching score never reaches
`threshold` (default: the detector's prefix threshold, 0.4), as for a 1-layer model, or when there
are fewer than 3 checkpoints with step >= 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence, Union

import numpy as np

from induction.heads.records import HeadTable

Curve = Union[Sequence[float], Sequence[int], np.ndarray]  # one value per checkpoint


@dataclass
class CheckpointScores:
    """One checkpoint's scores (an entry of the track report's "checkpoints")."""

    step: int
    tokens_seen: int | None
    loss: float | None
    held_out_loss: float
    icl_score: float | None
    heads: list[dict[str, Any]]  # a `HeadTable` once constructed
    icl: dict[str, Any] | None = None
    revision: str | None = None
    ablation: dict[str, Any] | None = None
    icl_per_sequence: list[float] | None = None  # each ICL sequence's score: cached, not in the JSON
    paths: list[dict[str, Any]] | None = None
    path_inputs: dict[str, Any] | None = None

    audit: dict[str, Any] | None = None  # `induction.measures.audit.checkpoint_audit_data`

    def __post_init__(self) -> None:
        self.heads = HeadTable(self.heads)

    def best_head(self) -> dict[str, Any]:
        """The head with the highest prefix-matching score (`HeadTable.best`)."""
        return self.heads.best()

    @property
    def best_prefix_matching(self) -> float:
        return float(self.best_head()["prefix_matching"])

    @property
    def induction_heads(self) -> list[tuple[int, int]]:
        return self.heads.induction_heads()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["heads"] = list(self.heads)
        out.pop("icl_per_sequence")
        for optional in ("revision", "ablation", "paths", "path_inputs", "audit"):
            if out[optional] is None:
                out.pop(optional)
        return out

    @property
    def induction_set(self) -> dict[str, Any] | None:
        """`track --ablate`'s block for the final induction heads at this checkpoint (`induction_set_block`)."""
        return None if self.ablation is None else self.ablation.get("induction_set")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckpointScores":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


@dataclass
class PhaseChange:
    """The phase change: its steepest point and the steps where it is 10% and 90% complete."""

    step: int
    start_step: int
    end_step: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the final induction heads' share of the ICL score (track --ablate) -------------------------

SHARE_MIN_ICL = 0.05
"""The share of the ICL score a head set carries is reported only where the unablated ICL score is
at most -SHARE_MIN_ICL nats: near 0 (or positive) there is no in-context learning to share out."""


def icl_share(effect: float, baseline: float) -> float | None:
    """effect / -baseline: the fraction of the ICL score an ablation removes (1: all of it, so the
    ablated model's ICL score is 0; above 1: ablated, it does worse late in the context than early),
    or None where the ICL score is above -`SHARE_MIN_ICL`."""
    return None if baseline > -SHARE_MIN_ICL else effect / -baseline


def induction_set_block(heads: Sequence[dict[str, Any]], effect: Any | None) -> dict[str, Any] | None:
    """One checkpoint's numbers for the final induction heads (`track --ablate`).

    Args:
        heads: the checkpoint's head records (each with ``ablation_effect``).
        effect: its `induction.measures.effects.HeadSetEffect` for the final induction heads, or None (no
            induction heads at the final checkpoint: then the block is None).

    Returns ``{"joint_effect", "summed_single_effects", "share", "control_mean_effect",
    "control_std_effect", "control_min_effect", "control_max_effect", "control_share",
    "n_control_sets"}``: the joint effect; the sum of the set's single-head effects (smaller than the
    joint one when the heads back each other up); `icl_share` of the joint effect; and the mean,
    standard deviation (over draws, ddof 0), range and `icl_share` of the layer-matched random
    sets' joint effects, None where there is no control.
    """
    if effect is None:
        return None
    single = {(int(h["layer"]), int(h["head"])): float(h["ablation_effect"]) for h in heads}
    control = np.asarray(effect.control_effects, dtype=float) if effect.control_effects else None
    mean = None if control is None else float(control.mean())
    return {
        "joint_effect": effect.joint_effect,
        "summed_single_effects": float(sum(single[tuple(h)] for h in effect.heads)),
        "share": icl_share(effect.joint_effect, effect.baseline),
        "control_mean_effect": mean,
        "control_std_effect": None if control is None else float(control.std()),
        "control_min_effect": None if control is None else float(control.min()),
        "control_max_effect": None if control is None else float(control.max()),
        "control_share": None if mean is None else icl_share(mean, effect.baseline),
        "n_control_sets": 0 if control is None else len({tuple(map(tuple, s)) for s in effect.control_heads}),
    }


# ---- phase change -------------------------------------------------------------------------------

def phase_change_of(
    checkpoints: Sequence[CheckpointScores], threshold: float = 0.4, min_icl_range: float = 0.05
) -> PhaseChange | None:
    """`detect_phase_change` on a run's checkpoints (any order)."""
    if not checkpoints:
        return None
    return detect_phase_change(
        [c.step for c in checkpoints], [c.best_prefix_matching for c in checkpoints],
        None if any(c.icl_score is None for c in checkpoints) else [c.icl_score for c in checkpoints],
        threshold=threshold, min_icl_range=min_icl_range,
    )


def detect_phase_change(
    steps: Curve,
    best_prefix_matching: Curve,
    icl_scores: Curve | None = None,
    threshold: float = 0.4,
    min_icl_range: float = 0.05,
) -> PhaseChange | None:
    """The phase change of a training run's curves, or None (algorithm: module docstring).

    Args:
        steps: training steps of the checkpoints (any order; steps < 1 are left out: log axis).
        best_prefix_matching: max over heads of the prefix-matching score, per checkpoint.
        icl_scores: the ICL score per checkpoint (it falls as in-context learning appears), or None.
        threshold: the best prefix-matching score must reach this, else None.
        min_icl_range: the ICL score counts only if it moves by at least this (nats).
    """
    s = np.asarray(steps, dtype=float)
    p = np.asarray(best_prefix_matching, dtype=float)
    c = np.asarray(icl_scores, dtype=float) if icl_scores is not None else np.full_like(s, np.nan)
    if not (s.shape == p.shape == c.shape):
        raise ValueError("steps, best_prefix_matching and icl_scores must have the same length")
    keep = (s >= 1) & np.isfinite(p)
    s, p, c = s[keep], p[keep], c[keep]
    order = np.argsort(s)
    s, p, c = s[order], p[order], c[order]
    if len(s) < 3 or p.max() < threshold or p.max() - p.min() <= 0:
        return None
    parts = [(p - p.min()) / (p.max() - p.min())]
    if np.isfinite(c).all() and c.max() - c.min() >= max(min_icl_range, 1e-12):
        parts.append((c.max() - c) / (c.max() - c.min()))
    g = np.mean(parts, axis=0)
    x = np.log(s)
    fit = _fit_logistic(x, g)
    if fit is None:
        return None
    x0, w = fit
    half = w * math.log(9.0)  # sigmoid(+-ln 9) = 0.9 / 0.1
    lo, hi = x[0], x[-1]
    to_step = lambda v: int(round(math.exp(min(max(v, lo), hi))))  # noqa: E731
    return PhaseChange(step=to_step(x0), start_step=to_step(x0 - half), end_step=to_step(x0 + half))


def _fit_logistic(x: np.ndarray, g: np.ndarray) -> tuple[float, float] | None:
    """(x0, w) of the least-squares fit g ~ a + b sigmoid((x - x0) / w) with b > 0, or None.

    Grid search, then a finer grid around the best point. Among near-equal fits (a jump between two
    checkpoints fits any x0 between them) take the widest w, and the mean x0 at that w.
    """
    span = float(x[-1] - x[0])
    if span <= 0:
        return None
    x0s = np.linspace(x[0], x[-1], 241)
    ws = np.geomspace(span * 1e-4, span, 81)
    best = _grid(x, g, x0s, ws)
    if best is None:
        return None
    x0, w = best
    dx = x0s[1] - x0s[0]
    refined = _grid(x, g, np.linspace(x0 - 2 * dx, x0 + 2 * dx, 81), np.geomspace(w / 1.6, w * 1.6, 41))
    return refined if refined is not None else best


def _grid(x: np.ndarray, g: np.ndarray, x0s: np.ndarray, ws: np.ndarray) -> tuple[float, float] | None:
    n = len(x)
    z = (x[None, None, :] - x0s[:, None, None]) / ws[None, :, None]
    sig = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))  # [x0, w, checkpoint]
    sc = sig - sig.mean(-1, keepdims=True)
    gc = g - g.mean()
    var_s = (sc**2).sum(-1)
    cov = (sc * gc).sum(-1)
    sst = float((gc**2).sum())
    valid = (var_s > 1e-12) & (cov > 0)
    if not valid.any() or sst <= 0:
        return None
    sse = np.where(valid, sst - cov**2 / np.where(valid, var_s, 1.0), np.inf)
    tol = sse.min() + 1e-6 * sst + 1e-12 * n
    near = sse <= tol
    wi = int(np.nonzero(near.any(0))[0].max())  # the widest near-optimal w
    x0 = float(x0s[near[:, wi]].mean())
    return x0, float(ws[wi])
