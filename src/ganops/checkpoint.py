"""Checkpoints: state_dicts + config JSON, never pickled code.

A checkpoint is a plain dict of tensors, numbers, strings and containers, saved with
`torch.save` and loaded with `torch.load(weights_only=True)`. Writes go to a temp file that is
renamed into place, so a crash mid-write leaves the previous checkpoint intact.

Integrity, and what it does not cover:
- every checkpoint carries a sha256 digest over every value, so a truncated, bit-flipped or
  half-edited file is refused instead of loading half-trained weights. The digest is unkeyed:
  it guards against accidents only. Whoever can write the file can recompute it, and a file
  rewritten that way loads;
- with a key (`key=`, which the command layer takes from GANOPS_CHECKPOINT_KEY; the core never
  reads the environment) the checkpoint is also signed with HMAC-SHA256, and a load given the
  key refuses a file without a valid signature: unsigned, signed with another key, or altered
  and re-digested. A signed file loaded without a key is checked on its plain digest only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ganops.errors import GanopsError
from ganops.io import atomic_file

FORMAT = "ganops-checkpoint"
VERSION = 1  # the optional "hmac" field is ignored by readers that predate it: still version 1
KEY_ENV = "GANOPS_CHECKPOINT_KEY"  # what the command layer reads the signing key from
MIN_KEY_BYTES = 16  # a shorter secret can be guessed; `openssl rand -hex 32` gives 64


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


def key_from_env(env: Mapping[str, str]) -> bytes | None:
    """The signing key in `env` (the command layer passes `os.environ`), None when KEY_ENV is unset.

    A key that is set but empty or short is refused rather than ignored: `KEY=$UNSET_VAR` would
    otherwise turn signing off without a word.
    """
    raw = env.get(KEY_ENV)
    if raw is None:
        return None
    key = raw.encode("utf-8", "surrogateescape")  # what os.fsencode does: any bytes the shell gave
    if len(key) < MIN_KEY_BYTES:
        raise CheckpointError(f"{KEY_ENV}: {len(key)} bytes, a signing key needs at least {MIN_KEY_BYTES} "
                              "(e.g. `openssl rand -hex 32`); unset it to write unsigned checkpoints")
    return key


def _signature(key: bytes, content_digest: str) -> str:
    # The digest already covers every value, so signing it (with format and version, so a
    # signature cannot be replayed onto another layout) signs the whole body.
    return hmac.new(key, f"{FORMAT}:{VERSION}:{content_digest}".encode(), hashlib.sha256).hexdigest()


def save_checkpoint(path: str | Path, kind: str, state: dict[str, Any], config: dict[str, Any],
                    key: bytes | None = None) -> Path:
    """Atomically write `state` (tensors/state_dicts/numbers) with `config` as JSON; signed with
    HMAC-SHA256 when `key` is given."""
    path = Path(path)
    config_json = json.dumps(config, sort_keys=True, default=str)
    body = {"kind": kind, "config": config_json, "state": state}
    d = digest(body)
    payload = {"format": FORMAT, "version": VERSION, **body, "digest": d}
    if key is not None:
        payload["hmac"] = _signature(key, d)
    with atomic_file(path) as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None,
                    map_location: str | torch.device = "cpu",
                    key: bytes | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, config) of a checkpoint; CheckpointError if it is not intact, or, when `key` is
    given, not signed with that key."""
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
    d = digest(body)
    if d != payload.get("digest"):
        raise CheckpointError(f"{path}: checkpoint content does not match its digest (file altered or corrupt)")
    if key is not None:
        sig = payload.get("hmac")
        if sig is None:
            raise CheckpointError(f"{path}: checkpoint is not signed and a signing key is set ({KEY_ENV}); "
                                  "write it again with the key, or unset the key to accept unsigned files")
        if not (isinstance(sig, str) and sig.isascii() and hmac.compare_digest(sig, _signature(key, d))):
            raise CheckpointError(f"{path}: checkpoint signature does not match the key "
                                  f"({KEY_ENV}): signed with another key, or altered")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and body["kind"] not in kinds:
        raise CheckpointError(f"{path}: holds a {body['kind']!r} checkpoint, expected {' or '.join(map(repr, kinds))}")
    return body["state"], json.loads(body["config"])
