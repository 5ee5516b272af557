"""Metrics named by their protocol, stylegan2-ada style: `fid10k` = FID of 10 000 generated images.

A metric kind is one registered function (`fid`, `kid`, `pr`); a metric name is kind + N, where N
is the number of generated images it uses (`fid10k`, `kid5k`, `fid2500`). FID is biased upward
at small N by more than most model differences, so a number is comparable only to numbers with
the same name *and* the same reference; `compute_metrics` therefore returns every result with its
protocol (network, resize, n_gen, n_ref, reference split and hash).

    ref = reference_stats(test_images, split="test", source_hash=meta["content_hash"])
    ref.save("stats/ref_test.safetensors")
    out = compute_metrics(["fid10k", "kid10k"], extract_features(stream, total=10_000), ref)
    flatten(out)  # {"fid10k": 23.4, "kid10k": 0.012, "kid10k_std": 0.0008}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ganops.errors import GanopsError
from ganops.metrics import fid as fm
from ganops.metrics import kernel_distance, manifold
from ganops.metrics.inception import (
    DEFAULT_BATCH_SIZE,
    NETWORK,
    NETWORK_SHA1,
    RESIZE,
    ImageSource,
    ProgressFn,
    extract_features,
    protocol,
)

STANDARD_N = (10_000, 5_000, 2_000)
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
PR_K = 3
# KID and P/R see a fixed seeded subset of the reference's features, FID its moments over all N: the
# features of 10k test images are 82 MB, too much to ship in the repository (ganops.metrics.shipped);
# 2000 of them are 16 MB. KID's estimate stays unbiased: its real subsets of 1000 are drawn from these.
REF_FEATURES, REF_FEATURES_SEED = 2000, 0


@dataclass(frozen=True)
class MetricOpts:
    """What a metric function sees: `name` (e.g. "kid10k"), gen_feats (n, D) already cut to n, the reference."""

    name: str
    gen_feats: np.ndarray
    ref: fm.FeatureStats
    seed: int = 0


MetricFn = Callable[[MetricOpts], dict[str, Any]]
# What a kind adds to the common protocol (network, resize, N, reference): (n_gen, n_ref_features, seed) → dict.
ProtocolFn = Callable[[int, int, int], dict[str, Any]]


@dataclass(frozen=True)
class MetricKind:
    fn: MetricFn
    protocol: ProtocolFn | None  # None: the kind reads the reference's moments only


_metrics: dict[str, MetricKind] = {}


def register_metric(protocol: ProtocolFn | None = None) -> Callable[[MetricFn], MetricFn]:
    """Register a metric kind under its function name; it returns {result key: value} for `opts.name`.

    `protocol` says what else makes the kind's numbers comparable, and that it needs the reference's
    features (not only their moments); every kind is registered here and nowhere else.
    """
    def deco(fn: MetricFn) -> MetricFn:
        if not re.fullmatch(r"[a-z]+", fn.__name__):  # a name is kind + N: "fid_x10k" could not be parsed back
            raise ValueError(f"a metric kind is lowercase letters only, got {fn.__name__!r}")
        _metrics[fn.__name__] = MetricKind(fn, protocol)
        return fn
    return deco


def metric_kinds() -> tuple[str, ...]:
    """The registered kinds, in registration order (what `evaluate.metrics` may list)."""
    return tuple(_metrics)


def check_kinds(kinds: Iterable[str]) -> None:
    """Refuse unregistered kinds, naming them and the registered ones (a ValueError: the caller adds the key)."""
    bad = [k for k in kinds if k not in _metrics]
    if bad:
        raise ValueError(f"unknown metric kind(s) {', '.join(map(repr, bad))}; registered: {', '.join(_metrics)}")


def _ref_features(opts: MetricOpts) -> np.ndarray:
    if opts.ref.features is None:
        raise GanopsError(f"{opts.name} needs the reference features, not only their moments; "
                          "compute the reference with keep_features=True")
    return opts.ref.features


@register_metric()
def fid(opts: MetricOpts) -> dict[str, Any]:
    """Fréchet distance between the generated features' Gaussian and the reference's."""
    gen = fm.FeatureStats.from_features(opts.gen_feats)
    return {opts.name: fm.frechet_distance(gen, opts.ref)}


@register_metric(protocol=lambda n, n_feats, seed: {
    "subsets": KID_SUBSETS, "subset_size": min(KID_SUBSET_SIZE, n, n_feats), "seed": seed})
def kid(opts: MetricOpts) -> dict[str, Any]:
    """KID mean and std over 100 subsets of min(1000, n_gen, n_ref); unbiased at any N."""
    mean, std = kernel_distance.kid(_ref_features(opts), opts.gen_feats, KID_SUBSETS, KID_SUBSET_SIZE, opts.seed)
    return {opts.name: mean, f"{opts.name}_std": std}


@register_metric(protocol=lambda n, n_feats, seed: {"k": PR_K})
def pr(opts: MetricOpts) -> dict[str, Any]:
    """Improved precision/recall with k = 3 nearest neighbours (stylegan2-ada's pr50k3 uses the same k)."""
    precision, recall = manifold.precision_recall(_ref_features(opts), opts.gen_feats, k=PR_K)
    return {f"{opts.name}_precision": precision, f"{opts.name}_recall": recall}


def metric_name(kind: str, n: int) -> str:
    """("fid", 10000) → "fid10k"; ("fid", 2500) → "fid2500"."""
    return f"{kind}{n // 1000}k" if n % 1000 == 0 else f"{kind}{n}"


def parse_metric_name(name: str) -> tuple[str, int]:
    """"fid10k" → ("fid", 10000); a clear error for unknown kinds or malformed names."""
    m = re.fullmatch(r"([a-z]+?)(\d+)(k?)", name)
    if m is None or m.group(1) not in _metrics or int(m.group(2)) == 0:
        raise GanopsError(f"unknown metric {name!r}; expected <kind><N>[k] with kind in {sorted(_metrics)}, "
                          f"e.g. {', '.join(list_metrics()[:3])}")
    return m.group(1), int(m.group(2)) * (1000 if m.group(3) else 1)


def list_metrics() -> list[str]:
    """The standard names: every registered kind at N = 10k, 5k, 2k (any other N parses too)."""
    return [metric_name(kind, n) for kind in _metrics for n in STANDARD_N]


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


def metric_protocol(name: str, ref: fm.FeatureStats, seed: int = 0) -> dict[str, Any]:
    """What makes `name`'s number comparable: network, resize, N on both sides, the reference and (KID) its
    subsets; known before any image is generated, so a shipped result can be matched against it."""
    kind, n = parse_metric_name(name)
    proto: dict[str, Any] = {
        "kind": kind, "network": NETWORK, "resize": RESIZE, "n_gen": n, "n_ref": ref.n,
        "ref_split": ref.meta.get("split"), "ref_source_hash": ref.meta.get("source_hash"),
    }
    extra = _metrics[kind].protocol
    if extra is not None:
        n_feats = 0 if ref.features is None else len(ref.features)
        proto |= {"n_ref_features": n_feats, **extra(n, n_feats, seed)}
    return proto


def compute_metrics(names: Iterable[str], gen_feats: np.ndarray, ref: fm.FeatureStats,
                    seed: int = 0) -> dict[str, dict[str, Any]]:
    """Evaluate metrics on generated features (N, D) against a reference; N must be >= each metric's n.

    Returns {name: {"results": {key: float}, "protocol": {...}}}; each metric uses the first n
    generated features. Deterministic for fixed inputs and seed (no timings inside, so the
    output can be a DVC metrics file).
    """
    check_reference(ref)
    gen_feats = np.asarray(gen_feats)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        kind, n = parse_metric_name(name)
        if len(gen_feats) < n:
            raise GanopsError(f"{name} needs {n} generated images, got features of {len(gen_feats)}")
        results = _metrics[kind].fn(MetricOpts(name=name, gen_feats=gen_feats[:n], ref=ref, seed=seed))
        proto = metric_protocol(name, ref, seed)
        out[name] = {"results": {k: float(v) for k, v in results.items()}, "protocol": proto}
    return out


def flatten(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """{"fid10k": {"results": {"fid10k": 23.4}, ...}} → {"fid10k": 23.4}: for MLflow / DVC metrics."""
    return {k: v for entry in metrics.values() for k, v in entry["results"].items()}


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
