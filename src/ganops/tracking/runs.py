"""One MLflow run per stage execution: lineage tags, params, metrics, images and artifacts.

After the start, logging never crashes training: a failed call warns once and the stage goes on
(a slow failure also pauses tracking for a while so a dying server cannot stall every step).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ganops.provenance import git_commit, git_dirty, params_hash, pipeline_key, repo_root, to_jsonable
from ganops.tracking.store import (
    TrackingError,
    TrackingWarning,
    _client,
    _mlflow,
    _reason,
    check_store,
    get_or_create_experiment,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

TAG_STAGE, TAG_COMMIT, TAG_DIRTY = "ganops.stage", "ganops.git_commit", "ganops.git_dirty"
TAG_DATA, TAG_PARAMS, TAG_PIPELINE = "ganops.data_hash", "ganops.params_hash", "ganops.pipeline"
# One `dvc repro` (or `dvc exp run`) = one parent run, its stage runs nested under it (MLflow's
# mlflow.parentRunId tag). The parent carries TAG_PARENT_OF = the pipeline key its stages share (plus
# "/<experiment>" in a DVC experiment), and is named after the DVC experiment (DVC_EXP_NAME, which
# `dvc exp run` sets) when there is one.
TAG_PARENT_OF, TAG_DVC_EXP, TAG_MLFLOW_PARENT = "ganops.pipeline_parent", "ganops.dvc_exp", "mlflow.parentRunId"
# Who ran it: MLflow's own tag (the UI's "User" column). GANOPS_USER names a CI job or a shared account
# (gpu.yml sets ci:<actor>); otherwise the login name, as MLflow would take it.
TAG_USER, USER_ENV = "mlflow.user", "GANOPS_USER"


def run_user() -> str:
    """GANOPS_USER if set, else the login name (getpass), else "unknown"."""
    if user := os.environ.get(USER_ENV, "").strip():
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container uid with no passwd entry and no LOGNAME/USER
        return "unknown"

SLOW_FAILURE_S = 2.0  # a logging call that failed after this long pauses tracking...
PAUSE_S = 60.0  # ...for this long, so a dead server costs one stall, not one per step
PARAM_VALUE_LIMIT = 500  # the historical MLflow limit; full params go to params.json too


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
                 data_meta: Mapping[str, Any] | None = None, params_file: Path | None = None) -> dict[str, str]:
    """The ganops.* tags every stage run carries (see module `ganops.provenance`); the pipeline key hashes
    `params_file`, the params file the stage read (default <repo_root>/params.yaml)."""
    tags = {
        TAG_STAGE: stage,
        TAG_COMMIT: git_commit(repo_root),
        TAG_DIRTY: git_dirty(repo_root),
        TAG_PARAMS: params_hash(params),
        TAG_PIPELINE: pipeline_key(repo_root, repo_root / "params.yaml" if params_file is None else params_file),
        TAG_USER: run_user(),
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
            with _signals_deferred():
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
        with _signals_deferred():
            self._end_now(status)

    def _end_now(self, status: str) -> None:
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
              run_name: str | None = None, params_file: Path | None = None) -> Iterator[StageRun]:
    """One MLflow run for one stage; FAILED if the block raises, KILLED on KeyboardInterrupt (Ctrl-C, and
    SIGTERM as pipelines.common.run turns it into one); the error propagates.

    Checks the store first and raises `TrackingError` before any work if it is
    unusable. Tags the run with `lineage_tags`, logs `params` flattened (and in
    full as params.json) and `data_meta` as data_meta.json. A stage passes the --params
    file it read as `params_file`, so the pipeline key follows that file.
    """
    root = Path(repo_root).resolve()
    uri = resolve_tracking_uri(root)
    check_store(uri)
    mlflow = _mlflow()
    tags = lineage_tags(stage, params, root, data_meta, params_file)
    try:
        with _signals_deferred():
            experiment_id = get_or_create_experiment(experiment, root, tracking_uri=uri)
            nesting = _nest_under_pipeline(_client(uri), experiment_id, tags)
            mlflow.set_tracking_uri(uri)
            active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name or stage,
                                      tags=tags | nesting, log_system_metrics=system_metrics)
    except TrackingError:
        raise
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (pipelines.common) while starting: end what started
        if mlflow.active_run() is not None:
            mlflow.end_run(status="KILLED")
        raise
    except Exception as e:
        raise TrackingError(f"could not start an MLflow run for {stage!r} in {uri}: {_reason(e)}") from e

    run = StageRun(active.info.run_id, uri, experiment_id, tags)
    parent_id = active.data.tags.get(TAG_MLFLOW_PARENT)
    status = "FINISHED"
    try:  # from here on every way out ends the run, also a signal while logging the params
        _log_inputs(run, stage, params, data_meta)
        yield run
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        run._end(status)  # a signal meanwhile is raised after it (_signals_deferred)
        if parent_id:  # the parent's status and end time follow its latest stage
            run._safely("end parent run", lambda: run._client.set_terminated(parent_id, status=status))


def _nest_under_pipeline(client: Any, experiment_id: str, tags: Mapping[str, str]) -> dict[str, str]:
    """Tags that nest a stage run under its pipeline's parent run, found by pipeline key or created.

    The parent is a container: created FINISHED (never left RUNNING by a stage that dies), and each stage's
    end sets its status and end time again. The stage runs keep their own lineage tags; `ganops.pipeline`
    is not on the parent, so `find_pipeline_runs` lists stages only.
    """
    key = tags[TAG_PIPELINE]
    exp_name = os.environ.get("DVC_EXP_NAME", "").strip()
    # the pipeline key (code + the params file), the user and the experiment's name: two people's `dvc repro`
    # of one commit are two parents, and so are two experiments with equal params
    parent_of = "/".join(re.sub(r"[^A-Za-z0-9._@:-]", "_", part) for part in (key, tags[TAG_USER], exp_name) if part)
    found = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PARENT_OF}` = '{parent_of}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        parent_id = found[0].info.run_id
    else:
        parent_tags = {TAG_PARENT_OF: parent_of, TAG_COMMIT: tags[TAG_COMMIT], TAG_DIRTY: tags[TAG_DIRTY],
                       TAG_USER: tags[TAG_USER],
                       **({TAG_DVC_EXP: exp_name} if exp_name else {})}
        parent = client.create_run(experiment_id, run_name=exp_name or f"pipeline {key[:8]}", tags=parent_tags)
        parent_id = parent.info.run_id
        client.set_terminated(parent_id, status="FINISHED")
    return {TAG_MLFLOW_PARENT: parent_id, **({TAG_DVC_EXP: exp_name} if exp_name else {})}


def _log_inputs(run: StageRun, stage: str, params: Mapping[str, Any], data_meta: Mapping[str, Any] | None) -> None:
    """`params` flattened and as params.json, `data_meta` as data_meta.json; TrackingError if the store fails."""
    from mlflow.entities import Param

    try:
        with _signals_deferred():
            flat = [Param(k, v) for k, v in flatten_params(params).items()]
            if flat:
                run._client.log_batch(run.run_id, params=flat)
            run._client.log_dict(run.run_id, to_jsonable(dict(params)), "params.json")
            if data_meta:
                run._client.log_dict(run.run_id, to_jsonable(dict(data_meta)), "data_meta.json")
                if data_meta.get("content_hash"):
                    run._client.log_inputs(run.run_id, datasets=[_dataset_input(data_meta, stage)])
    except Exception as e:
        raise TrackingError(f"could not log params of {stage!r} to {run.tracking_uri}: {_reason(e)}") from e


def _dataset_input(data_meta: Mapping[str, Any], stage: str) -> Any:
    """The prepared data as an MLflow dataset input (the run's "Datasets used"): named after its source,
    digest = its content hash, so two runs on the same data show the same digest; context = the stage."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both ways are the local path
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(data_meta.get("path") or data_meta.get("source") or "prepared"))
    counts = data_meta.get("counts") or {}
    name = f"{data_meta.get('source', 'data')} ({'/'.join(f'{k} {v}' for k, v in counts.items())})" if counts \
        else str(data_meta.get("source", "data"))
    ds = MetaDataset(source, name=name, digest=str(data_meta["content_hash"]))
    return DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, stage)])


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
