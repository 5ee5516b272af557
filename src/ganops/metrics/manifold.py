"""Improved precision/recall (Kynkäänniemi et al. 2019) on feature vectors: a sample is inside a manifold
if it lies within some manifold point's distance to its k-th nearest neighbour. Pure math on (N, D).

Not named precision_recall.py: `ganops.metrics` re-exports that function, which would shadow the submodule.
"""

from __future__ import annotations

import numpy as np
import torch


def _kth_nn_radii(feats: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Distance of each row of feats (N, D) to its k-th nearest other row: (N,)."""
    radii = [torch.cdist(feats[s:s + batch_size], feats).kthvalue(k + 1, dim=1).values  # +1: self at 0
             for s in range(0, len(feats), batch_size)]
    return torch.cat(radii)


def _inside(manifold: torch.Tensor, radii: torch.Tensor, query: torch.Tensor, batch_size: int) -> torch.Tensor:
    """For each query row (Q, D): within radii[i] of some manifold row i (M, D)? bool (Q,)."""
    hits = [(torch.cdist(query[s:s + batch_size], manifold) <= radii[None]).any(dim=1)  # (b, M) → (b,)
            for s in range(0, len(query), batch_size)]
    return torch.cat(hits)


def precision_recall(feats_real: np.ndarray, feats_gen: np.ndarray, k: int = 3,
                     batch_size: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), each in [0, 1].

    precision: share of generated samples inside the real manifold; recall: share of real samples
    inside the generated manifold. Pairwise distances in float32, `batch_size` rows at a time
    (memory ~ batch_size × N × 4 bytes).
    """
    real = torch.as_tensor(np.asarray(feats_real), dtype=torch.float32)  # (N1, D)
    gen = torch.as_tensor(np.asarray(feats_gen), dtype=torch.float32)  # (N2, D)
    if min(len(real), len(gen)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    with torch.inference_mode():
        precision = _inside(real, _kth_nn_radii(real, k, batch_size), gen, batch_size).double().mean()
        recall = _inside(gen, _kth_nn_radii(gen, k, batch_size), real, batch_size).double().mean()
    return float(precision), float(recall)
