"""Moving the `champion` alias in the MLflow registry, serialised so concurrent promotes cannot race.

"Read the champion, compare, set the alias" from several processes at once loses updates (and sqlite
even raises UNIQUE-constraint errors when two create the alias together). So a promote holds a
registry-wide mutex while it reads, decides and writes: the registered model `<name>.lock`. Creating
a registered model is atomic in every MLflow backend (a unique name in the database, also behind an
`mlflow server`), so whoever creates it holds the lock; deleting it releases. After writing, the alias
is read back (the re-check).

The lock is released on any exception, and SIGTERM is turned into one while it is held. A holder that
died anyway (SIGKILL, power loss) leaves the lock behind; a waiter breaks it when the holder's process
is gone (same host: the lock records host, pid namespace and pid) or the lock is older than LOCK_TTL_S
(another host; shorter than LOCK_WAIT_S, so one wait outlasts it). Breaking is itself serialised: only
the creator of the marker `<lock>.break-<id of that lock>` may delete the lock, after reading that it
is still the stale one; so of two waiters that both saw the stale lock, the slower finds the marker
taken or, later, a different holder, and never deletes the lock its rival has just taken.

    with registry_lock(uri, name):
        champ = current_champion(uri, name)
        ...decide...
        apply_decision(uri, name, version, decision, champion=champ)
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganops.tracking.store import TrackingError, TrackingWarning, _client, _reason

# The tags registration (model_registry.register_generator) writes on a version and the gate reads; here, so the
# promote stage reads them without importing the generator loader (and models/) that registration needs.
TAG_RUN_ID = "ganops.run_id"
METRIC_TAG_PREFIX = "metric."

CHAMPION, PREVIOUS = "champion", "previous"
TAG_DECISION, TAG_REASON = "ganops.decision", "ganops.decision_reason"
TAG_LOCK_HOLDER, TAG_LOCK_SINCE = "ganops.lock_holder", "ganops.lock_since"
TAG_LOCK_PIDNS = "ganops.lock_pid_namespace"  # two containers may share a host name, never a pid namespace
LOCK_TTL_S = 120.0  # a promote holds the lock for seconds; a lock this old belongs to a dead process
LOCK_WAIT_S = 300.0  # > LOCK_TTL_S: a lock left on another host expires within one wait
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


def _pid_namespace() -> str:
    """This process's pid namespace (Linux), so a pid is only checked where it means the same process."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "-"


def _process_gone(pid: int, since: float) -> bool:
    """Has process `pid`, which took a lock at `since` (time.time()), ended? Yes if there is no such
    process, or only its zombie, or a process that started after `since` (the pid was reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # another user's process; not a pid: unknown, wait the TTL
        pass
    try:  # Linux only; elsewhere a live pid counts as the holder
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # from field 3 (state) on; the name may hold spaces
        if fields[0] in ("Z", "X"):
            return True
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in ticks
        return started > since + 2.0  # + the rounding of btime and ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return False


@dataclass(frozen=True)
class _Held:
    """Who holds a lock model, as its tags say."""

    holder: str  # host:pid:token
    since: float  # time.time() when taken
    pid_namespace: str

    @property
    def key(self) -> str:
        """Names this lock instance (holder tokens are unique): the suffix of its break marker."""
        return hashlib.sha256(f"{self.holder}|{self.since!r}".encode()).hexdigest()[:12]

    def stale(self, now: float) -> str | None:
        """Why the holder is gone (its process has ended, or the lock outlived LOCK_TTL_S), else None."""
        host, _, rest = self.holder.partition(":")
        pid = rest.partition(":")[0]
        if (host == socket.gethostname() and self.pid_namespace == _pid_namespace() and pid.isdigit()
                and _process_gone(int(pid), self.since)):
            return f"its process {pid} has ended"
        if now - self.since > LOCK_TTL_S:
            return f"older than the {LOCK_TTL_S:.0f} s a promote may hold it"
        return None


def _held(client: Any, lock: str) -> _Held | None:
    """The lock's holder, None if nobody holds it. Tags a hand-made lock lacks count as unknown; its age
    then comes from the registry's creation time."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(lock)
    except MlflowException as e:
        if _not_found(e):
            return None
        raise
    tags = model.tags or {}
    try:
        since = float(tags[TAG_LOCK_SINCE])
    except (KeyError, ValueError):
        since = math.nan
    if not since <= time.time() + LOCK_TTL_S:  # unreadable, or far ahead of this clock: never expire it
        since = (model.creation_timestamp or 0) / 1000
    return _Held(tags.get(TAG_LOCK_HOLDER, "unknown"), since, tags.get(TAG_LOCK_PIDNS, "-"))


