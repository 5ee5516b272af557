"""The outbox: tracking calls a stage could not send because its store did not answer, kept on disk until it does.

A stage's run logs straight to MLflow. When the store does not answer (connection refused, time-out, 5xx,
credentials refused), the call and every later one of that run go to the run's outbox instead, in order;
`StageRun` retries it now and then, and at the stage's end for up to GANOPS_TRACKING_RETRY_S seconds. What
is still there afterwards, the next ganops command that reaches the store sends (`flush_outbox`), and only
then is the run ended, with its real status and end time. A call the store refuses (4xx) or can no longer be
made (its file is gone) is dropped and the run is tagged TAG_INCOMPLETE, with a note saying what is missing.

Layout, one directory per run under `outbox_root()` (per user, outside the repo: `dvc exp run --temp` and
queued experiments run in temporary copies that are deleted):

    <run_id>/run.json       run id, tracking URI (credentials removed), parent run id
    <run_id>/entries.jsonl  one call a line, appended in one write each: a process killed mid-write leaves at
                            most a torn last line, which is ignored
    <run_id>/files/<n>/     artifact copies and image PNGs (written, then renamed into place)
    <run_id>/progress.json  how many entries were sent, and what was dropped (written, then renamed)
    <run_id>/lock           flock'ed by the stage that writes the outbox for its whole life, and by a flush

A run directory whose lock is free and whose entries have no "end" belongs to a stage process that died
(SIGKILL, power loss): a flush sends what is there and ends the run KILLED, tagged incomplete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganops.tracking.calls import (
    Rejected,
    _signals_deferred,
    incomplete_reason,
    is_outage,
    send,
    store_answers,
    what,
)
from ganops.tracking.store import TrackingWarning, _client, _reason, _sqlite_file

OUTBOX_ENV, RETRY_ENV = "GANOPS_OUTBOX", "GANOPS_TRACKING_RETRY_S"
RETRY_S = 120.0  # how long a stage's end keeps trying to send its outbox (GANOPS_TRACKING_RETRY_S)
STRIKES = 3  # an entry that fails this often while the store answers is dropped, not kept for ever
BATCH_POINTS = 1000  # MLflow's limit of metrics in one log_batch: kept metric entries are sent together
ENTRIES, PROGRESS, META, LOCK = "entries.jsonl", "progress.json", "run.json", "lock"


def outbox_root() -> Path:
    """$GANOPS_OUTBOX, else ${XDG_STATE_HOME:-~/.local/state}/ganops/outbox."""
    if env := os.environ.get(OUTBOX_ENV, "").strip():
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME", "").strip() or str(Path.home() / ".local" / "state")
    return Path(state) / "ganops" / "outbox"


def retry_seconds() -> float:
    """$GANOPS_TRACKING_RETRY_S (seconds, >= 0), else RETRY_S."""
    try:
        return max(float(os.environ.get(RETRY_ENV, RETRY_S)), 0.0)
    except ValueError:
        return RETRY_S


def redact(uri: str) -> str:
    """`uri` without user, password, query or fragment: what the outbox stores to know a run's store."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path.split('?', 1)[0].split('#', 1)[0]}"


# ---- the directory of one run ------------------------------------------------------------------------

@dataclass
class Delivery:
    done: bool  # everything sent or dropped, the directory removed
    sent: int = 0  # entries sent by this delivery
    rejected: list[str] = field(default_factory=list)  # dropped from this directory (ended: all the run's, tagged)
    ended: bool = False  # the run's end was sent


def _write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


