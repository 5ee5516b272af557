"""KID on feature vectors: unbiased MMD^2 with the cubic kernel k(x, y) = (x.y / D + 1)^3, averaged over
random subsets; std is the population std over subsets (np.std / torchmetrics). Pure math on (N, D).

Not named kid.py: `ganops.metrics` re-exports the function `kid`, which would shadow a submodule of that name.
"""

from __future__ import annotations

import numpy as np
import torch


def _poly_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 of x, y (m, D) with k(a, b) = (a.b / D + 1)^3."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3  # (m, m)
    k_yy = (y @ y.T / d + 1) ** 3  # (m, m)
    k_xy = (x @ y.T / d + 1) ** 3  # (m, m)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kid(feats_real: np.ndarray, feats_gen: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of unbiased MMD^2 over `subsets` random subsets.

    feats_real (N1, D), feats_gen (N2, D); each subset draws m = min(subset_size, N1, N2) rows
    without replacement from each set, in float64. Subsets come from `torch.randperm` with a
    generator seeded by `seed`, real before generated — so `torch.manual_seed(seed)` followed by
    torchmetrics' KernelInceptionDistance on the same features gives the same subsets.
    """
    x_all = torch.as_tensor(np.asarray(feats_real), dtype=torch.float64)  # (N1, D)
    y_all = torch.as_tensor(np.asarray(feats_gen), dtype=torch.float64)  # (N2, D)
    m = min(subset_size, len(x_all), len(y_all))
    if m < 2 or subsets < 1:
        raise ValueError(f"KID needs >= 2 samples per set and >= 1 subset (got m={m}, subsets={subsets})")
    g = torch.Generator().manual_seed(seed)
    scores = np.empty(subsets)
    for i in range(subsets):
        x = x_all[torch.randperm(len(x_all), generator=g)[:m]]  # (m, D)
        y = y_all[torch.randperm(len(y_all), generator=g)[:m]]  # (m, D)
        scores[i] = _poly_mmd2(x, y)
    return float(scores.mean()), float(scores.std())
