"""The MLflow tracking store: where it is, whether it answers, and the experiment stages log into.

Quiet, fail-fast defaults: an unreachable store raises `TrackingError` within seconds instead of
MLflow's minutes-long retry loop; mlflow itself is imported lazily (see `_mlflow`). A database store
that answers but is busy (locked by `mlflow ui` or another stage, slow on a loaded machine) is
retried with back-off for up to STORE_BUDGET_S, and if it stays busy the error says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganops.errors import GanopsError, GanopsWarning
from ganops.io import free_bytes

if TYPE_CHECKING:
    from mlflow import MlflowClient

PROBE_TIMEOUT_S = 5  # http store probe: connect + read
# A sqlite store needs room to take a stage's run: a new store's tables are ~1 MB, and every write first copies
# the pages it changes to a journal beside the file. Below this the first write fails halfway ("database or disk
# is full", a half-migrated new store), so the store is refused before the run instead.
STORE_MIN_FREE_BYTES = 4 << 20
_FULL = re.compile(r"database or disk is full|no space left on device|disk quota exceeded", re.IGNORECASE)
STORE_TIMEOUT_S = 20.0  # one attempt on a database store (first sqlite use creates tables, ~2 s)
STORE_BUDGET_S = 60.0  # all attempts on a busy database store; back-off 1, 2, 4, 8, 8 ... s between them
# what a database says when it is in use rather than gone (sqlite, postgres, mysql), and `_within`'s
# timeout (it answers, slowly); a connection that times out is a dead host: unreachable, no retry
_BUSY = re.compile(r"database (table )?is locked|database is busy|lock wait timeout|lock timeout|deadlock|"
                   r"too many connections|no answer within", re.IGNORECASE)

# MLflow 3's UI opens an experiment without this tag on its GenAI view (traces, an empty overview); with
# it, on the "Model training" view: the runs table, metrics and charts. A user's own choice is kept.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"

# A dying server should cost seconds, not MLflow's default ~4 min retry loop per call.
_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # no "🏃 View run ..." lines
    "MLFLOW_DISABLE_TELEMETRY": "true",  # usage pings stall or fail on offline runners
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # per-file download bars are noise in stage logs
}


class TrackingError(GanopsError):
    """The tracking store cannot be used; the message names the URI and the reason."""


class TrackingWarning(GanopsWarning):
    """A logging call failed after the run started; the stage carried on."""


def _mlflow() -> Any:
    """Import mlflow with ganops' quiet defaults (user-set environment variables win)."""
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    quiet = "MLFLOW_LOGGING_LEVEL" not in os.environ
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read once, at mlflow import
    import mlflow

    if quiet:  # mlflow may have been imported before us
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        # It logs every database error with its traceback ("SQLAlchemy database error. The following exception is
        # caught") and then raises it; ganops reports what it raises in one line, so the log is only noise.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    return mlflow


def _client(uri: str) -> MlflowClient:
    return _mlflow().MlflowClient(tracking_uri=uri)


def _reason(exc: BaseException) -> str:
    """One readable line out of MLflow/requests/sqlalchemy error text."""
    text = str(exc).strip()
    if m := re.search(r"\[Errno -?\d+\] ([^'\")]+)", text):
        return m.group(1).strip()
    if "timed out" in text.lower():
        return "no answer (timed out)"
    if m := _FULL.search(text):
        return m.group(0)
    # sqlalchemy's "(sqlite3.OperationalError) <what the database said>": the class name tells a user nothing
    return re.sub(r"^\([\w.]+\)\s*", "", text.splitlines()[0] if text else type(exc).__name__)[:300]


def is_full(reason: str) -> bool:
    """Whether an error text (or `_reason`) says the store's disk is full."""
    return bool(_FULL.search(reason))


def resolve_tracking_uri(repo_root: Path) -> str:
    """`MLFLOW_TRACKING_URI` if set and not blank, else `sqlite:///<abs repo_root>/mlflow.db`.

    Blank counts as unset: a CI file writes `MLFLOW_TRACKING_URI: ${{ vars.X }}` and gets "" when X is
    missing; `store_notices` says so, so the fallback is never silent."""
    if env := os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return env
    return f"sqlite:///{Path(repo_root).resolve() / 'mlflow.db'}"


