"""Bootstrap confidence intervals, the one statistical tool every report uses."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def bootstrap_mean_ci(
    values: np.ndarray | Tensor | list[float], n_bootstrap: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of `values` (resampling its first axis); None when
    there are fewer than two values or no resamples."""
    x = np.asarray(values, dtype=np.float64)
    if n_bootstrap <= 0 or len(x) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_bootstrap, len(x)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def average_ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1 of the flattened values, tied values sharing their mean rank."""
    values = torch.as_tensor(x).flatten().double()
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(len(values), dtype=torch.float64)
    _, group, counts = values.unique(return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, group, ranks)
    return (sums / counts)[group]


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (tie-averaged) ranks; NaN if one is constant."""
    ra, rb = (r - r.mean() for r in (average_ranks(a), average_ranks(b)))
    denom = ra.norm() * rb.norm()
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")
