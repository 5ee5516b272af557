"""Everything the registry knows about one generator version, gathered for `ganops lineage`.

Sources, most trustworthy first: the checkpoint inside the registered model (the exact train/model
params it was trained with, its data hash and the train run id), the version's tags (the evaluate
run's lineage: git commit, params hash, pipeline; the figures the gate read; its decision), the evaluate
run (every other metric) and the train run. Runs whose record is not whole (tagged incomplete, or still
RUNNING because their store did not answer) are named in "warnings".
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from typing import Any

from ganops.provenance import repo_root
from ganops.tracking.calls import TAG_INCOMPLETE
from ganops.tracking.model_registry import _MODEL_URI, load_registered_generator
from ganops.tracking.outbox import kept_runs, send_kept
from ganops.tracking.promotion import get_version
from ganops.tracking.store import TrackingError, _client, check_store_exists, resolve_tracking_uri


def describe(model_uri: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """{name, version, aliases, tags, metrics, evaluate_run_id, generator: checkpoint config, train_run,
    evaluate_run, warnings: `record_warnings`}; first sends what this machine's outbox kept for the store."""
    m = _MODEL_URI.fullmatch(model_uri.strip())
    if m is None:
        raise TrackingError(f"model URI {model_uri!r} is not models:/<name>/<version> or models:/<name>@<alias>")
    uri = tracking_uri or resolve_tracking_uri(repo_root())
    check_store_exists(uri)  # a read must not create an empty local store
    send_kept(uri)  # runs this machine kept while the store did not answer: complete them before reading
    info = get_version(uri, m["name"], m["version"], m["alias"])
    if info is None:
        raise TrackingError(f"{model_uri} not found in the model registry at {uri}")
    _, config = load_registered_generator(f"models:/{info.name}/{info.version}", uri)
    client = _client(uri)
    aliases = tuple(sorted(a for a, v in (client.get_registered_model(info.name).aliases or {}).items()
                           if str(v) == info.version))
    metrics = dict(info.metrics)  # the gate's figures, from the version's tags
    evaluate_run: dict[str, Any] = {}
    if info.run_id:  # the rest (floor, coverage, ...) from the evaluate run that registered it
        with contextlib.suppress(Exception):
            run = client.get_run(info.run_id)
            metrics = {**run.data.metrics, **metrics}
            evaluate_run = {"run_id": info.run_id, "status": run.info.status,
                            "tags": {k: v for k, v in run.data.tags.items() if k == TAG_INCOMPLETE}}
    train_run: dict[str, Any] = {}
    if run_id := config.get("mlflow_run_id"):
        with contextlib.suppress(Exception):  # the train run may live in another store
            run = client.get_run(run_id)
            train_run = {"run_id": run_id, "tags": dict(run.data.tags), "start_time": run.info.start_time,
                         "status": run.info.status}
    return {"name": info.name, "version": info.version, "aliases": aliases, "tags": info.tags,
            "metrics": metrics, "evaluate_run_id": info.run_id, "generator": config,
            "train_run": train_run, "evaluate_run": evaluate_run, "tracking_uri": uri,
            "warnings": record_warnings({"train": train_run, "evaluate": evaluate_run},
                                        {d.name for d in kept_runs(uri)})}


def record_warnings(runs: Mapping[str, Mapping[str, Any]], kept: Collection[str] = ()) -> list[str]:
    """One line per run whose MLflow record is not whole: tagged TAG_INCOMPLETE, or still RUNNING (`kept`: the
    run ids this machine's outbox still holds, whose store did not answer)."""
    lines = []
    for name, run in runs.items():
        run_id = run.get("run_id", "?")
        if reason := run.get("tags", {}).get(TAG_INCOMPLETE):
            lines.append(f"{name} run {run_id} is incomplete: {reason}")
        elif run.get("status") == "RUNNING":
            lines.append(f"{name} run {run_id} is still RUNNING: " + (
                "its store was unreachable; `ganops flush` completes it" if run_id in kept else
                "its stage is running, or died before ending it, or kept its calls on another machine"))
    return lines