def experiment_name(configured: str) -> str:
    """`MLFLOW_EXPERIMENT_NAME` (MLflow's own variable) if set and not blank, else `tracking.experiment`.

    Neither is a DVC dependency of any stage: naming a personal experiment reruns nothing."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or configured


def is_local_store(uri: str) -> bool:
    """A store only this machine sees (sqlite file, file store, plain path): never a team's server."""
    return _local_path(uri) is not None or _sqlite_file(uri) is not None or uri.startswith("sqlite:")


def _local_path(uri: str) -> Path | None:
    """The directory of a file store (`file:` URI or a plain path; "databricks" is a profile, not a path)."""
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file://").removeprefix("file:"))
    return Path(uri) if "://" not in uri and ":" not in uri and not uri.startswith("databricks") else None


def store_notices(uri: str) -> list[str]:
    """What a user should hear before `uri` is used: a blank MLFLOW_TRACKING_URI that fell back to the local
    store, and a local store that does not exist yet (the first use creates it, empty: a typo in a path
    would otherwise start a silent fresh registry with no champion). Call before `check_store`."""
    notes = []
    raw = os.environ.get("MLFLOW_TRACKING_URI")
    if raw is not None and not raw.strip():
        notes.append(f"MLFLOW_TRACKING_URI is set but empty: treated as unset, using the local store {uri}")
    # (a store in a missing directory is not created: check_store refuses it)
    if (db := _sqlite_file(uri)) is not None and not db.exists() and db.parent.is_dir():
        notes.append(f"no MLflow store at {db}: creating a new, empty one (no runs, no registered models)")
    elif (path := _local_path(uri)) is not None and not path.exists() and path.parent.is_dir():
        notes.append(f"no MLflow store at {path}: creating a new, empty one (no runs, no registered models)")
    return notes


def check_store_exists(uri: str) -> None:
    """For commands that only read the registry (sample, lineage): a local store that does not exist is an
    error naming it, not a new, empty store created by the read (where a typo would then find no model)."""
    path = _sqlite_file(uri) or _local_path(uri)
    if path is not None and not path.exists():
        blank = " (MLFLOW_TRACKING_URI is empty: treated as unset)" \
            if os.environ.get("MLFLOW_TRACKING_URI", "x").strip() == "" else ""
        raise TrackingError(f"no MLflow store at {path}{blank}: nothing to read; set MLFLOW_TRACKING_URI to the "
                            "store that holds the model")


def artifact_root(uri: str, repo_root: Path) -> Path:
    """Where a local store keeps artifacts: `mlartifacts/` beside the sqlite file, so a store on a volume
    (the Docker image's /mlflow) keeps its artifacts with it; the repo root for other local stores."""
    db = _sqlite_file(uri)
    return (db.resolve().parent if db is not None else Path(repo_root).resolve()) / "mlartifacts"


def _within(seconds: float, fn: Callable[[], Any]) -> None:
    """Run fn in a daemon thread; raise its error, or TimeoutError after `seconds`."""
    errors: list[Exception] = []

    def target() -> None:
        try:
            fn()
        except Exception as e:  # re-raised in the caller's thread
            errors.append(e)

    worker = threading.Thread(target=target, name="ganops-store-probe", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if errors:
        raise errors[0]


def _probe_http(uri: str) -> None:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    endpoint = "/api/2.0/mlflow/experiments/search"
    resp = http_request(get_default_host_creds(uri), endpoint, "GET", max_retries=0, backoff_factor=0,
                        timeout=PROBE_TIMEOUT_S, raise_on_status=False, params={"max_results": 1})
    if resp.status_code in (401, 403):
        raise PermissionError(f"HTTP {resp.status_code}, credentials rejected "
                              "(MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN)")
    if resp.status_code != 200:
        raise ConnectionError(f"HTTP {resp.status_code} from {endpoint} (is this an MLflow server?)")


def _sqlite_file(uri: str) -> Path | None:
    path = uri.removeprefix("sqlite:///").split("?", 1)[0] if uri.startswith("sqlite:///") else ""
    return Path(path) if path and path != ":memory:" else None


def _check_sqlite_path(uri: str) -> None:
    if (db := _sqlite_file(uri)) is None:
        return
    if not db.parent.is_dir():
        raise FileNotFoundError(f"directory {db.parent} does not exist")
    if not os.access(db.parent, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise PermissionError(f"{db if db.exists() else db.parent} is not writable")
    if (free := free_bytes(db.parent)) < STORE_MIN_FREE_BYTES:
        raise TrackingError(f"MLflow tracking store {db}: database or disk is full ({free} bytes free on its file "
                            f"system, a run needs {STORE_MIN_FREE_BYTES >> 20} MiB); free space, or set "
                            "MLFLOW_TRACKING_URI to another store")


def _sqlite_locked(uri: str) -> bool:
    """Whether another connection holds a lock on the sqlite file that stops a read (asked without waiting)."""
    if (db := _sqlite_file(uri)) is None or not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=0)) as con:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as e:
        return "locked" in str(e) or "busy" in str(e)
    return False