class Outbox:
    """One run's outbox directory, locked (flock) by whoever holds this object until `close` or `remove`."""

    def __init__(self, path: Path, fd: int, meta: dict[str, Any]):
        self.path, self._fd, self.meta = path, fd, meta
        self.run_id: str = meta["run_id"]
        self._n = len(self.entries())

    @classmethod
    def create(cls, run_id: str, uri: str, parent_id: str | None) -> Outbox:
        """The outbox of a running stage's run, locked for as long as the stage holds it."""
        root = outbox_root()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # built under a hidden name and renamed once locked: a flush never sees it unlocked without an end
        tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=root))
        fd = os.open(tmp / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        meta = {"run_id": run_id, "tracking_uri": redact(uri), "parent_id": parent_id,
                "created": int(time.time() * 1000), "pid": os.getpid()}
        _write_atomic(tmp / META, meta)
        try:
            os.rename(tmp, root / run_id)
        except OSError:  # this run has one already (a removal that failed): take that one
            os.close(fd)
            shutil.rmtree(tmp, ignore_errors=True)
            if (box := cls.open(root / run_id)) is None:
                raise
            return box
        return cls(root / run_id, fd, meta)

    @classmethod
    def open(cls, path: Path) -> Outbox | None:
        """A run directory to flush, or None when a stage (or another flush) holds it, or it is gone."""
        try:
            fd = os.open(path / LOCK, os.O_RDWR)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            meta = _read_json(path / META)
            if meta and meta.get("run_id") == path.name:
                return cls(path, fd, meta)
        except OSError:  # held (BlockingIOError) or unreadable
            pass
        os.close(fd)
        return None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        """Delete the directory (renamed away first, so it vanishes at once) and release the lock."""
        gone = self.path.with_name(f".{self.path.name}.gone-{os.getpid()}")
        with contextlib.suppress(OSError):
            os.rename(self.path, gone)
            shutil.rmtree(gone, ignore_errors=True)
        self.close()

    def entries(self) -> list[dict[str, Any]]:
        """The kept calls in order; a torn last line (a process killed mid-write) is left out."""
        try:
            lines = (self.path / ENTRIES).read_bytes().split(b"\n")
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                if i < len(lines) - 1:  # cannot happen with whole-line appends; counted as dropped
                    out.append({"kind": "unreadable", "line": f"line {i + 1}"})
        return out

    def pending(self) -> int:
        return max(self._n - self._progress()["sent"], 0)

    def add(self, entry: Mapping[str, Any]) -> None:
        """Append one call; an artifact's file is copied (the stage may overwrite it), an image saved as PNG."""
        line = {k: v for k, v in entry.items() if k not in ("array", "path")}
        n = self._n
        if entry["kind"] in ("artifact", "image"):
            part = self.path / "files" / f"{n}.part"
            shutil.rmtree(part, ignore_errors=True)
            part.mkdir(parents=True)
            if entry["kind"] == "artifact":
                src = Path(entry["path"])
                if not src.exists():
                    raise Rejected(f"no such file: {src}")
                name = line["name"] = src.name
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, part / name)
            else:
                from PIL import Image

                name = "image.png"
                Image.fromarray(entry["array"]).save(part / name)
            os.rename(part, self.path / "files" / str(n))
            line["file"] = f"files/{n}/{name}"
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path / ENTRIES, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)  # one write: a kill leaves the line whole or torn, never interleaved
            if entry["kind"] == "end":
                os.fsync(fd)
        finally:
            os.close(fd)
        self._n += 1

    def _progress(self) -> dict[str, Any]:
        return {"sent": 0, "rejected": [], "strikes": None} | (_read_json(self.path / PROGRESS) or {})

    def deliver(self, client: Any, answers: bool, owner: bool) -> Delivery:
        """Send what is pending, in order; stop at the first call the store does not answer.

        `answers`: the store just answered a probe, so a call failing as an outage is a strike against
        that entry (STRIKES and it is dropped). `owner`: the stage writing this outbox is calling; for
        anyone else, a run without an "end" entry belongs to a dead stage and is ended KILLED here.
        """
        entries, prog = self.entries(), self._progress()
        if not owner and not any(e["kind"] == "end" for e in entries):
            entries.append({"kind": "end", "status": "KILLED", "parent_id": self.meta.get("parent_id"),
                            "end_time": max((e.get("t", 0) for e in entries), default=self.meta.get("created", 0)),
                            "rejected": ["the stage ended without closing its run (killed?): its end is unknown"]})
        i, sent, single_until = prog["sent"], 0, 0
        while i < len(entries):
            group = self._group(entries, i, single=i < single_until)
            entry = group[0] if len(group) == 1 else {"kind": "metrics",
                                                      "metrics": [m for g in group for m in g["metrics"]]}
            if entry["kind"] == "end":
                entry = {**entry, "rejected": [*entry.get("rejected", []), *prog["rejected"]]}
            try:
                with _signals_deferred():  # sent and counted, or neither: a resend would duplicate points
                    send(client, self.run_id, entry, self.path)
                    prog.update(sent=i + len(group), strikes=None)
                    _write_atomic(self.path / PROGRESS, prog)
                i, sent = i + len(group), sent + len(group)
                if entry["kind"] == "end":
                    self.remove()
                    return Delivery(True, sent, entry["rejected"], ended=True)
                continue
            except Exception as e:
                failure = e
            if is_outage(failure) and not (answers and self._strike(prog, i) >= STRIKES):
                _write_atomic(self.path / PROGRESS, prog)
                return Delivery(False, sent, prog["rejected"])
            if len(group) > 1:  # one bad point refuses the batch: send its entries one by one
                single_until = i + len(group)
                continue
            prog["rejected"].append(f"{what(entry)}: {_reason(failure)}")
            prog.update(sent=i + 1, strikes=None)
            _write_atomic(self.path / PROGRESS, prog)
            i += 1
        rejected = prog["rejected"]
        self.remove()  # an owner's drain: its later calls go straight to the store again
        return Delivery(True, sent, rejected)

    def drain(self, client: Any, uri: str) -> Delivery:
        """The owner's `deliver`, if the store answers a probe (a dead store costs one short request)."""
        try:
            return self.deliver(client, True, owner=True) if store_answers(uri) else Delivery(False)
        except OSError:  # the directory is broken (deleted by hand?): the stage's later calls are counted lost
            return Delivery(False)

    @staticmethod
    def _group(entries: list[dict[str, Any]], i: int, single: bool) -> list[dict[str, Any]]:
        """entries[i], with the metric entries after it while they fit one log_batch."""
        group, points = [entries[i]], len(entries[i].get("metrics", ()))
        while (not single and entries[i]["kind"] == "metrics" and i + len(group) < len(entries)
               and entries[i + len(group)]["kind"] == "metrics"
               and points + len(entries[i + len(group)]["metrics"]) <= BATCH_POINTS):
            points += len(entries[i + len(group)]["metrics"])
            group.append(entries[i + len(group)])
        return group

    @staticmethod
    def _strike(prog: dict[str, Any], i: int) -> int:
        strikes = prog.get("strikes") or [i, 0]
        prog["strikes"] = [i, (strikes[1] if strikes[0] == i else 0) + 1]
        return int(prog["strikes"][1])


