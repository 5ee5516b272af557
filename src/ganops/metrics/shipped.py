"""Results that depend only on the data and the feature network, shipped in the repository for known data.

The test reference (Inception moments of the test split plus the features KID needs) and the real-data
floor are ~35 and ~20 minutes of TF-Inception on a 2-core AVX2 CPU, and neither depends on a model.
`stats/shipped/` holds them for the default data (Debian's Fashion-MNIST); the reference and floor
stages reuse a file there when its key equals what they would compute from — the prepared data's
content hash, the network's sha1 and the resize protocol (and for the floor N, seed and every metric's
protocol) — and compute as before otherwise. Written by `ganops ship-stats` from a run's outputs.

    reference-<split>-<hash>.safetensors   mu float64 (D,), sigma_triu float64 (D(D+1)/2,): the upper
                                           triangle of the (exactly symmetric) covariance, features (K, D)
    floor-<hash>-<n>-<seed>.json           {"key": {...}, "floor": the floor stage's full record}

A reused result equals a computed one on the CPU kind that made it; on another CPU kind it differs from
what that machine would compute by the float round-off of the network (as any cached result would).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ganops.errors import GanopsError
from ganops.io import write_atomic, write_json
from ganops.metrics import fid as fm

SHIPPED_DIR = Path("stats/shipped")
_HEADER = "ganops"


def _reference_path(to_dir: Path, meta: dict[str, Any]) -> Path:
    return to_dir / f"reference-{meta['split']}-{meta['source_hash']}.safetensors"


def pack_reference(stats: fm.FeatureStats, to_dir: str | Path) -> Path:
    """Write `stats` (a reference, features kept) as a shipped file in `to_dir`; returns its path."""
    from safetensors.numpy import save

    if stats.features is None or not np.array_equal(stats.sigma, stats.sigma.T):
        raise GanopsError("a shipped reference needs its KID features and an exactly symmetric covariance")
    iu = np.triu_indices(stats.dim)
    tensors = {"mu": np.ascontiguousarray(stats.mu, dtype=np.float64),
               "sigma_triu": np.ascontiguousarray(stats.sigma[iu], dtype=np.float64),  # (D(D+1)/2,)
               "features": np.ascontiguousarray(stats.features)}  # (K, D)
    header = {**stats.meta, "n": stats.n, "dim": stats.dim, "format": fm.STATS_FORMAT}
    path = _reference_path(Path(to_dir), stats.meta)
    write_atomic(path, save(tensors, metadata={_HEADER: json.dumps(header, sort_keys=True)}))
    return path


def _header(path: Path) -> dict[str, Any] | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            header = json.loads((f.metadata() or {})[_HEADER])
    except (SafetensorError, OSError, KeyError, ValueError):
        return None  # not a shipped file: never a match
    return header if isinstance(header, dict) else None


def find_reference(shipped_dir: str | Path, meta: dict[str, Any], n: int) -> tuple[fm.FeatureStats, Path] | None:
    """The shipped reference made from `n` images with exactly the header `meta` (data hash, network sha1,
    resize, split, kept features), as FeatureStats with its path; None when there is none."""
    from safetensors.numpy import load_file

    path = _reference_path(Path(shipped_dir), meta)
    header = _header(path) if path.is_file() else None
    want = {**json.loads(json.dumps(meta)), "n": n, "format": fm.STATS_FORMAT}  # JSON-normalised like the file
    if header is None or {k: v for k, v in header.items() if k != "dim"} != want:
        return None
    arrays = load_file(str(path))
    mu, tri, feats = arrays["mu"], arrays["sigma_triu"], arrays["features"]  # (D,), (D(D+1)/2,), (K, D)
    d = len(mu)
    if tri.shape != (d * (d + 1) // 2,) or feats.ndim != 2 or feats.shape[1] != d:
        raise GanopsError(f"{path}: shapes mu {mu.shape}, sigma_triu {tri.shape}, features {feats.shape} "
                          "do not fit together; delete the file or re-ship it with `ganops ship-stats`")
    sigma = np.zeros((d, d))  # (D, D)
    sigma[np.triu_indices(d)] = tri
    sigma = sigma + np.triu(sigma, 1).T  # mirror the strict upper triangle down
    return fm.FeatureStats(mu, sigma, n, dict(meta), feats), path


def floor_key(source_hash: str, n: int, seed: int, protocols: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a floor's numbers depend on: the data, N, the seed that picks the images, each metric's protocol."""
    return json.loads(json.dumps({"source_hash": source_hash, "n": n, "seed": seed, "protocol": protocols}))


def _floor_path(to_dir: Path, key: dict[str, Any]) -> Path:
    return to_dir / f"floor-{key['source_hash']}-{key['n']}-{key['seed']}.json"


def ship_floor(record: dict[str, Any], source_hash: str, to_dir: str | Path) -> Path:
    """Write the floor stage's full record (its _detail.json) as a shipped file; returns its path."""
    try:
        key = floor_key(source_hash, record["n"], record["seed"], record["protocol"])
    except KeyError as e:
        raise GanopsError(f"not a floor record: no {e}") from None
    path = _floor_path(Path(to_dir), key)
    write_json(path, {"key": key, "floor": record})
    return path


def find_floor(shipped_dir: str | Path, key: dict[str, Any]) -> tuple[dict[str, Any], Path] | None:
    """The shipped floor record whose key equals `key`, with its path; None when there is none."""
    path = _floor_path(Path(shipped_dir), key)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("key") != key or not isinstance(doc.get("floor"), dict):
        return None
    return doc["floor"], path
