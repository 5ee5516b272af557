"""Atomic writes for the small outputs stages produce (metrics JSON, plot CSVs)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write; it replaces `path` only if the block ends without error.

    Written beside `path` and fsynced before the rename, so a reader (or a crash) never
    sees half a file and a failed write leaves the previous version in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


CSV_FLOAT_FORMAT = "%.6g"  # plots CSVs: 6 significant digits, so readers compare at that precision


def write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    return write_atomic(path, df.to_csv(index=False, float_format=CSV_FLOAT_FORMAT).encode())


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
