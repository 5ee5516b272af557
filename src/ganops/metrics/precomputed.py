"""Precomputed reference statistics and real-data floors: results that depend only on the data and the feature
network, committed to the repository (`stats/shipped/`) for known data.

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

A file is trusted for its contents, not its name: `ganops ship-stats` writes a sha256 digest into each (the
reference's header: over the header and every array's name, dtype, shape and bytes; the floor's "digest": over
the canonical JSON of its key and record), and a file whose key matches is reused only if its contents still
hash to it. One that does not (edited or damaged, or precomputed before digests) is named in one `warning:` line
and the stage computes instead of stopping: computing is always right, only slower, while a stop would leave a
clone with a damaged file unable to run at all. The digest guards against accidents and stale hand edits, not
against someone who rewrites the file and its digest (as with unsigned checkpoints): the files are code-reviewed
like the rest of the repository.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ganops.errors import GanopsError, GanopsWarning
from ganops.io import write_atomic, write_json
from ganops.metrics import fid as fm

_HEADER = "ganops"
DIGEST = "digest"  # header / document key of a precomputed file's "sha256:<hex>"
_REF_TENSORS = ("mu", "sigma_triu", "features")  # the order the reference digest reads them in


def _reference_digest(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the header without its digest (canonical JSON) and each array's name, dtype, shape and bytes.

    dtype and shape go in so the same bytes read as other numbers (float32 as float64, a reshaped matrix) do not
    hash alike; the header so an edited protocol (network sha1, resize) does not pass as the precomputed one.
    """
    h = hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != DIGEST}, sort_keys=True).encode())
    for name in _REF_TENSORS:
        a = np.ascontiguousarray(tensors[name])
        h.update(f"\n{name} {a.dtype.str} {a.shape}\n".encode())
        h.update(memoryview(a).cast("B"))
    return f"sha256:{h.hexdigest()}"


def _floor_digest(doc: dict[str, Any]) -> str:
    """sha256 over the canonical JSON (sorted keys, no spaces) of a precomputed floor's key and record."""
    canonical = json.dumps({"key": doc.get("key"), "floor": doc.get("floor")}, sort_keys=True, separators=(",", ":"))
    return f"sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:80]}" if str(e) else type(e).__name__


def _not_reused(path: Path, why: str) -> None:
    warnings.warn(f"{path}: {why}; computing instead", GanopsWarning, stacklevel=3)


def _digest_fails(path: Path, stored: Any, actual: str) -> bool:
    """Whether a precomputed file fails its digest (said in one warning line naming it)."""
    if stored is None:
        _not_reused(path, "has no digest (written before digests were; re-ship it with `ganops ship-stats`)")
        return True
    if stored != actual:
        _not_reused(path, "contents do not match its digest (edited or damaged)")
        return True
    return False


def _reference_path(to_dir: Path, meta: dict[str, Any]) -> Path:
    return to_dir / f"reference-{meta['split']}-{meta['source_hash']}.safetensors"


def pack_reference(stats: fm.FeatureStats, to_dir: str | Path) -> Path:
    """Write `stats` (a reference, features kept) as a precomputed file in `to_dir`; returns its path."""
    from safetensors.numpy import save

    if stats.features is None or not np.array_equal(stats.sigma, stats.sigma.T):
        raise GanopsError("a precomputed reference needs its KID features and an exactly symmetric covariance")
    iu = np.triu_indices(stats.dim)
    tensors = {"mu": np.ascontiguousarray(stats.mu, dtype=np.float64),
               "sigma_triu": np.ascontiguousarray(stats.sigma[iu], dtype=np.float64),  # (D(D+1)/2,)
               "features": np.ascontiguousarray(stats.features)}  # (K, D)
    # JSON-normalised (tuples as lists, ...) so the digest is over the header a reader gets back
    header = json.loads(json.dumps({**stats.meta, "n": stats.n, "dim": stats.dim, "format": fm.STATS_FORMAT}))
    header[DIGEST] = _reference_digest(header, tensors)
    path = _reference_path(Path(to_dir), stats.meta)
    write_atomic(path, save(tensors, metadata={_HEADER: json.dumps(header, sort_keys=True)}))
    return path


def _header(path: Path) -> dict[str, Any] | None:
    """The file's ganops header; None (and a warning) when the file cannot be read as a precomputed reference."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            header = json.loads((f.metadata() or {})[_HEADER])
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        _not_reused(path, f"not a readable precomputed reference ({_short(e)})")
        return None
    return header if isinstance(header, dict) else None


def find_reference(from_dir: str | Path, meta: dict[str, Any], n: int) -> tuple[fm.FeatureStats, Path] | None:
    """The precomputed reference made from `n` images with exactly the header `meta` (data hash, network sha1,
    resize, split, kept features), as FeatureStats with its path; None when there is none, or when the file
    there fails its digest (a warning names it)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = _reference_path(Path(from_dir), meta)
    header = _header(path) if path.is_file() else None
    want = {**json.loads(json.dumps(meta)), "n": n, "format": fm.STATS_FORMAT}  # JSON-normalised like the file
    if header is None or {k: v for k, v in header.items() if k not in ("dim", DIGEST)} != want:
        return None
    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError) as e:
        _not_reused(path, f"not a readable precomputed reference ({_short(e)})")
        return None
    if any(k not in arrays for k in _REF_TENSORS):
        _not_reused(path, f"arrays {sorted(arrays)}, expected {sorted(_REF_TENSORS)} (damaged)")
        return None
    if _digest_fails(path, header.get(DIGEST), _reference_digest(header, arrays)):
        return None
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


def pack_floor(record: dict[str, Any], source_hash: str, to_dir: str | Path) -> Path:
    """Write the floor stage's full record (its _detail.json) as a precomputed file; returns its path."""
    try:
        key = floor_key(source_hash, record["n"], record["seed"], record["protocol"])
    except KeyError as e:
        raise GanopsError(f"not a floor record: no {e}") from None
    path = _floor_path(Path(to_dir), key)
    doc = json.loads(json.dumps({"key": key, "floor": record}))  # as a reader will see it
    write_json(path, doc | {DIGEST: _floor_digest(doc)})
    return path


def find_floor(from_dir: str | Path, key: dict[str, Any]) -> tuple[dict[str, Any], Path] | None:
    """The precomputed floor record whose key equals `key`, with its path; None when there is none, or when the file
    there fails its digest (a warning names it)."""
    path = _floor_path(Path(from_dir), key)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        _not_reused(path, f"not a readable precomputed floor ({_short(e)})")
        return None
    if not isinstance(doc, dict) or doc.get("key") != key or not isinstance(doc.get("floor"), dict):
        return None
    if _digest_fails(path, doc.get(DIGEST), _floor_digest(doc)):
        return None
    return doc["floor"], path
