"""Bootstrap confidence intervals, the one statistical tool every report uses."""

from __future__ import annotations

import numpy as np
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
