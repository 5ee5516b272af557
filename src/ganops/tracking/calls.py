"""One tracking call as data: how it is sent to MLflow, and whether its failure means the store is down.

`StageRun` turns each logging call into an entry (a dict: "kind" and the call's arguments, plus "t", the
wall-clock ms it was made) and sends it with `send`; the outbox keeps the same entries on disk and sends them
later with the same function, so a call sent late is the call that would have been made.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from ganops.tracking.store import TrackingError, TrackingWarning, _mlflow, check_store

PROBE_BUDGET_S = 5.0  # one "does the store answer?" check before sending, so a dead store costs seconds
TAG_INCOMPLETE, TAG_NOTE = "ganops.tracking_incomplete", "mlflow.note.content"  # the note: the run's description
NOTE_HEAD = "**Incomplete record** (ganops)"


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C's (and SIGTERM's, see pipelines.common.run) exception waits until the block ends.

    Raised inside the database driver it leaves a half-closed cursor behind (and sqlalchemy logs a
    traceback), and the run's end may then fail; a tracking call takes milliseconds. Only signals with
    a Python handler are deferred (with the default action the kernel ends the process anyway), and
    only in the main thread, where Python runs handlers. A second signal meanwhile acts at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    deferred = {s: h for s, h in handlers.items() if callable(h)}
    got: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if got:  # a second signal does not wait (a store that hangs must not trap Ctrl-C)
            deferred[signum](signum, frame)
        got.append(signum)

    for s in deferred:
        signal.signal(s, hold)
    try:
        yield
    finally:
        for s, h in deferred.items():
            signal.signal(s, h)
        if got:
            deferred[got[0]](got[0], None)  # raises KeyboardInterrupt / Terminated here


class Rejected(Exception):
    """An entry that can never be sent (its file is gone, an unreadable line): dropped, the run marked incomplete."""


def is_outage(e: BaseException) -> bool:
    """Whether `e` says the store did not answer (keep the call) rather than refused it (drop it).

    5xx (MLflow wraps a refused connection as one), 401/403 (fix the credentials, then flush), 408, 429, and
    network, OS and database-driver errors are outages; other 4xx and local errors are refusals.
    """
    from mlflow.exceptions import MlflowException

    if isinstance(e, Rejected):
        return False
    status = e.get_http_status_code() if isinstance(e, MlflowException) else \
        getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status in (401, 403, 408, 429)
    return isinstance(e, OSError | TimeoutError) or type(e).__module__.startswith("sqlalchemy")


def store_answers(uri: str) -> bool:
    """One short check that the store at `uri` answers (no store notices: the stage already had them)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TrackingWarning)
            check_store(uri, budget_s=PROBE_BUDGET_S)
        return True
    except TrackingError:
        return False


def what(entry: Mapping[str, Any]) -> str:
    """A few words naming an entry, for warnings and the incomplete-run note."""
    kind = entry["kind"]
    if kind == "metrics":
        keys = sorted({m[0] for m in entry["metrics"]})
        return f"metrics {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
    if kind == "artifact":
        return f"artifact {entry.get('name') or Path(entry['path']).name}"
    if kind == "image":
        return f"image {entry['key']} (step {entry.get('step')})"
    if kind in ("dict", "text"):
        return f"artifact {entry['file']}"
    if kind in ("params", "tags"):
        return f"{kind} {', '.join(sorted(entry[kind])[:3])}"
    return "the run's end" if kind == "end" else kind


def _send_metrics(client: Any, run_id: str, e: dict[str, Any], base: Path | None) -> None:
    from mlflow.entities import Metric

    client.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in e["metrics"]])


def _send_params(client: Any, run_id: str, e: dict[str, Any], base: Path | None) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, v) for k, v in e["params"].items()])


def _send_tags(client: Any, run_id: str, e: dict[str, Any], base: Path | None) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in e["tags"].items()])


def _local_file(e: dict[str, Any], base: Path | None) -> Path:
    path = base / e["file"] if base is not None and "file" in e else Path(e["path"])
    if not path.exists():
        raise Rejected("the file is gone from the outbox" if "file" in e else f"no such file: {path}")
    return path


def _send_artifact(client: Any, run_id: str, e: dict[str, Any], base: Path | None) -> None:
    client.log_artifact(run_id, str(_local_file(e, base)), e.get("artifact_path"))


