"""MLflow tracking for ganops stages — the only package that imports mlflow.

A stage command wraps its work in one run:

    with stage_run("pretrain", cfg.experiment, params, repo_root()) as run:
        for epoch in ...:
            run.log_metrics({"loss/recon": loss}, step=epoch)
        run.log_image_grid(samples, key="samples", step=epoch)

Starting is fail-fast: an unreachable store raises `TrackingError` before any work.
After the start, logging never crashes training: a failed call warns once and the
stage goes on; what the store does not take because it does not answer waits in the
run's outbox and is sent late, by the stage's end or the next ganops command that
reaches the store (`flush_outbox`, `ganops flush`); only then does the run end.
Lineage tags (git, params, data, pipeline key) come from `ganops.provenance`; MLflow
is imported lazily, so `import ganops` stays light.

Modules: `store` (URI, reachability, experiment), `runs` (one run per stage), `calls` (one tracking call as
data, sent now or later) and `outbox` (calls kept on disk while the store does not answer), `model_registry`
(generator versions in the model registry; imported by name where used, so a stage that only logs runs
does not depend on it, for Python or for DVC) and `generator_model` (the pyfunc model code MLflow loads;
pickle-free).
"""

from ganops.provenance import repo_root
from ganops.tracking.calls import TAG_INCOMPLETE
from ganops.tracking.outbox import FlushSummary, flush_outbox, outbox_root
from ganops.tracking.runs import (
    TAG_COMMIT,
    TAG_DATA,
    TAG_DIRTY,
    TAG_PARAMS,
    TAG_PIPELINE,
    TAG_STAGE,
    StageRun,
    flatten_params,
    image_grid,
    lineage_tags,
    stage_run,
)
from ganops.tracking.store import (
    TrackingError,
    TrackingWarning,
    check_store,
    experiment_name,
    get_or_create_experiment,
    is_local_store,
    resolve_tracking_uri,
)

__all__ = [
    "TAG_INCOMPLETE", "FlushSummary", "flush_outbox", "outbox_root",
    "TAG_COMMIT", "TAG_DATA", "TAG_DIRTY", "TAG_PARAMS", "TAG_PIPELINE", "TAG_STAGE",
    "StageRun", "TrackingError", "TrackingWarning", "check_store", "experiment_name",
    "flatten_params", "get_or_create_experiment", "is_local_store", "image_grid", "lineage_tags", "repo_root",
    "resolve_tracking_uri", "stage_run",
]
