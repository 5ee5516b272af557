"""The MLflow tracking store: where it is, whether it answers, and the experiment stages log into.

Quiet, fail-fast defaults: an unreachable store raises `TrackingError` within seconds instead of
MLflow's minutes-long retry loop; mlflow itself is imported lazily (see `_mlflow`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganops.errors import GanopsError

if TYPE_CHECKING:
    from mlflow import MlflowClient

PROBE_TIMEOUT_S = 5  # http store probe: connect + read
STORE_TIMEOUT_S = 20.0  # database stores (first sqlite use creates tables, ~2 s)

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


class TrackingWarning(UserWarning):
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
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def resolve_tracking_uri(repo_root: Path) -> str:
    """`MLFLOW_TRACKING_URI` if set, else `sqlite:///<abs repo_root>/mlflow.db`."""
    if env := os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return env
    return f"sqlite:///{Path(repo_root).resolve() / 'mlflow.db'}"


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


def _check_sqlite_path(uri: str) -> None:
    path = uri.removeprefix("sqlite:///").split("?", 1)[0] if uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        return
    db = Path(path)
    if not db.parent.is_dir():
        raise FileNotFoundError(f"directory {db.parent} does not exist")
    if not os.access(db.parent, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise PermissionError(f"{db if db.exists() else db.parent} is not writable")


def check_store(uri: str) -> None:
    """Raise `TrackingError` within seconds if the tracking store at `uri` cannot be used."""
    _mlflow()
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    try:
        if scheme in ("http", "https"):
            _probe_http(uri)  # one short request instead of MLflow's retry loop
        else:
            if scheme == "sqlite":
                _check_sqlite_path(uri)  # sqlite would only say "unable to open database file"
            _within(STORE_TIMEOUT_S, lambda: _client(uri).search_experiments(max_results=1))
    except Exception as e:
        raise TrackingError(f"MLflow tracking store {uri} is unreachable: {_reason(e)}") from e


def get_or_create_experiment(name: str, repo_root: Path, tracking_uri: str | None = None) -> str:
    """Id of experiment `name`, created if missing.

    On a sqlite store its artifacts live in `<repo_root>/mlartifacts/<name>` (gitignored),
    not in MLflow's cwd-dependent `./mlruns`; on a server, the server decides.
    """
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or resolve_tracking_uri(repo_root)
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if uri.startswith("sqlite:"):
            safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "default"
            location = (Path(repo_root).resolve() / "mlartifacts" / safe).as_uri()
        try:
            return str(client.create_experiment(name, artifact_location=location))
        except MlflowException:  # another stage process may have created it meanwhile
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow experiment {name!r} is deleted: restore it "
                            f"(mlflow experiments restore --experiment-id {exp.experiment_id}) "
                            "or set another tracking.experiment")
    return str(exp.experiment_id)


