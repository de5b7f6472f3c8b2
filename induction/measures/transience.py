"""Transience: an ICL score that fades after the phase change (Singh et al. 2023).

Singh et al. ("The transient nature of emergent in-context learning in transformers", 2023) found
that in-context learning can appear and then give way, with longer training, to in-weights
solutions. `track` reports a drop in the ICL score only as two numbers; this module decides whether
the fade is real.

Definition. Among the checkpoints at or after the phase change's end step (`PhaseChange.end_step`),
the *peak* is the one with the best (most negative) ICL score and the *final* one the last
checkpoint. ``fade`` = final ICL score - peak ICL score (nats, >= 0; 0 when the last checkpoint is
the peak). The ICL score is a mean over the same sequences at every checkpoint (`track` draws them
with one seed), so the fade is the mean of per-sequence paired differences, and ``fade_ci`` is the
percentile bootstrap interval of that mean over sequences (`induction.common.stats`). The run is
``transient`` when the interval's lower bound exceeds `TRANSIENCE_THRESHOLD` nats: a fade that the
sequences' noise cannot explain and that is large enough to matter. The peak is chosen on the same
sequences, so a flat curve still shows a small positive fade (the best of noisy values); the
threshold keeps that from being flagged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from induction.common.stats import DEFAULT_RESAMPLES, bootstrap_mean_ci
from induction.measures.formation import CheckpointScores, PhaseChange

TRANSIENCE_THRESHOLD = 0.1
"""Nats: the fade's interval must lie above this for the run to be flagged transient."""


@dataclass
class Transience:
    """The ICL score's fade after the phase change (module docstring); JSON ``track.transience``."""

    peak_step: int
    peak_icl: float
    final_step: int
    final_icl: float
    fade: float
    fade_ci: tuple[float, float] | None
    transient: bool
    threshold: float
    n_sequences: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fade_ci"] = None if self.fade_ci is None else list(self.fade_ci)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Transience":
        d = dict(d)
        d["fade_ci"] = None if d.get("fade_ci") is None else tuple(d["fade_ci"])
        return cls(**d)


def detect_transience(steps: Sequence[int], per_sequence: Sequence[Sequence[float]] | np.ndarray, after_step: int,
                      threshold: float = TRANSIENCE_THRESHOLD, n_bootstrap: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> Transience | None:
    """Transience of per-checkpoint, per-sequence ICL scores (module docstring).

    Args:
        steps: the checkpoints' steps (any order).
        per_sequence: `[checkpoint, sequence]` ICL scores, the same sequences at every checkpoint.
        after_step: only checkpoints at or after this step count (the phase change's end step).
        threshold: nats the fade's interval must lie above to flag the run.
        n_bootstrap: resamples of the interval; 0: no interval, and the run is flagged on the fade itself.
        seed: seeds the bootstrap.

    Returns:
        None when no checkpoint is at or after `after_step`.
    """
    s = np.asarray(steps, dtype=np.int64)
    values = np.asarray(per_sequence, dtype=np.float64)
    if values.ndim != 2 or len(values) != len(s):
        raise ValueError(f"per_sequence must be [checkpoint, sequence] with {len(s)} checkpoints, got shape {values.shape}")
    keep = np.nonzero(s >= after_step)[0]
    if not len(keep):
        return None
    keep = keep[np.argsort(s[keep], kind="stable")]
    means = values[keep].mean(axis=1)
    peak, final = keep[int(np.argmin(means))], keep[-1]
    diff = values[final] - values[peak]
    ci = bootstrap_mean_ci(diff, n_bootstrap, seed=seed)
    fade = float(diff.mean())
    lower = fade if ci is None else ci[0]
    return Transience(peak_step=int(s[peak]), peak_icl=float(values[peak].mean()), final_step=int(s[final]),
                      final_icl=float(values[final].mean()), fade=fade, fade_ci=ci, transient=bool(lower > threshold),
                      threshold=threshold, n_sequences=int(values.shape[1]))


def transience_of(checkpoints: Sequence[CheckpointScores], phase_change: PhaseChange | None,
                  threshold: float = TRANSIENCE_THRESHOLD, n_bootstrap: int = DEFAULT_RESAMPLES,
                  seed: int = 0) -> Transience | None:
    """`detect_transience` on a run's checkpoints after its phase change; None without a phase change
    or without every checkpoint's per-sequence ICL scores (`CheckpointScores.icl_per_sequence`)."""
    if phase_change is None or not checkpoints:
        return None
    per_sequence = [c.icl_per_sequence for c in checkpoints]
    if any(p is None for p in per_sequence) or len({len(p) for p in per_sequence}) != 1:
        return None
    return detect_transience([c.step for c in checkpoints], per_sequence, phase_change.end_step, threshold,
                             n_bootstrap, seed)