def _send_image(client: Any, run_id: str, e: dict[str, Any], base: Path | None) -> None:
    import numpy as np
    from PIL import Image

    if "array" in e:
        image = e["array"]
    else:
        with Image.open(_local_file(e, base)) as im:
            image = np.asarray(im.convert("RGB"))
    client.log_image(run_id, image, key=e["key"], step=e.get("step"), timestamp=e["t"], synchronous=True)


def _send_end(client: Any, run_id: str, e: dict[str, Any], base: Path | None) -> None:
    """Mark the run incomplete if calls were dropped, end it at its real end time, and its parent too."""
    from mlflow.entities import RunTag

    if dropped := e.get("rejected"):
        note = client.get_run(run_id).data.tags.get(TAG_NOTE, "")
        client.log_batch(run_id, tags=[RunTag(TAG_INCOMPLETE, incomplete_reason(dropped)),
                                       RunTag(TAG_NOTE, incomplete_note(dropped, note))])
    client.set_terminated(run_id, status=e["status"], end_time=e["end_time"])
    if parent_id := e.get("parent_id"):  # the parent's status and end time follow its latest stage
        try:
            parent = client.get_run(parent_id)
            if parent.info.end_time is None or parent.info.end_time <= e["end_time"]:
                client.set_terminated(parent_id, status=e["status"], end_time=e["end_time"])
        except Exception as err:
            if is_outage(err):
                raise  # sent again with the run's end: setting a status twice is harmless


def incomplete_reason(dropped: list[str]) -> str:
    """The TAG_INCOMPLETE value: how many calls are missing and the first of them."""
    more = f" (+{len(dropped) - 1} more, see the description)" if len(dropped) > 1 else ""
    return f"{len(dropped)} tracking call(s) not recorded: {dropped[0]}"[:400] + more


def incomplete_note(dropped: list[str], note: str = "") -> str:
    """The run's description (markdown): what is missing, after any description of its own it had."""
    own = note.split(NOTE_HEAD, 1)[0].rstrip()  # not ours from an earlier attempt that did not get through
    lines = [f"{NOTE_HEAD}: {len(dropped)} tracking call(s) could not be recorded:",
             *(f"- {d[:300]}" for d in dropped[:20]), *([f"- ... and {len(dropped) - 20} more"] if len(dropped) > 20
                                                         else [])]
    return (f"{own}\n\n" if own else "") + "\n".join(lines)


_SENDERS: dict[str, Callable[[Any, str, dict[str, Any], Path | None], None]] = {
    "metrics": _send_metrics, "params": _send_params, "tags": _send_tags, "artifact": _send_artifact,
    "image": _send_image, "end": _send_end,
    "dict": lambda client, run_id, e, base: client.log_dict(run_id, e["dict"], e["file"]),
    "text": lambda client, run_id, e, base: client.log_text(run_id, e["text"], e["file"]),
}


def send(client: Any, run_id: str, entry: dict[str, Any], base: Path | None = None) -> None:
    """Make the MLflow call of one entry (a live call: `base` None; a kept one: `base` its run directory)."""
    if (sender := _SENDERS.get(entry["kind"])) is None:
        raise Rejected(f"unreadable outbox entry ({entry.get('line', entry['kind'])})")
    sender(client, run_id, entry, base)


def release_fluent_run(run_id: str) -> None:
    """Make mlflow forget `run_id` as its active run and stop its system-metrics thread, without a call to
    the store: `mlflow.end_run` would end the run there at once, before what is kept in the outbox."""
    from mlflow.tracking import fluent

    active = _mlflow().active_run()
    if active is not None and active.info.run_id == run_id:
        stack = getattr(fluent, "_active_run_stack", None)  # private: mlflow 3 keeps the runs there
        runs = stack.get() if stack is not None else None
        if isinstance(runs, list) and runs and runs[-1].info.run_id == run_id:
            runs.pop()
            os.environ.pop("MLFLOW_RUN_ID", None)  # what end_run unsets
        else:  # another mlflow: its end_run (the store may be down: the end is sent again with the outbox)
            with contextlib.suppress(Exception):
                _mlflow().end_run()
    monitors = getattr(fluent, "run_id_to_system_metrics_monitor", {})
    if (monitor := monitors.pop(run_id, None)) is not None:
        monitor.finish()
