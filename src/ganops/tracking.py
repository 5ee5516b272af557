"""MLflow tracking for ganops stages — the only module that imports mlflow.

A stage command wraps its work in one run:

    with stage_run("pretrain", cfg.experiment, params, repo_root()) as run:
        for epoch in ...:
            run.log_metrics({"loss/recon": loss}, step=epoch)
        run.log_image_grid(samples, key="samples", step=epoch)

Starting is fail-fast: an unreachable store raises `TrackingError` before any work.
After the start, logging never crashes training: a failed call warns once and the
stage goes on (a slow failure also pauses tracking for a while so a dying server
cannot stall every step). Lineage tags (git, params, data, pipeline key) come from
`ganops.lineage`; MLflow is imported lazily, so `import ganops` stays light.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganops.errors import GanopsError
from ganops.lineage import git_commit, git_dirty, params_hash, pipeline_key, repo_root, to_jsonable

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch
    from mlflow import MlflowClient

__all__ = [
    "StageRun", "TrackingError", "TrackingWarning", "check_store", "find_pipeline_runs",
    "flatten_params", "get_or_create_experiment", "image_grid", "lineage_tags", "repo_root",
    "resolve_tracking_uri", "stage_run",
]

TAG_STAGE, TAG_COMMIT, TAG_DIRTY = "ganops.stage", "ganops.git_commit", "ganops.git_dirty"
TAG_DATA, TAG_PARAMS, TAG_PIPELINE = "ganops.data_hash", "ganops.params_hash", "ganops.pipeline"

PARAM_VALUE_LIMIT = 500  # the historical MLflow limit; full params go to params.json too
PROBE_TIMEOUT_S = 5  # http store probe: connect + read
STORE_TIMEOUT_S = 20.0  # database stores (first sqlite use creates tables, ~2 s)
SLOW_FAILURE_S = 2.0  # a logging call that failed after this long pauses tracking...
PAUSE_S = 60.0  # ...for this long, so a dead server costs one stall, not one per step

# A dying server should cost seconds, not MLflow's default ~4 min retry loop per call.
_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # no "🏃 View run ..." lines
    "MLFLOW_DISABLE_TELEMETRY": "true",  # usage pings stall or fail on offline runners
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


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": "0.0001"}; values cut to PARAM_VALUE_LIMIT chars."""
    flat: dict[str, str] = {}
    for key, value in to_jsonable(dict(params)).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        scalar = value is None or isinstance(value, str | int | float | bool)
        text = str(value) if scalar else json.dumps(value, default=str)  # lists as JSON
        flat[name] = text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 3] + "..."
    return flat


def lineage_tags(stage: str, params: Mapping[str, Any], repo_root: Path,
                 data_meta: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The ganops.* tags every stage run carries (see module `ganops.lineage`)."""
    tags = {
        TAG_STAGE: stage,
        TAG_COMMIT: git_commit(repo_root),
        TAG_DIRTY: git_dirty(repo_root),
        TAG_PARAMS: params_hash(params),
        TAG_PIPELINE: pipeline_key(repo_root),
    }
    if data_meta and data_meta.get("content_hash"):
        tags[TAG_DATA] = str(data_meta["content_hash"])
    return tags


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) float in [-1, 1] or uint8 -> (H', W', 3) uint8 grid, `nrow` images a row."""
    import torch
    from torchvision.utils import make_grid

    x = images.detach().cpu()
    if x.ndim == 3:
        x = x.unsqueeze(0)  # one image (C, H, W)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(f"images must be (N, C, H, W) with C 1 or 3, got {tuple(images.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255
    elif x.is_floating_point():
        x = (x.float().clamp(-1, 1) + 1) / 2
    else:
        raise ValueError(f"images must be float in [-1, 1] or uint8, got {x.dtype}")
    grid = make_grid(x, nrow=nrow, padding=padding)  # (3, H', W') in [0, 1]
    return grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H', W', 3)