def _busy_message(uri: str, exc: BaseException, waited: float, attempts: int) -> str:
    if "locked" in str(exc).lower() or _sqlite_locked(uri):
        what, why = "database is locked", "another process holds a write lock, e.g. `mlflow ui` or a stage"
    else:
        what, why = _reason(exc), "the machine or the database is overloaded"
    return f"MLflow tracking store {uri} is busy: {what} (for {waited:.0f} s, {attempts} attempt(s); {why})"


def _check_database(uri: str, budget_s: float) -> None:
    """Ask a database store for one experiment; retry while it is busy, for at most `budget_s` seconds."""
    start, delay, attempts = time.monotonic(), 1.0, 0
    while True:
        attempts += 1
        left = budget_s - (time.monotonic() - start)
        try:
            _within(max(min(STORE_TIMEOUT_S, left), 0.1), lambda: _client(uri).search_experiments(max_results=1))
            return
        except Exception as e:
            if not _BUSY.search(str(e)):
                raise
            waited = time.monotonic() - start
            if waited + delay >= budget_s:
                raise TrackingError(_busy_message(uri, e, waited, attempts)) from e
        time.sleep(delay)
        delay = min(2 * delay, 8.0)


def check_store(uri: str, budget_s: float = STORE_BUDGET_S) -> None:
    """Raise `TrackingError` if the tracking store at `uri` cannot be used.

    An http(s) store gets one short probe (a dead server fails within seconds, "unreachable"); a
    database store is retried with back-off while it is busy, up to `budget_s` seconds in all, and then
    fails saying busy/locked; other errors (missing directory, not writable, not a database) fail at once.
    """
    _mlflow()
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    try:
        if scheme == "sqlite":  # sqlite would only say "unable to open database file", or fill the disk halfway
            _check_sqlite_path(uri)  # first: a store refused here is not created, so no notice says it will be
        for note in store_notices(uri):  # before the first use creates the store
            warnings.warn(note, TrackingWarning, stacklevel=2)
        if scheme in ("http", "https"):
            _probe_http(uri)  # one short request instead of MLflow's retry loop
        else:
            _check_database(uri, budget_s)
    except TrackingError:
        raise
    except Exception as e:
        how = "is full" if is_full(str(e)) else "is unreachable"  # it answered: it has no room
        raise TrackingError(f"MLflow tracking store {uri} {how}: {_reason(e)}") from e


def get_or_create_experiment(name: str, repo_root: Path, tracking_uri: str | None = None) -> str:
    """Id of experiment `name`, created if missing.

    On a sqlite store its artifacts live in `mlartifacts/<name>` beside the database file (`artifact_root`;
    for the default store that is the repo root, gitignored), not in MLflow's cwd-dependent `./mlruns`; on a
    server, the server decides.
    """
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or resolve_tracking_uri(repo_root)
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if uri.startswith("sqlite:"):
            safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "default"
            location = (artifact_root(uri, repo_root) / safe).as_uri()
        try:
            return str(client.create_experiment(name, artifact_location=location,
                                                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}))
        except MlflowException:  # another stage process may have created it meanwhile
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow experiment {name!r} is deleted: restore it "
                            f"(mlflow experiments restore --experiment-id {exp.experiment_id}) "
                            "or set another tracking.experiment")
    if EXPERIMENT_KIND_TAG not in exp.tags:  # made before ganops tagged its experiments, or by hand
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(exp.experiment_id)


