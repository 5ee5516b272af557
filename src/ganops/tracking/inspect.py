"""Everything the registry knows about one generator version, gathered for `ganops lineage`.

Sources, most trustworthy first: the checkpoint inside the registered model (the exact train/model
params it was trained with, its data hash and the train run id), the version's tags (the evaluate
run's lineage: git commit, params hash, pipeline; the figures the gate read; its decision), the evaluate
run (every other metric) and the train run.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ganops.provenance import repo_root
from ganops.tracking.model_registry import _MODEL_URI, load_registered_generator
from ganops.tracking.promotion import get_version
from ganops.tracking.store import TrackingError, _client, resolve_tracking_uri


def describe(model_uri: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """{name, version, aliases, tags, metrics, evaluate_run_id, generator: checkpoint config, train_run}."""
    m = _MODEL_URI.fullmatch(model_uri.strip())
    if m is None:
        raise TrackingError(f"model URI {model_uri!r} is not models:/<name>/<version> or models:/<name>@<alias>")
    uri = tracking_uri or resolve_tracking_uri(repo_root())
    info = get_version(uri, m["name"], m["version"], m["alias"])
    if info is None:
        raise TrackingError(f"{model_uri} not found in the model registry at {uri}")
    _, config = load_registered_generator(f"models:/{info.name}/{info.version}", uri)
    client = _client(uri)
    aliases = tuple(sorted(a for a, v in (client.get_registered_model(info.name).aliases or {}).items()
                           if str(v) == info.version))
    metrics = dict(info.metrics)  # the gate's figures, from the version's tags
    if info.run_id:  # the rest (floor, coverage, ...) from the evaluate run that registered it
        with contextlib.suppress(Exception):
            metrics = {**client.get_run(info.run_id).data.metrics, **metrics}
    train_run: dict[str, Any] = {}
    if run_id := config.get("mlflow_run_id"):
        with contextlib.suppress(Exception):  # the train run may live in another store
            run = client.get_run(run_id)
            train_run = {"run_id": run_id, "tags": dict(run.data.tags), "start_time": run.info.start_time,
                         "status": run.info.status}
    return {"name": info.name, "version": info.version, "aliases": aliases, "tags": info.tags,
            "metrics": metrics, "evaluate_run_id": info.run_id, "generator": config,
            "train_run": train_run, "tracking_uri": uri}
