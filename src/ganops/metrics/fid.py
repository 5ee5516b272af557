"""FID on feature vectors, and the statistics file format (KID: kernel_distance.py, P/R: manifold.py).

Pure math on features (N, D) — the network lives in `inception.py`. Conventions match the
reference implementations (TTUR / stylegan2-ada / torchmetrics):

- FID  = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), with float64 means and unbiased (N - 1)
  covariances.

A statistics file is one safetensors file (plain header + raw bytes: byte-identical for equal
data, unlike np.savez whose zip entries carry timestamps):

    mu        float64 (D,)
    sigma     float64 (D, D)
    features  optional (N, D), stored in the dtype given (float32 network output is lossless)
    metadata  {"ganops": JSON with n, dim and the producing protocol: network, resize, split, source hash}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg

from ganops.errors import GanopsError
from ganops.io import write_atomic

STATS_FORMAT = 1


@dataclass(frozen=True)
class FeatureStats:
    """Gaussian moments of a feature set: mu float64 (D,), sigma float64 (D, D), n samples.

    `meta` records what produced the features (network, resize, split, source hash, ...);
    `features` (N, D) is kept only when KID or precision/recall need the raw vectors.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    meta: dict[str, Any] = field(default_factory=dict)
    features: np.ndarray | None = None

    @classmethod
    def from_features(cls, feats: np.ndarray, meta: dict[str, Any] | None = None,
                      keep_features: bool = False) -> FeatureStats:
        """Moments of feats (N, D), N >= 2, computed in float64."""
        feats = np.asarray(feats)
        if feats.ndim != 2 or len(feats) < 2:
            raise ValueError(f"expected features (N >= 2, D), got shape {feats.shape}")
        f64 = feats.astype(np.float64, copy=False)  # (N, D)
        mu = f64.mean(axis=0)  # (D,)
        centred = f64 - mu  # (N, D)
        sigma = centred.T @ centred / (len(f64) - 1)  # (D, D), = np.cov(f64, rowvar=False)
        return cls(mu=mu, sigma=sigma, n=len(f64), meta=dict(meta or {}),
                   features=feats if keep_features else None)

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def save(self, path: str | Path) -> Path:
        """Write atomically (ganops.io.write_atomic: a full disk is one error naming `path`, the previous file
        stays and no temp file does); returns the path."""
        from safetensors.numpy import save

        tensors = {"mu": np.ascontiguousarray(self.mu, dtype=np.float64),
                   "sigma": np.ascontiguousarray(self.sigma, dtype=np.float64)}
        if self.features is not None:
            tensors["features"] = np.ascontiguousarray(self.features)
        header = {**self.meta, "n": self.n, "dim": self.dim, "format": STATS_FORMAT}
        # one metadata key: safetensors writes several keys in hash-map order (not byte-stable)
        metadata = {"ganops": json.dumps(header, sort_keys=True)}
        return write_atomic(path, save(tensors, metadata=metadata))  # in memory first: ~50 MB for a reference

    @classmethod
    def load(cls, path: str | Path, expect: dict[str, Any] | None = None) -> FeatureStats:
        """Read a statistics file; `expect` (e.g. {"split": "test", "source_hash": h}) must match its meta."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise GanopsError(f"{path}: statistics file not found")
        try:
            with safe_open(str(path), framework="np") as f:
                header = json.loads((f.metadata() or {})["ganops"])
                arrays = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, KeyError, ValueError) as e:  # ValueError: bad JSON, huge ints
            raise GanopsError(f"{path}: not a ganops statistics file ({type(e).__name__}: {e})") from None
        if not isinstance(header, dict):
            raise GanopsError(f"{path}: header must be a JSON object, got {type(header).__name__}")
        if header.get("format") != STATS_FORMAT or "mu" not in arrays or "sigma" not in arrays:
            raise GanopsError(f"{path}: unsupported statistics format {header.get('format')!r}")
        n, (mu, sigma) = header.get("n"), (arrays["mu"], arrays["sigma"])
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise GanopsError(f"{path}: header n must be an integer >= 2, got {n!r}")
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise GanopsError(f"{path}: mu {mu.shape} and sigma {sigma.shape} must be (D,) and (D, D)")
        header.pop("n")
        header.pop("dim", None)
        header.pop("format", None)
        for key, want in (expect or {}).items():
            if header.get(key) != want:
                raise GanopsError(f"{path}: made with {key}={header.get(key)!r}, expected {want!r}; "
                                  "recompute the reference statistics")
        return cls(mu=mu, sigma=sigma, n=n, meta=header, features=arrays.get("features"))


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (D, D); round-off negative eigenvalues → 0."""
    w, v = scipy.linalg.eigh(a)  # w (D,), v (D, D)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # (D, D)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for PSD S1, S2 (D, D).

    S1 S2 is similar to the symmetric PSD M = S1^(1/2) S2 S1^(1/2), so its eigenvalues are M's:
    two symmetric eigendecompositions (stable, real, ~3x faster than scipy.linalg.sqrtm at
    D = 2048) instead of a general matrix square root with its imaginary round-off.
    """
    r1 = _sqrt_psd(sigma1)  # (D, D)
    m = r1 @ sigma2 @ r1  # (D, D)
    m = (m + m.T) / 2  # exact symmetry for eigvalsh
    w = scipy.linalg.eigvalsh(m)  # (D,)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(s1: FeatureStats, s2: FeatureStats) -> float:
    """FID between two Gaussians: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), float64, unitless."""
    if s1.dim != s2.dim:
        raise ValueError(f"feature dims differ: {s1.dim} vs {s2.dim}")
    diff = s1.mu.astype(np.float64) - s2.mu.astype(np.float64)  # (D,)
    sigma1, sigma2 = s1.sigma.astype(np.float64), s2.sigma.astype(np.float64)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))