# ---- the next command's flush ------------------------------------------------------------------------

@dataclass
class FlushSummary:
    """What `flush_outbox` did, per run id."""

    uri: str
    completed: dict[str, int] = field(default_factory=dict)  # run -> calls sent; the run is ended
    incomplete: dict[str, str] = field(default_factory=dict)  # run -> why it is tagged incomplete (also completed)
    pending: dict[str, str] = field(default_factory=dict)  # run -> why its calls are still kept
    busy: list[str] = field(default_factory=list)  # held by a running stage (or another flush)

    def line(self) -> str:
        """One line for stderr."""
        parts = [f"sent {sum(self.completed.values())} kept call(s) of {len(self.completed)} run(s) "
                 f"({', '.join(self.completed)}) to {self.uri}" if self.completed else f"nothing sent to {self.uri}"]
        if self.incomplete:
            parts.append(f"{len(self.incomplete)} marked incomplete ({next(iter(self.incomplete.values()))})")
        if self.pending:
            parts.append(f"{len(self.pending)} run(s) still kept in {outbox_root()} "
                         f"({next(iter(self.pending.values()))})")
        if self.busy:
            parts.append(f"{len(self.busy)} run(s) still being written by a running stage")
        return "tracking: " + "; ".join(parts)


def kept_runs(uri: str) -> list[Path]:
    """The run directories in the outbox that belong to the store at `uri`, oldest first."""
    root, key = outbox_root(), redact(uri)
    found = []
    for d in root.iterdir() if root.is_dir() else ():
        if not d.name.startswith(".") and (meta := _read_json(d / META)) and meta.get("tracking_uri") == key:
            found.append((meta.get("created", 0), d))
    return [d for _, d in sorted(found)]


def flush_outbox(uri: str, answers: bool | None = None) -> FlushSummary:
    """Send every kept call of runs logged to `uri` and end those runs; never raises for store trouble.

    `answers`: whether the store just answered (check_store); None probes it first. Runs a stage still
    writes are skipped (`busy`); if the store stops answering, the rest stay `pending` for the next time.
    """
    summary = FlushSummary(redact(uri))
    dirs = kept_runs(uri)
    if dirs and (db := _sqlite_file(uri)) is not None and not db.exists():  # a probe would create it, empty
        summary.pending = {d.name: f"no store at {db}" for d in dirs}
        return summary
    if dirs and answers is None:
        answers = store_answers(uri)
    if dirs and not answers:
        summary.pending = {d.name: f"the store {summary.uri} does not answer" for d in dirs}
        return summary
    client = _client(uri) if dirs else None
    for k, d in enumerate(dirs):
        if (box := Outbox.open(d)) is None:
            summary.busy.append(d.name)
            continue
        try:
            if (missing := _not_in_store(client, d.name)) is not None:
                summary.pending[d.name] = missing
                continue
            res = box.deliver(client, answers=True, owner=False)
        except Exception as e:  # a disk error, say: leave it for the next time, try the next run
            res, why = Delivery(False), f"{type(e).__name__}: {e}"
        else:
            why = f"the store {summary.uri} stopped answering"
        finally:
            box.close()
        if res.done:
            summary.completed[d.name] = res.sent
            if res.rejected:
                summary.incomplete[d.name] = incomplete_reason(res.rejected)
        else:
            summary.pending[d.name] = why
            if why.startswith("the store"):  # the others would fail alike
                summary.pending |= {rest.name: why for rest in dirs[k + 1:]}
                break
    return summary


def _not_in_store(client: Any, run_id: str) -> str | None:
    """Why the run cannot take its kept calls although the store answers (a store recreated under the same
    URI, the run deleted for good), or None. Its outbox is then kept: refused one by one, all would be lost."""
    try:
        client.get_run(run_id)
    except Exception as e:
        if not is_outage(e):
            return (f"run {run_id} is not in this store ({_reason(e)}); its calls stay in {outbox_root() / run_id}: "
                    "delete that directory if the run is gone for good")
    return None


def send_kept(uri: str, answers: bool | None = None) -> None:
    """`flush_outbox` for a command that has just reached the store: one line on stderr if it did anything,
    a warning if the outbox itself failed; never raises (the command's own work comes first)."""
    try:
        summary = flush_outbox(uri, answers)
    except Exception as e:
        warnings.warn(f"could not send the tracking outbox {outbox_root()}: {_reason(e)}", TrackingWarning,
                      stacklevel=2)
        return
    if summary.completed or summary.pending:
        print(summary.line(), file=sys.stderr, flush=True)
