"""Generator versions in the MLflow model registry: register a shipped generator, load one back.

    with stage_run("register", cfg.experiment, params, repo_root()) as run:
        v = register_generator(run, Path("models/generator.pt"), "ganops-generator", {"fid": 21.4})
    G, config = load_registered_generator("models:/ganops-generator@champion")

A version is a pyfunc "model from code" (`generator_model.py` plus the `ganops` package as code and
the checkpoint as artifact), so it serves with `mlflow models serve` and loads without pickle. Its
tags carry the run's lineage (git commit, params hash, pipeline, data hash), the run id and the
metrics, so a version can be traced to the commit and data that made it.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

import ganops
from ganops.errors import GanopsError
from ganops.provenance import repo_root
from ganops.tracking.promotion import METRIC_TAG_PREFIX, TAG_RUN_ID
from ganops.tracking.runs import StageRun
from ganops.tracking.store import TrackingError, _client, _mlflow, _reason, check_store_exists, resolve_tracking_uri

if TYPE_CHECKING:
    import torch

ARTIFACT = "generator"  # the logged model's name and its checkpoint's artifact key
MODEL_CODE = Path(__file__).with_name("generator_model.py")  # run by MLflow at load time; never import it
# What loading the model imports (ganops.models, ganops.checkpoint, the PNG encoding). Pinned to this
# environment, and explicit so MLflow does not load the model once more just to infer them.
REQUIREMENTS = ("torch", "numpy", "pandas", "pillow", "pyyaml")
_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/@]+))/?")


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    model_uri: str  # models:/<name>/<version>
    run_id: str


def _pip_requirements() -> list[str]:
    """`dist==version` for REQUIREMENTS; local tags (+cu130) dropped: they are not on PyPI."""
    pins = []
    for dist in REQUIREMENTS:
        try:
            pins.append(f"{dist}=={version(dist).split('+', 1)[0]}")
        except PackageNotFoundError:
            pins.append(dist)
    return pins  # MLflow adds its own pin


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([
        ColSpec("long", "seed"),
        ColSpec("long", "n"),
        # "any", not "long": a column mixing given and missing classes arrives as float with NaN,
        # which a long column would refuse before predict; generator_model checks the values.
        ColSpec(AnyType(), "class", required=False),
    ])
    outputs = Schema([ColSpec("long", "request"), ColSpec("long", "index"), ColSpec("long", "seed"),
                      ColSpec("long", "class"), ColSpec("string", "image")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _description(run_id: str, metrics: Mapping[str, float]) -> str:
    shown = ", ".join(f"{k}={float(v):.6g}" for k, v in sorted(metrics.items())) or "no metrics"
    return f"ganops generator from run {run_id}: {shown}"


MODEL_DESCRIPTION = ("Class-conditional GAN generators trained by ganops (`dvc repro`). Each version is "
                     "a pyfunc: input columns seed, n and optionally class; output one PNG (base64) per "
                     "image. Alias `champion`: the version the FID gate (`ganops promote`) last promoted; "
                     "`previous`: the one before. Tags: lineage (git commit, data and params hashes) and "
                     "the figures the gate read.")


def _ensure_registered_model(client: Any, name: str) -> None:
    """Create registered model `name` with its description unless it exists (another process may create it
    meanwhile); give an existing one without a description ours."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description=MODEL_DESCRIPTION)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
        if not client.get_registered_model(name).description:
            client.update_registered_model(name, description=MODEL_DESCRIPTION)


