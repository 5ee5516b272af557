"""Reference statistics: the Inception moments (and a fixed subset of features) of real images that every
FID/KID/P-R is measured against; what `ganops reference` computes, once per data version.

Apart from the metric implementations (registry.py) on purpose: the reference depends on the data and the
feature network only, so an edit to a metric's formula must not rerun the reference stage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ganops.errors import GanopsError
from ganops.metrics import fid as fm
from ganops.metrics.inception import (
    DEFAULT_BATCH_SIZE,
    NETWORK_SHA1,
    RESIZE,
    ImageSource,
    ProgressFn,
    extract_features,
    protocol,
)

# KID and P/R see a fixed seeded subset of the reference's features, FID its moments over all N: the
# features of 10k test images are 82 MB, too much to keep in the repository (ganops.metrics.precomputed);
# 2000 of them are 16 MB. KID's estimate stays unbiased: its real subsets of 1000 are drawn from these.
REF_FEATURES, REF_FEATURES_SEED = 2000, 0


def check_reference(ref: fm.FeatureStats) -> None:
    """Refuse reference statistics made by another network or resize (their numbers are not comparable)."""
    for key, want in (("network_sha1", NETWORK_SHA1), ("resize", RESIZE)):
        if ref.meta.get(key) != want:
            raise GanopsError(f"reference statistics made with {key}={ref.meta.get(key)!r}, this protocol "
                              f"uses {want!r}; recompute them with reference_stats()")


def reference_subset(n: int) -> np.ndarray:
    """Sorted indices of the reference features kept for KID and P/R: all when n <= REF_FEATURES, else the
    first REF_FEATURES of a permutation seeded with REF_FEATURES_SEED (a protocol constant, not the run's seed)."""
    if n <= REF_FEATURES:
        return np.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(REF_FEATURES_SEED))
    return np.sort(perm[:REF_FEATURES].numpy())


def reference_stats(images: ImageSource, *, split: str, source_hash: str, keep_features: bool = True,
                    batch_size: int = DEFAULT_BATCH_SIZE, progress: ProgressFn | None = None,
                    total: int | None = None, device: str | torch.device = "cpu") -> fm.FeatureStats:
    """Features and moments of real images uint8 (N, C, H, W), tagged with the protocol and data version.

    Moments over all N; for KID and P/R the features of `reference_subset(N)` are kept, as float32 (the
    network's own precision, so lossless).
    """
    feats = extract_features(images, batch_size=batch_size, progress=progress, total=total, device=device)  # (N, 2048)
    stats = fm.FeatureStats.from_features(feats, meta=reference_meta(split, source_hash))
    if keep_features:
        kept = feats[reference_subset(len(feats))].astype(np.float32)  # (min(N, REF_FEATURES), 2048)
        stats = fm.FeatureStats(stats.mu, stats.sigma, stats.n, stats.meta, kept)
    return stats


def reference_meta(split: str, source_hash: str) -> dict[str, Any]:
    """The header of a reference statistics file: how it was made and from which data."""
    return {**protocol(), "split": split, "source_hash": source_hash,
            "features_kept": {"max": REF_FEATURES, "seed": REF_FEATURES_SEED}}
