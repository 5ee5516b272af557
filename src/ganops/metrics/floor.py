"""The real-data floor: the metrics of n seeded *training* images against the test reference, what `ganops floor`
computes. The score a perfect generator (one that reproduces the data distribution) would get at this N: FID is
biased upward at finite N, so a model FID means most beside its floor (metrics/evaluation.py puts them together).

Apart from evaluation.py on purpose: the floor needs the metrics and the feature network, not the judge or models/.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ganops.errors import GanopsError
from ganops.metrics.fid import FeatureStats
from ganops.metrics.inception import inception_features
from ganops.metrics.names import MetricName
from ganops.metrics.registry import compute_metrics, flatten, metric_protocol


def floor_indices(n_train: int, n: int, seed: int) -> torch.Tensor:
    """Which n of n_train training images the floor uses: the first n of a seeded permutation."""
    if n > n_train:
        raise GanopsError(f"the real-data floor needs {n} training images (evaluate.num_samples) but the "
                          f"prepared train split has {n_train}; lower evaluate.num_samples")
    return torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:n]


def real_data_floor(train_x: torch.Tensor, ref: FeatureStats, names: Sequence[str], n: int, seed: int,
                    log: Callable[[str], Any] = print, batch_size: int = 8,
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """The metrics `names` (all with N = n) of n seeded training images (uint8 (N, C, H, W)) vs `ref`.

    Returns {"metrics": {name: value}, "protocol": {name: {...}}, "n": n, "seed": seed}; GanopsError if a
    name's N is not n (its number would not be the floor of that metric).
    """
    if off := [name for name in names if MetricName.parse(name).n != n]:
        raise GanopsError(f"real-data floor of {n} images cannot give {', '.join(off)} (N differs from {n})")
    idx = floor_indices(len(train_x), n, seed)
    feats = inception_features(train_x[idx], "floor: inception (train images)", log, batch_size, device)
    out = compute_metrics(names, feats, ref, seed=seed)
    return {"metrics": flatten(out), "protocol": floor_protocols(names, ref, seed), "n": n, "seed": seed}


def floor_protocols(names: Sequence[str], ref: FeatureStats, seed: int) -> dict[str, dict[str, Any]]:
    """Each floor metric's protocol: the model metric's, with real training images on the generated side."""
    return {name: metric_protocol(name, ref, seed) | {"gen_split": "train"} for name in names}