def register_generator(run: StageRun, generator_path: Path, model_name: str, metrics: Mapping[str, float],
                       tags: Mapping[str, str] | None = None,
                       tag_metrics: Mapping[str, float] | None = None) -> RegisteredVersion:
    """Log the generator checkpoint as a pyfunc model of `run` (with `metrics` as the logged model's
    metrics) and register it as a new version of `model_name`, linked to that logged model and tagged
    with the run's lineage, `ganops.run_id`, `metric.<key>` for `tag_metrics` (default: all `metrics`;
    evaluate passes only what the gate reads, so the versions table stays one line a version) and `tags`.

    TrackingError if the checkpoint is missing or the store refuses; unlike `StageRun.log_*`, a failed
    registration raises, since the caller asked for a version and must not report one that is not there.
    """
    generator_path = Path(generator_path)
    if not generator_path.is_file():
        raise TrackingError(f"cannot register {model_name!r}: generator checkpoint {generator_path} not found")
    mlflow = _mlflow()
    from mlflow.entities import Metric
    from mlflow.models import Model
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    client = _client(run.tracking_uri)
    try:
        # The logged model is created here, not by Model.log, so it lands in the run's experiment
        # whether or not the run is the active fluent run (Model.log would fall back to experiment 0).
        logged = client.create_logged_model(experiment_id=run.experiment_id, name=ARTIFACT,
                                            source_run_id=run.run_id, tags=dict(run.tags),
                                            model_type="ganops-generator")
        # Model.log (and the sqlite registry, when it resolves models:/m-...) find the store through
        # the global tracking URI, not a client's; stage_run set the same one.
        if mlflow.get_tracking_uri() != run.tracking_uri:
            mlflow.set_tracking_uri(run.tracking_uri)
        import pandas as pd

        # Model.log, not pyfunc.log_model: only it takes run_id (pyfunc.log_model uses the active run).
        # artifact_path is its deprecated, still positional, predecessor of name. The input example is
        # shown on the model page and served once here, so a model that cannot answer fails now.
        info = Model.log(
            artifact_path=None, name=ARTIFACT, flavor=mlflow.pyfunc, run_id=run.run_id,
            model_id=logged.model_id,
            python_model=str(MODEL_CODE),  # a path: model from code, nothing pickled
            artifacts={ARTIFACT: str(generator_path.resolve())},
            code_paths=[str(Path(ganops.__file__).parent)],  # MLflow skips __pycache__
            pip_requirements=_pip_requirements(),
            signature=_signature(),
            input_example=pd.DataFrame({"seed": [0], "n": [2]}),  # 2 images, classes drawn by the seed
        )
        # Model metrics (MLflow 3): on the logged model's page and searchable. Model.log already linked
        # the run's step-0 metrics; do not add a second copy of those.
        linked = {(m.key, m.value) for m in client.get_logged_model(logged.model_id).metrics or []}
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0, model_id=logged.model_id) for k, v in metrics.items()
                 if (k, float(v)) not in linked]
        if batch:
            client.log_batch(run.run_id, metrics=batch)

        _ensure_registered_model(client, model_name)
        shown = metrics if tag_metrics is None else tag_metrics
        version_tags = {**run.tags, TAG_RUN_ID: run.run_id,
                        **{f"{METRIC_TAG_PREFIX}{k}": str(float(v)) for k, v in shown.items()},
                        **dict(tags or {})}
        mv = client.create_model_version(model_name, source=info.model_uri, run_id=run.run_id,
                                         tags=version_tags, description=_description(run.run_id, shown),
                                         model_id=logged.model_id)
        # The link the logged model's page shows ("Registered: <name> v<n>"): mlflow.register_model sets
        # this tag; create_model_version (which takes the run id and a description) does not.
        client.set_logged_model_tags(logged.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
            [{"name": mv.name, "version": str(mv.version)}])})
    except Exception as e:
        raise TrackingError(f"could not register generator {generator_path} as {model_name!r} "
                            f"in {run.tracking_uri}: {_reason(e)}") from e
    return RegisteredVersion(name=mv.name, version=str(mv.version),
                             model_uri=f"models:/{mv.name}/{mv.version}", run_id=run.run_id)


def load_registered_generator(model_uri: str, tracking_uri: str | None = None,
                              key: bytes | None = None) -> tuple[torch.nn.Module, dict]:
    """(G in eval mode, config) of `models:/<name>/<version>` or `models:/<name>@<alias>`.

    Downloads only the checkpoint artifact (not the code or environment) and loads it with
    `load_generator`: weights only, no pickle; with `key`, only if it is signed with that key.
    TrackingError if the version or alias does not exist.
    """
    from ganops.models.generator import load_generator

    m = _MODEL_URI.fullmatch(model_uri.strip())
    if m is None:
        raise TrackingError(f"model URI {model_uri!r} is not models:/<name>/<version> or models:/<name>@<alias>")
    name, ver, alias = m["name"], m["version"], m["alias"]
    uri = tracking_uri or resolve_tracking_uri(repo_root())
    check_store_exists(uri)
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, ver)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            raise TrackingError(f"model registry at {uri} failed to resolve {model_uri}: {_reason(e)}") from e
        try:  # say which part is missing: the model, or its version/alias
            client.get_registered_model(name)
            what = f"registered model {name!r} has no " + (f"alias {alias!r}" if alias else f"version {ver}")
        except MlflowException:
            what = f"no registered model named {name!r}"
        raise TrackingError(f"{model_uri} not found: {what} in the model registry at {uri}") from None
    except Exception as e:
        raise TrackingError(f"model registry at {uri} is unreachable: {_reason(e)}") from e

    try:
        # The version's own location, so an alias moved meanwhile cannot mix two versions' files.
        location = client.get_model_version_download_uri(mv.name, mv.version).rstrip("/")
        with tempfile.TemporaryDirectory(prefix="ganops-registry-") as tmp:
            mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/MLmodel", dst_path=tmp,
                                                          tracking_uri=uri)
            conf = yaml.safe_load(Path(mlmodel).read_text()) or {}
            artifacts = conf.get("flavors", {}).get("python_function", {}).get("artifacts", {})
            if ARTIFACT not in artifacts:
                raise TrackingError(f"{model_uri} (version {mv.version}) is not a ganops generator: "
                                    f"its model has no {ARTIFACT!r} artifact")
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location}/{artifacts[ARTIFACT]['path']}", dst_path=tmp, tracking_uri=uri)
            return load_generator(path, key=key)
    except GanopsError:  # TrackingError above, CheckpointError from load_generator: already clear
        raise
    except Exception as e:
        raise TrackingError(f"could not download the generator of {model_uri} from {uri}: {_reason(e)}") from e
