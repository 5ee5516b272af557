"""Checkpoints: state_dicts + config JSON, never pickled code.

A checkpoint is a plain dict of tensors, numbers, strings and containers, saved with
`torch.save` and loaded with `torch.load(weights_only=True)`. It carries a sha256
digest over every value, so a truncated or edited file is refused with a clear error
instead of loading half-trained or altered weights. Writes go to a temp file that is
renamed into place, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ganops.errors import GanopsError
from ganops.io import atomic_file

FORMAT = "ganops-checkpoint"
VERSION = 1


class CheckpointError(GanopsError):
    """A checkpoint file is missing, truncated, tampered with or of the wrong kind."""


def _digest(obj: Any, h: Any, path: str = "") -> None:
    """Feed a canonical encoding of `obj` (dicts in sorted key order) into hash `h`."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"{path}:T:{obj.dtype}:{tuple(obj.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"{path}:D{len(obj)}:".encode())
        for k in sorted(obj, key=str):
            _digest(obj[k], h, f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        h.update(f"{path}:L{len(obj)}:".encode())
        for i, v in enumerate(obj):
            _digest(v, h, f"{path}/{i}")
    else:
        h.update(f"{path}:V:{obj!r}:".encode())


def digest(obj: Any) -> str:
    h = hashlib.sha256()
    _digest(obj, h)
    return h.hexdigest()


def save_checkpoint(path: str | Path, kind: str, state: dict[str, Any], config: dict[str, Any]) -> Path:
    """Atomically write `state` (tensors/state_dicts/numbers) with `config` as JSON."""
    path = Path(path)
    config_json = json.dumps(config, sort_keys=True, default=str)
    body = {"kind": kind, "config": config_json, "state": state}
    payload = {"format": FORMAT, "version": VERSION, **body, "digest": digest(body)}
    with atomic_file(path) as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, config) of a checkpoint; CheckpointError if it is not intact."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zip/unpickling errors vary by how the file is broken
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or not a ganops checkpoint "
                              f"({msg[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ganops checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')}, expected {VERSION}")
    body = {k: payload.get(k) for k in ("kind", "config", "state")}
    if digest(body) != payload.get("digest"):
        raise CheckpointError(f"{path}: checkpoint content does not match its digest (file altered or corrupt)")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and body["kind"] not in kinds:
        raise CheckpointError(f"{path}: holds a {body['kind']!r} checkpoint, expected {' or '.join(map(repr, kinds))}")
    return body["state"], json.loads(body["config"])
