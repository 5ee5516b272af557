"""The prepared-data format: what `prepare` writes and every later stage reads.

    <dir>/train.safetensors   images uint8 (N, C, H, W), labels int64 (N,)
    <dir>/test.safetensors    same for the test split
    <dir>/manifest.csv        one row per image: split, index, label, sha1, mean, std, channels, height, width
    <dir>/meta.json           source, counts, shape, class names, content hash

safetensors is a plain header + raw bytes (no pickle, no timestamps), so equal data
gives byte-identical files and the 60k-image split loads in a few milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ganops.errors import DataError
from ganops.io import atomic_dir, file_digest

SPLITS = ("train", "test")


def image_stats(images: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """sha1 of each image's bytes, and its pixel mean and std (float64). images: (N, C, H, W)."""
    flat = images.reshape(len(images), -1)  # (N, C*H*W)
    sha = [hashlib.sha1(row.tobytes()).hexdigest() for row in flat]
    # chunked so a 50k×3072 CIFAR split does not make a 1.2 GB float64 copy
    means = np.empty(len(flat))
    stds = np.empty(len(flat))
    for s in range(0, len(flat), 8192):
        chunk = flat[s:s + 8192].astype(np.float64)
        means[s:s + 8192] = chunk.mean(1)
        stds[s:s + 8192] = chunk.std(1)
    return sha, means, stds


def build_manifest(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """One row per image of every split, in storage order."""
    frames = []
    for split, (images, labels) in splits.items():
        sha, means, stds = image_stats(images)
        n, c, h, w = images.shape
        frames.append(pd.DataFrame({
            "split": split, "index": np.arange(n), "label": labels.astype(np.int64), "sha1": sha,
            "mean": means, "std": stds, "channels": c, "height": h, "width": w,
        }))
    return pd.concat(frames, ignore_index=True)


def content_hash(files: dict[str, str]) -> str:
    """The prepared data's content hash (16 hex digits) from its files' sha256 (meta.json "files")."""
    return hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()[:16]


def write_prepared(out_dir: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                   manifest: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """Write everything into a temp dir beside `out_dir`, then swap it in atomically.

    Returns the final meta (with per-file hashes and the overall content hash).
    """
    from safetensors.numpy import save_file

    with atomic_dir(out_dir) as tmp:
        files: dict[str, str] = {}
        for split, (images, labels) in splits.items():
            path = tmp / f"{split}.safetensors"
            save_file({"images": np.ascontiguousarray(images), "labels": np.ascontiguousarray(labels)},
                      str(path))
            files[path.name] = file_digest(path)
        manifest.to_csv(tmp / "manifest.csv", index=False, float_format="%.4f")
        files["manifest.csv"] = file_digest(tmp / "manifest.csv")
        meta = {**meta, "files": files, "content_hash": content_hash(files)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            os.chmod(f, 0o644)  # for every user of the checkout, whatever the umask
    return meta


# The meta.json keys later stages read, with their types; read_meta checks them once for every reader.
META_KEYS: dict[str, type] = {"content_hash": str, "image_size": int, "channels": int, "num_classes": int,
                              "class_names": list}


def check_meta(meta: Any, where: str) -> dict[str, Any]:
    """`meta` if it has the shape `write_prepared` gives it; else a DataError naming `where` and the key."""
    if not isinstance(meta, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    for key, kind in META_KEYS.items():
        if key not in meta:
            raise DataError(f"{where}: key {key!r} missing (rerun `ganops prepare`)")
        v = meta[key]
        if not isinstance(v, kind) or isinstance(v, bool) or (kind is int and v < 1) or (kind is str and not v):
            what = "a positive integer" if kind is int else "a non-empty string" if kind is str else "a list"
            raise DataError(f"{where}: {key} must be {what}, got {json.dumps(v)[:40]}")
    names = meta["class_names"]
    if len(names) != meta["num_classes"] or not all(isinstance(n, str) for n in names):
        raise DataError(f"{where}: class_names must be {meta['num_classes']} strings (num_classes), "
                        f"got {json.dumps(names)[:60]}")
    return meta


def read_meta(prepared_dir: Path) -> dict[str, Any]:
    """The prepared data's meta.json, its shape checked (META_KEYS)."""
    path = Path(prepared_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: not found (run `ganops prepare` / `dvc repro prepare` first)")
    try:
        meta = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    except (OSError, RecursionError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {str(e)[:80]})") from None
    return check_meta(meta, str(path))


def load_split(prepared_dir: Path, split: str) -> tuple[Any, Any]:
    """(images uint8 (N, C, H, W), labels int64 (N,)) as torch tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(prepared_dir) / f"{split}.safetensors"
    if not path.is_file():
        raise DataError(f"{path}: not found (run `ganops prepare` first)")
    check_listed(path)
    try:
        d = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    if (set(d) != {"images", "labels"} or d["images"].ndim != 4 or d["labels"].ndim != 1
            or len(d["images"]) != len(d["labels"]) or str(d["images"].dtype) != "torch.uint8"
            or str(d["labels"].dtype) != "torch.int64"):
        raise DataError(f"{path}: expected images uint8 (N, C, H, W) and labels int64 (N,)")
    return d["images"], d["labels"]


def check_listed(path: Path) -> None:
    """Refuse a prepared file whose bytes are not those its meta.json lists, or a meta.json whose content hash is
    not its files': every later stage takes the data for what that hash says (the MLflow tag, the data a judge or
    generator was trained on, the key of the shipped statistics reused instead of Inception). A directory with no
    meta.json listing the file is left to read_meta, which every stage calls first."""
    meta_path = path.parent / "meta.json"
    try:
        meta = json.loads(meta_path.read_bytes())
        files, want = meta["files"], meta["files"][path.name]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if meta.get("content_hash") != content_hash(files):
        raise DataError(f"{meta_path}: content_hash is not the hash of its files' sha256 (edited); "
                        "rerun `ganops prepare` (or `dvc checkout data/prepared`)")
    if file_digest(path) != want:
        raise DataError(f"{path}: contents do not match the sha256 in {meta_path} (edited or damaged); "
                        "rerun `ganops prepare` (or `dvc checkout data/prepared`)")


def check_trained_on(path: str | Path, trained_on: str | None, meta: dict[str, Any], rerun: str) -> None:
    """Refuse a model (judge, generator) made from other data than the prepared data `meta` describes: its
    numbers would be about another dataset. `trained_on` None (a file that predates recording it) passes."""
    if trained_on is not None and trained_on != meta["content_hash"]:
        raise DataError(f"{path}: trained on data {trained_on}, the prepared data is {meta['content_hash']}; "
                        f"rerun `dvc repro {rerun}`")