class StageRun:
    """The MLflow run of one stage. Logging methods never raise on tracking failures."""

    def __init__(self, run_id: str, tracking_uri: str, experiment_id: str, tags: dict[str, str]):
        self._run_id = run_id
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.tags = tags  # the ganops.* lineage tags
        self._client = _client(tracking_uri)
        self._failed = self._skipped = 0
        self._paused_until = 0.0

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def pipeline_key(self) -> str:
        return self.tags[TAG_PIPELINE]

    def _safely(self, what: str, call: Callable[[], Any]) -> bool:
        """Run one MLflow call; on failure warn (first time only) and carry on."""
        if time.monotonic() < self._paused_until:
            self._skipped += 1
            return False
        start = time.monotonic()
        try:
            call()
            return True
        except Exception as e:
            self._failed += 1
            if time.monotonic() - start > SLOW_FAILURE_S:
                self._paused_until = time.monotonic() + PAUSE_S
            if self._failed == 1:
                warnings.warn(f"MLflow {what} failed for run {self.run_id} ({_reason(e)}); "
                              "the stage continues, later tracking failures are only counted",
                              TrackingWarning, stacklevel=3)
            return False

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Scalars (floats, ints or 0-d tensors) at `step` (MLflow uses 0 when None)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self._safely("log_metrics", lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_image_grid(self, images: torch.Tensor, key: str, step: int | None = None, nrow: int = 8) -> None:
        """A grid of (N, C, H, W) images as an MLflow image under `key` (a PNG per call)."""
        grid = image_grid(images, nrow=nrow)
        self._safely("log_image", lambda: self._client.log_image(
            self.run_id, grid, key=key, step=step, synchronous=True))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._safely("log_artifact", lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def log_dict(self, d: Mapping[str, Any], filename: str) -> None:
        """`d` as a JSON (or .yaml) artifact; dataclasses and Paths are converted."""
        self._safely("log_dict", lambda: self._client.log_dict(self.run_id, to_jsonable(dict(d)), filename))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        self._safely("set_tags", lambda: self._client.log_batch(self.run_id, tags=batch))

    def log_table(self, df: pd.DataFrame, filename: str) -> None:
        """A DataFrame as a CSV artifact (no index column)."""
        text = df.to_csv(index=False)
        self._safely("log_table", lambda: self._client.log_text(self.run_id, text, filename))

    def _end(self, status: str) -> None:
        mlflow = _mlflow()
        active = mlflow.active_run()

        def end() -> None:
            if active is None or active.info.run_id != self.run_id:
                self._client.set_terminated(self.run_id, status=status)
                return
            try:
                mlflow.end_run(status=status)
            finally:  # end_run skips stopping the system-metrics thread if the store fails
                from mlflow.tracking import fluent

                monitors = getattr(fluent, "run_id_to_system_metrics_monitor", {})
                if (monitor := monitors.pop(self.run_id, None)) is not None:
                    monitor.finish()

        self._paused_until = 0.0  # always try to close the run
        self._safely("end_run", end)
        if self._failed or self._skipped:
            warnings.warn(f"MLflow run {self.run_id}: {self._failed} tracking call(s) failed and "
                          f"{self._skipped} were skipped; its record is incomplete", TrackingWarning,
                          stacklevel=4)


@contextlib.contextmanager
def stage_run(stage: str, experiment: str, params: Mapping[str, Any], repo_root: Path,
              data_meta: Mapping[str, Any] | None = None, system_metrics: bool = True,
              run_name: str | None = None) -> Iterator[StageRun]:
    """One MLflow run for one stage; FAILED if the block raises (the error propagates).

    Checks the store first and raises `TrackingError` before any work if it is
    unusable. Tags the run with `lineage_tags`, logs `params` flattened (and in
    full as params.json) and `data_meta` as data_meta.json.
    """
    root = Path(repo_root).resolve()
    uri = resolve_tracking_uri(root)
    check_store(uri)
    mlflow = _mlflow()
    tags = lineage_tags(stage, params, root, data_meta)
    try:
        experiment_id = get_or_create_experiment(experiment, root, tracking_uri=uri)
        mlflow.set_tracking_uri(uri)
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name or stage, tags=tags,
                                  log_system_metrics=system_metrics)
    except TrackingError:
        raise
    except Exception as e:
        raise TrackingError(f"could not start an MLflow run for {stage!r} in {uri}: {_reason(e)}") from e

    run = StageRun(active.info.run_id, uri, experiment_id, tags)
    try:
        from mlflow.entities import Param

        flat = [Param(k, v) for k, v in flatten_params(params).items()]
        if flat:
            run._client.log_batch(run.run_id, params=flat)
        run._client.log_dict(run.run_id, to_jsonable(dict(params)), "params.json")
        if data_meta:
            run._client.log_dict(run.run_id, to_jsonable(dict(data_meta)), "data_meta.json")
    except Exception as e:
        run._end("FAILED")
        raise TrackingError(f"could not log params of {stage!r} to {uri}: {_reason(e)}") from e

    status = "FINISHED"
    try:
        yield run
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        run._end(status)


def find_pipeline_runs(pipeline_key: str, experiment: str,
                       tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Runs tagged with `pipeline_key` in `experiment`, oldest first.

    Each: run_id, stage, status, run_name, start_time (ms). The store defaults to
    `resolve_tracking_uri(repo_root())`.
    """
    if "'" in pipeline_key:
        raise ValueError(f"pipeline key must not contain quotes: {pipeline_key!r}")
    uri = tracking_uri or resolve_tracking_uri(repo_root())
    try:
        client = _client(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        query = f"tags.`{TAG_PIPELINE}` = '{pipeline_key}'"
        runs = client.search_runs([exp.experiment_id], filter_string=query,
                                  order_by=["attributes.start_time ASC"], max_results=10_000)
    except Exception as e:
        raise TrackingError(f"MLflow tracking store {uri} is unreachable: {_reason(e)}") from e
    return [{"run_id": r.info.run_id, "stage": r.data.tags.get(TAG_STAGE), "status": r.info.status,
             "run_name": r.info.run_name, "start_time": r.info.start_time} for r in runs]
