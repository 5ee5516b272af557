"""Moving the `champion` alias in the MLflow registry, serialised so concurrent promotes cannot race.

"Read the champion, compare, set the alias" from several processes at once loses updates (and sqlite
even raises UNIQUE-constraint errors when two create the alias together). So a promote holds a
registry-wide mutex while it reads, decides and writes: the registered model `<name>.lock`. Creating
a registered model is atomic in every MLflow backend (a unique name in the database, also behind an
`mlflow server`), so whoever creates it holds the lock; deleting it releases. A lock left by a killed
process expires after LOCK_TTL_S. After writing, the alias is read back (the re-check).

    with registry_lock(uri, name):
        champ = current_champion(uri, name)
        ...decide...
        apply_decision(uri, name, version, decision, champion=champ)
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ganops.tracking.registry import METRIC_TAG_PREFIX, TAG_RUN_ID
from ganops.tracking.store import TrackingError, _client, _reason

CHAMPION, PREVIOUS = "champion", "previous"
TAG_DECISION, TAG_REASON = "ganops.decision", "ganops.decision_reason"
TAG_LOCK_HOLDER, TAG_LOCK_SINCE = "ganops.lock_holder", "ganops.lock_since"
LOCK_TTL_S = 600.0  # a promote takes seconds; a lock this old belongs to a dead process
LOCK_WAIT_S = 300.0
_RETRY_S = 0.2
_BUSY_CODES = ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


@dataclass(frozen=True)
class VersionInfo:
    """What the gate and `ganops lineage` read of a version: metrics and tags (lineage, decisions)."""

    name: str
    version: str
    metrics: dict[str, float]
    tags: dict[str, str]
    aliases: tuple[str, ...]
    run_id: str | None
    source: str

    @property
    def metric_tags(self) -> dict[str, str]:
        """The metrics as registered (tag strings), for the gate to parse and range-check itself."""
        return metric_tags(self.tags)


def metric_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {k[len(METRIC_TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(METRIC_TAG_PREFIX)}


def _info(mv: Any) -> VersionInfo:
    tags = dict(mv.tags or {})
    metrics = {}
    for k, v in metric_tags(tags).items():
        # For display (`ganops lineage`) an unreadable value is left out; the gate reads metric_tags
        # and refuses it.
        with contextlib.suppress(ValueError):
            metrics[k] = float(v)
    return VersionInfo(name=mv.name, version=str(mv.version), metrics=metrics, tags=tags,
                       aliases=tuple(getattr(mv, "aliases", []) or []), run_id=tags.get(TAG_RUN_ID) or mv.run_id,
                       source=mv.source)


def _not_found(e: Exception) -> bool:
    return getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def get_version(uri: str, name: str, version: str | None = None, alias: str | None = None) -> VersionInfo | None:
    """Version `version` (or the one `alias` points to) of model `name`; None if there is none.
    TrackingError if the store cannot be reached."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as e:
        if _not_found(e):
            return None
        raise TrackingError(f"model registry at {uri}: {_reason(e)}") from e
    except Exception as e:
        raise TrackingError(f"model registry at {uri} is unreachable: {_reason(e)}") from e
    return _info(mv)


def current_champion(uri: str, name: str) -> VersionInfo | None:
    return get_version(uri, name, alias=CHAMPION)


def _lock_name(name: str) -> str:
    return f"{name}.lock"


@contextlib.contextmanager
def registry_lock(uri: str, name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the promotion mutex of model `name` (see the module docstring); TrackingError after wait_s."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    lock = _lock_name(name)
    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(lock, tags={TAG_LOCK_HOLDER: me, TAG_LOCK_SINCE: str(time.time())},
                                           description="ganops promotion lock: held while a promote runs")
            break
        except MlflowException as e:
            # Busy answers, not failures: the lock exists; sqlite under 8 writers says "database is
            # locked"; and the sqlite store, on a duplicate name, re-reads the model to word its error,
            # which says "not found" when the holder released it in between (a lost race: retry).
            if e.error_code not in _BUSY_CODES and "locked" not in str(e).lower():
                raise TrackingError(f"model registry at {uri}: cannot take the promotion lock: {_reason(e)}") from e
            _break_if_stale(client, lock)
        except Exception as e:
            raise TrackingError(f"model registry at {uri} is unreachable: {_reason(e)}") from e
        if time.monotonic() > deadline:
            raise TrackingError(f"model registry at {uri}: promotion lock {lock!r} still held after {wait_s:.0f} s; "
                                f"if no promote is running, delete registered model {lock!r}")
        time.sleep(_RETRY_S)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            if client.get_registered_model(lock).tags.get(TAG_LOCK_HOLDER) == me:
                client.delete_registered_model(lock)


def _break_if_stale(client: Any, lock: str) -> None:
    """Delete a lock older than LOCK_TTL_S (its holder died without releasing it)."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException, ValueError):
        held = client.get_registered_model(lock)
        if time.time() - float(held.tags.get(TAG_LOCK_SINCE, "inf")) > LOCK_TTL_S:
            client.delete_registered_model(lock)


def apply_decision(uri: str, name: str, version: str, promote: bool, reason: str,
                   figures: Mapping[str, Any], champion: VersionInfo | None) -> VersionInfo | None:
    """Record the gate's decision on `version`; on promote move `champion` to it and `previous` to the
    old champion. Call under `registry_lock`. Returns the champion after the change (read back)."""
    client = _client(uri)
    try:
        tags = {TAG_DECISION: "promoted" if promote else "rejected", TAG_REASON: reason[:4000],
                **{f"ganops.gate.{k}": str(v) for k, v in figures.items()}}
        for k, v in tags.items():
            client.set_model_version_tag(name, version, k, v)
        if promote:
            if champion is not None and champion.version != version:
                client.set_registered_model_alias(name, PREVIOUS, champion.version)
                client.set_model_version_tag(name, champion.version, "ganops.replaced_by", version)
            client.set_registered_model_alias(name, CHAMPION, version)
    except Exception as e:
        raise TrackingError(f"model registry at {uri}: could not record the decision on {name} v{version}: "
                            f"{_reason(e)}") from e
    after = current_champion(uri, name)
    expected = version if promote else (champion.version if champion else None)
    if (after.version if after else None) != expected:  # the re-check: the lock should make this impossible
        raise TrackingError(f"{name}: champion is v{after.version if after else None} after the decision, "
                            f"expected v{expected}; another process moved it without the lock")
    return after
