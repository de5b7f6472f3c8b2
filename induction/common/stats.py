"""Statistics every report shares: percentile-bootstrap intervals and rank correlation.

One rule for intervals: the percentile bootstrap (Efron & Tibshirani 1993) at `level`, i.e. the
(1 - level)/2 and (1 + level)/2 quantiles of resampled statistics (`percentile_interval`). The
resampling unit is the first axis (prompts, sequences, or random draws).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> np.ndarray:
    """The percentile interval of resampled statistics `samples` (first axis): `[..., 2]` (low, high)."""
    lo, hi = np.quantile(np.asarray(samples, dtype=np.float64), [(1 - level) / 2, (1 + level) / 2], axis=0)
    return np.stack([lo, hi], axis=-1)


_RESAMPLE_BUDGET = 2**22
"""Resampled entries drawn at once: memory stays bounded however many values are resampled."""


def bootstrap_means(values: np.ndarray | Tensor, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """Means of `n_bootstrap` resamples (with replacement) of the first axis: `[n_bootstrap, ...]`.

    Resamples are drawn in chunks of about `_RESAMPLE_BUDGET` entries; the draws, and so the result,
    are the same as drawing the whole `[n_bootstrap, n]` index matrix at once.
    """
    x = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = len(x)
    rows = max(1, _RESAMPLE_BUDGET // max(1, n * max(1, x[0].size if n else 1)))
    means = []
    for start in range(0, n_bootstrap, rows):
        idx = rng.integers(0, n, size=(min(rows, n_bootstrap - start), n))
        means.append(x[idx].mean(axis=1))
    return np.concatenate(means) if means else np.empty((0, *x.shape[1:]))


def bootstrap_ci(
    values: np.ndarray | Tensor, n_bootstrap: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, seed: int = 0
) -> np.ndarray | None:
    """Percentile bootstrap interval of the mean over the first axis, for every trailing entry:
    `[..., 2]`; None when there are fewer than two values or no resamples."""
    if n_bootstrap <= 0 or len(values) < 2:
        return None
    return percentile_interval(bootstrap_means(values, n_bootstrap, seed), level)


def bootstrap_mean_ci(
    values: np.ndarray | Tensor | list[float], n_bootstrap: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> tuple[float, float] | None:
    """`bootstrap_ci` of a 1-D sample, as a (low, high) pair (None as there)."""
    ci = bootstrap_ci(np.asarray(values, dtype=np.float64), n_bootstrap, level, seed)
    return None if ci is None else (float(ci[0]), float(ci[1]))


def average_ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1 of the flattened values, tied values sharing their mean rank."""
    values = torch.as_tensor(x, device="cpu").flatten().double()
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(len(values), dtype=torch.float64, device="cpu")
    _, group, counts = values.unique(return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=torch.float64, device="cpu").index_add_(0, group, ranks)
    return (sums / counts)[group]


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (tie-averaged) ranks; NaN if one is constant."""
    ra, rb = (r - r.mean() for r in (average_ranks(a), average_ranks(b)))
    denom = ra.norm() * rb.norm()
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")
