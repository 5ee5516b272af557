"""Metrics named by their protocol, stylegan2-ada style: `fid10k` = FID of 10 000 generated images.

A metric kind is one registered function (`fid`, `kid`, `pr`, named in `names.KINDS`); a metric name is
kind + N (`names.MetricName`), where N is the number of generated images it uses (`fid10k`, `kid5k`,
`fid2500`). FID is biased upward at small N by more than most model differences, so a number is
comparable only to numbers with the same name *and* the same reference; `compute_metrics` therefore
returns every result with its protocol (network, resize, n_gen, n_ref, reference split and hash).

    ref = reference_stats(test_images, split="test", source_hash=meta["content_hash"])  # metrics/reference.py
    ref.save("stats/ref_test.safetensors")
    out = compute_metrics(["fid10k", "kid10k"], extract_features(stream, total=10_000), ref)
    flatten(out)  # {"fid10k": 23.4, "kid10k": 0.012, "kid10k_std": 0.0008}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ganops.errors import GanopsError
from ganops.metrics import fid as fm
from ganops.metrics import kernel_distance, manifold
from ganops.metrics import names as vocabulary
from ganops.metrics.inception import NETWORK, RESIZE
from ganops.metrics.names import MetricName
from ganops.metrics.reference import check_reference

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
PR_K = 3


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
    features (not only their moments); every kind in `names.KINDS` is registered here and nowhere else.
    """
    def deco(fn: MetricFn) -> MetricFn:
        if fn.__name__ not in vocabulary.KINDS:  # the stages read the kinds from names.py, without this module
            raise ValueError(f"metric kind {fn.__name__!r} is not in ganops.metrics.names.KINDS; add it there")
        _metrics[fn.__name__] = MetricKind(fn, protocol)
        return fn
    return deco


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


def metric_protocol(name: str, ref: fm.FeatureStats, seed: int = 0) -> dict[str, Any]:
    """What makes `name`'s number comparable: network, resize, N on both sides, the reference and (KID) its
    subsets; known before any image is generated, so a precomputed result can be matched against it."""
    m = MetricName.parse(name)
    proto: dict[str, Any] = {
        "kind": m.kind, "network": NETWORK, "resize": RESIZE, "n_gen": m.n, "n_ref": ref.n,
        "ref_split": ref.meta.get("split"), "ref_source_hash": ref.meta.get("source_hash"),
    }
    extra = _metrics[m.kind].protocol
    if extra is not None:
        n_feats = 0 if ref.features is None else len(ref.features)
        proto |= {"n_ref_features": n_feats, **extra(m.n, n_feats, seed)}
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
        m = MetricName.parse(name)
        if len(gen_feats) < m.n:
            raise GanopsError(f"{name} needs {m.n} generated images, got features of {len(gen_feats)}")
        results = _metrics[m.kind].fn(MetricOpts(name=name, gen_feats=gen_feats[:m.n], ref=ref, seed=seed))
        proto = metric_protocol(name, ref, seed)
        out[name] = {"results": {k: float(v) for k, v in results.items()}, "protocol": proto}
    return out


def flatten(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """{"fid10k": {"results": {"fid10k": 23.4}, ...}} → {"fid10k": 23.4}: for MLflow / DVC metrics."""
    return {k: v for entry in metrics.values() for k, v in entry["results"].items()}