def _create_lock(client: Any, lock: str, me: str) -> bool:
    """Create lock model `lock` held by `me`: True if taken, False if someone else holds it (or the store
    was too busy to say; the caller retries)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(lock, tags={TAG_LOCK_HOLDER: me, TAG_LOCK_SINCE: repr(time.time()),
                                                   TAG_LOCK_PIDNS: _pid_namespace()},
                                       description="ganops promotion lock: held while a promote runs")
        return True
    except MlflowException as e:
        # Busy answers, not failures: the lock exists; sqlite under 8 writers says "database is
        # locked"; and the sqlite store, on a duplicate name, re-reads the model to word its error,
        # which says "not found" when the holder released it in between (a lost race: retry).
        if _busy(e):
            return False
        raise


def _busy(e: Any) -> bool:
    return getattr(e, "error_code", "") in _BUSY_CODES or "locked" in str(e).lower()


def _release(client: Any, lock: str, me: str, tries: int = 20) -> None:
    """Delete `lock` if `me` holds it (after a timeout or a lost race it is another's, or nobody's);
    a busy sqlite store is retried rather than leaving the lock to expire."""
    from mlflow.exceptions import MlflowException

    for attempt in range(tries):
        try:
            held = _held(client, lock)
            if held is not None and held.holder == me:
                client.delete_registered_model(lock)
            return
        except MlflowException as e:
            if not _busy(e) or attempt == tries - 1:
                raise
            time.sleep(_RETRY_S)


def _break_if_stale(client: Any, lock: str, me: str, notify: Callable[[str], None], depth: int = 0) -> None:
    """Delete `lock` if its holder is gone (see `_Held.stale`). Serialised by a marker model named after
    the stale lock, so exactly one waiter deletes it, and only while it is still that lock."""
    from mlflow.exceptions import MlflowException

    try:
        held = _held(client, lock)
    except MlflowException as e:
        if _busy(e):  # look again on the next round
            return
        raise
    if held is None or (why := held.stale(time.time())) is None:
        return
    marker = f"{lock}.break-{held.key}"
    if not _create_lock(client, marker, me):
        # Another waiter is breaking it (and the lock is gone in a moment), or died doing so: then
        # its marker is stale in turn; break that, one level down (depth: two faults in a row at most).
        if depth < 2:
            _break_if_stale(client, marker, me, notify, depth + 1)
        return
    try:
        again = _held(client, lock)
        if again is not None and again.key == held.key:
            client.delete_registered_model(lock)
            notify(f"broke the stale lock {lock!r} of {held.holder} (taken {time.time() - held.since:.0f} s "
                   f"ago; {why})")
    except MlflowException as e:
        if not _busy(e):  # busy: the lock is still there, and broken on the next round
            raise
    finally:
        _release(client, marker, me)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM (what CI runners and Kubernetes send) raises KeyboardInterrupt, so
    `finally` clauses run, unless the process already handles SIGTERM its own way."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _warn(message: str) -> None:
    warnings.warn(message, TrackingWarning, stacklevel=2)


@contextlib.contextmanager
def registry_lock(uri: str, name: str, wait_s: float = LOCK_WAIT_S,
                  notify: Callable[[str], None] = _warn) -> Iterator[None]:
    """Hold the promotion mutex of model `name` (see the module docstring); TrackingError after wait_s.
    `notify` gets a line when a stale lock is broken. Released on any exception and on SIGTERM."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    lock = _lock_name(name)
    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    # From before the create to after the release: a signal between the create and the `try` below
    # must release too, so the `finally` checks the registry rather than a flag set after the create.
    with _sigterm_raises():
        try:
            while True:
                try:
                    if _create_lock(client, lock, me):
                        break
                    _break_if_stale(client, lock, me, notify)
                except MlflowException as e:
                    raise TrackingError(f"model registry at {uri}: cannot take the promotion lock: "
                                        f"{_reason(e)}") from e
                except Exception as e:
                    raise TrackingError(f"model registry at {uri} is unreachable: {_reason(e)}") from e
                if time.monotonic() > deadline:
                    held = _held_quietly(client, lock)
                    raise TrackingError(f"model registry at {uri}: promotion lock {lock!r} still held after "
                                        f"{wait_s:.0f} s{f' by {held.holder}' if held else ''}; if no promote is "
                                        f"running, delete registered model {lock!r}")
                time.sleep(_RETRY_S)
            yield
        finally:
            try:
                _release(client, lock, me)
            except Exception as e:  # never hide the error that got us here; the lock will expire
                notify(f"could not release the promotion lock {lock!r} ({_reason(e)}); it is broken "
                       f"when the next promote finds this process gone")


def _held_quietly(client: Any, lock: str) -> _Held | None:
    try:
        return _held(client, lock)
    except Exception:  # only for the wording of an error already on its way
        return None


def apply_decision(uri: str, name: str, version: str, promote: bool, reason: str,
                   figures: Mapping[str, Any], champion: VersionInfo | None) -> VersionInfo | None:
    """Record the gate's decision on `version`; on promote move `champion` to it and `previous` to the
    old champion. Call under `registry_lock`. Returns the champion after the change (read back)."""
    client = _client(uri)
    try:
        tags = {TAG_DECISION: "promoted" if promote else "refused", TAG_REASON: reason[:4000],
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
