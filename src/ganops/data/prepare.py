"""The `prepare` step as a pure function: read a source, dedupe, cap, validate, write."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganops.config import DataConfig
from ganops.data.prepared import build_manifest, write_prepared
from ganops.data.sources import READERS, TORCHVISION, RawDataset, download_torchvision
from ganops.data.validation import ValidationReport, ValidationSpec, validate
from ganops.errors import ValidationFailed

# dedupe may remove at most this share of train before it counts as a data problem
MAX_DEDUPE_SHARE = 0.01


@dataclass
class PrepareResult:
    meta: dict[str, Any]
    report: ValidationReport


def read_source(cfg: DataConfig, raw_dir: Path) -> RawDataset:
    """The raw dataset `cfg` names: downloaded by torchvision into `raw_dir` when `data.download` is on and
    torchvision has the source, else read from `data.path` by the source's reader (ganops.data.sources)."""
    if cfg.download and cfg.source in TORCHVISION:
        return download_torchvision(cfg.source, raw_dir)
    return READERS[cfg.source](cfg)


def select_train(ds: RawDataset, cfg: DataConfig) -> tuple[np.ndarray, int]:
    """Indices of the train images to keep (sorted), and how many dedupe removed."""
    keep = np.arange(len(ds.train_images))
    removed = 0
    if cfg.dedupe:
        test_hashes = {row.tobytes() for row in ds.test_images.reshape(len(ds.test_images), -1)}
        flat = ds.train_images.reshape(len(ds.train_images), -1)
        mask = np.array([row.tobytes() not in test_hashes for row in flat], dtype=bool)
        removed = int((~mask).sum())
        keep = keep[mask]
    if cfg.limit is not None and cfg.limit < len(keep):
        rng = np.random.default_rng(cfg.seed)
        keep = np.sort(rng.choice(keep, size=cfg.limit, replace=False))
    return keep, removed


def prepare_dataset(cfg: DataConfig, raw_dir: Path, out_dir: Path, validation_dir: Path) -> PrepareResult:
    """Read → select → validate → write. Raises DataError (bad input) or ValidationFailed.

    Nothing is written under `out_dir` unless every expectation passes.
    """
    ds = read_source(cfg, raw_dir)
    keep, removed = select_train(ds, cfg)
    splits = {
        "train": (ds.train_images[keep], ds.train_labels[keep]),
        "test": (ds.test_images, ds.test_labels),
    }
    n_train_raw = len(ds.train_images)
    cap = min(cfg.limit or n_train_raw, n_train_raw)
    manifest = build_manifest(splits)
    spec = ValidationSpec(
        num_classes=len(ds.class_names),
        shape=tuple(ds.train_images.shape[1:]),  # type: ignore[arg-type]
        split_bounds={"train": (max(1, math.ceil(cap * (1 - MAX_DEDUPE_SHARE))), cap),
                      "test": (max(1, len(ds.test_images)), len(ds.test_images))},
        balance_tolerance=cfg.class_balance_tolerance,
    )
    report = validate(manifest, spec, validation_dir)
    if not report.success:
        raise ValidationFailed(report.summary())
    c, h, w = spec.shape
    meta = {
        "source": ds.source,
        "path": cfg.path if not cfg.download else str(raw_dir),
        "counts": {"train": int(len(keep)), "test": int(len(ds.test_images))},
        "train_available": n_train_raw,
        "dedupe_removed": removed,
        "limit": cfg.limit,
        "shape": [c, h, w],
        "channels": c,
        "image_size": h,
        "num_classes": len(ds.class_names),
        "class_names": list(ds.class_names),
    }
    meta = write_prepared(out_dir, splits, manifest, meta)
    return PrepareResult(meta=meta, report=report)
