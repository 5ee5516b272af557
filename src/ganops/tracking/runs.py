"""One MLflow run per stage execution: lineage tags, params, metrics, images and artifacts.

After the start, logging never crashes training: a failed call warns once and the stage goes on. What the
store does not take because it does not answer waits in the run's outbox (`ganops.tracking.outbox`) and is
sent late, at the latest by the next ganops command that reaches the store; only then does the run end.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganops.provenance import git_commit, git_dirty, params_hash, pipeline_key, to_jsonable
from ganops.tracking.calls import TAG_INCOMPLETE, _signals_deferred, is_outage, release_fluent_run, send, what
from ganops.tracking.outbox import Outbox, redact, retry_seconds, send_kept
from ganops.tracking.store import (
    TrackingError,
    TrackingWarning,
    _client,
    _mlflow,
    _reason,
    check_store,
    get_or_create_experiment,
    is_full,
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

PAUSE_S = 60.0  # after the store did not answer, calls go straight to the outbox this long: one stall, not one a step
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


class StageRun:
    """The MLflow run of one stage. Logging methods never raise on tracking failures; a call the store does
    not answer waits in the run's outbox, in order, and a call it refuses marks the run incomplete."""

    def __init__(self, run_id: str, tracking_uri: str, experiment_id: str, tags: dict[str, str],
                 parent_id: str | None = None):
        self._run_id = run_id
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.tags = tags  # the ganops.* lineage tags
        self.parent_id = parent_id  # the pipeline's parent run: its status follows this run's end
        self._client = _client(tracking_uri)
        self._outbox: Outbox | None = None  # created by the first call the store does not answer
        self._late = 0  # calls sent from the outbox
        self._rejected: list[str] = []  # calls dropped (refused, file gone): the run is tagged incomplete
        self._paused_until = 0.0
        self._warned = False
        self._why = "it does not answer"  # why calls wait in the outbox: the last failure's reason

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def pipeline_key(self) -> str:
        return self.tags[TAG_PIPELINE]

    def _log(self, call: str, entry: dict[str, Any]) -> None:
        """Send one call (an entry, see `ganops.tracking.calls`) now, or keep it in the outbox."""
        entry["t"] = int(time.time() * 1000)
        drained = self._drain()  # nothing overtakes what waits
        if entry["kind"] == "end":  # the calls dropped so far, with any the drain just dropped: tagged with the end
            entry["rejected"] = list(self._rejected)
        if not drained:
            self._keep(call, entry, None)
            return
        try:
            with _signals_deferred():
                send(self._client, self.run_id, entry)
        except Exception as e:
            if not is_outage(e):
                self._drop(call, entry, e)
                return
            self._paused_until = time.monotonic() + PAUSE_S
            self._why = _reason(e)
            self._keep(call, entry, e)

    def _keep(self, call: str, entry: dict[str, Any], error: Exception | None) -> None:
        try:
            if self._outbox is None:
                self._outbox = Outbox.create(self.run_id, self.tracking_uri, self.parent_id)
            self._outbox.add(entry)
        except Exception as e:  # its file is gone, the disk is full: this call is lost
            self._drop(call, entry, e)
            return
        if error is not None:
            self._warn_once(f"MLflow {call} failed for run {self.run_id} ({_reason(error)}); the stage continues, "
                            f"its tracking calls wait in {self._outbox.path} until the store answers")

    def _drop(self, call: str, entry: dict[str, Any], error: Exception) -> None:
        self._rejected.append(f"{what(entry)}: {_reason(error)}")
        self._warn_once(f"MLflow {call} failed for run {self.run_id} ({_reason(error)}); the stage continues, "
                        "the run will be tagged incomplete")

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"{message}; later tracking failures are only counted", TrackingWarning, stacklevel=5)

    def _drain(self) -> bool:
        """Send the outbox unless paused; True once it is empty (and removed)."""
        if self._outbox is None:
            return True
        if time.monotonic() < self._paused_until:
            return False
        res = self._outbox.drain(self._client, self.tracking_uri)
        self._late += res.sent
        if not res.done:
            self._paused_until = time.monotonic() + PAUSE_S
            return False
        self._outbox = None
        self._rejected = res.rejected if res.ended else self._rejected + res.rejected
        return True

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Scalars (floats, ints or 0-d tensors) at `step` (MLflow uses 0 when None)."""
        now = int(time.time() * 1000)
        self._log("log_metrics", {"kind": "metrics", "metrics": [[k, float(v), now, step or 0]
                                                                  for k, v in metrics.items()]})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """More params, flattened (`flatten_params`); MLflow refuses a new value for a logged key."""
        self._log("log_params", {"kind": "params", "params": flatten_params(params)})

    def log_image_grid(self, images: torch.Tensor, key: str, step: int | None = None, nrow: int = 8) -> None:
        """A grid of (N, C, H, W) images as an MLflow image under `key` (a PNG per call)."""
        self._log("log_image", {"kind": "image", "array": image_grid(images, nrow=nrow), "key": key, "step": step})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file or directory; copied into the outbox if the store does not answer (the stage may overwrite it)."""
        self._log("log_artifact", {"kind": "artifact", "path": str(path), "artifact_path": artifact_path})

    def log_dict(self, d: Mapping[str, Any], filename: str) -> None:
        """`d` as a JSON (or .yaml) artifact; dataclasses and Paths are converted."""
        self._log("log_dict", {"kind": "dict", "dict": to_jsonable(dict(d)), "file": filename})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._log("set_tags", {"kind": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_table(self, df: pd.DataFrame, filename: str) -> None:
        """A DataFrame as a CSV artifact (no index column)."""
        self._log("log_table", {"kind": "text", "text": df.to_csv(index=False), "file": filename})

    def _end(self, status: str) -> None:
        """End the run and its parent with `status` at this time: after its kept calls, retried with back-off
        for retry_seconds(); what the store still does not take waits for the next ganops command."""
        with _signals_deferred():
            release_fluent_run(self.run_id)  # locally; the store hears of the end below, after the kept calls
        self._paused_until = 0.0  # always try to close the run
        end = {"kind": "end", "status": status, "end_time": int(time.time() * 1000), "parent_id": self.parent_id}
        try:
            self._log("end_run", end)
            # Ctrl-C or SIGTERM asked to stop: no waiting for the store then, the outbox keeps what is left; nor
            # for a full disk, which frees no space by itself within the minutes a network blip lasts
            wait = retry_seconds() if status != "KILLED" and not is_full(self._why) else 0.0
            deadline, delay = time.monotonic() + wait, 1.0
            while self._outbox is not None and time.monotonic() + delay <= deadline:
                time.sleep(delay)  # Ctrl-C here stops waiting too
                delay, self._paused_until = min(2 * delay, 15.0), 0.0
                self._drain()
        finally:
            self._report()

    def _report(self) -> None:
        if self._outbox is not None:
            print(f"tracking: the store {redact(self.tracking_uri)} did not take the run's calls ({self._why}): run "
                  f"{self.run_id} stays RUNNING with {self._outbox.pending()} call(s) kept in {self._outbox.path}; "
                  "the next ganops command that reaches the store sends them (or `ganops flush`)",
                  file=sys.stderr, flush=True)
            self._outbox.close()  # the next command may send it now
        elif self._late:
            print(f"tracking: the store was unreachable for part of the run; {self._late} call(s) sent late to "
                  f"run {self.run_id}", file=sys.stderr, flush=True)
        if self._rejected:
            warnings.warn(f"MLflow run {self.run_id}: {len(self._rejected)} tracking call(s) failed and were not "
                          f"recorded ({self._rejected[0]}); its record is incomplete (tag {TAG_INCOMPLETE})",
                          TrackingWarning, stacklevel=4)


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
    send_kept(uri, answers=True)  # what earlier runs kept while the store did not answer
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

    run = StageRun(active.info.run_id, uri, experiment_id, tags, active.data.tags.get(TAG_MLFLOW_PARENT))
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
        run._end(status)  # and its parent's; a signal meanwhile is raised after each call (_signals_deferred)


def _nest_under_pipeline(client: Any, experiment_id: str, tags: Mapping[str, str]) -> dict[str, str]:
    """Tags that nest a stage run under its pipeline's parent run, found by pipeline key or created.

    The parent is a container: created FINISHED (never left RUNNING by a stage that dies), and each stage's
    end sets its status and end time again. The stage runs keep their own lineage tags; `ganops.pipeline`
    is not on the parent, so a search by that tag finds the stages only.
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
