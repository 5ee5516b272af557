"""ganops.tracking.model_registry and the pyfunc generator model, against a real sqlite store and git repo
(no mocks)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from PIL import Image

import ganops
from ganops.models.generator import load_generator
from ganops.models.seeded_samples import sample_images
from ganops.tracking import TrackingError, resolve_tracking_uri, stage_run
from ganops.tracking.model_registry import RegisteredVersion, load_registered_generator, register_generator
from tests.conftest import git
from tests.serving import save_generator

LINEAGE = ("ganops.stage", "ganops.git_commit", "ganops.git_dirty", "ganops.params_hash", "ganops.pipeline",
           "ganops.data_hash")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> Path:
    """A committed git repo as cwd, with an MLflow sqlite store beside it."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "params.yaml").write_text("seed: 42\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    monkeypatch.delenv("GANOPS_PIPELINE_ID", raising=False)
    # Loading a pyfunc model prepends its code dir to sys.path; keep that out of later tests.
    monkeypatch.setattr(sys, "path", list(sys.path))
    return root


def make_generator(path: Path, conditional: bool = False, seed: int = 0) -> Path:
    """A tiny random generator saved like `ganops train` saves one (28x28, 1 channel, 10 classes)."""
    return save_generator(path, {"latent_dim": 8, "g_width": 8, "d_width": 8, "latent_dist": "normal",
                                 "conditional": conditional, "spectral_norm": False}, seed)


def register(repo: Path, generator: Path, name: str = "gen", **kw) -> RegisteredVersion:
    with stage_run("register", "test", {"seed": 42}, repo, data_meta={"content_hash": "abc123"},
                   system_metrics=False) as run:
        return register_generator(run, generator, name, {"fid": 21.5, "kid": 0.0125}, **kw)


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))  # (H, W) gray or (H, W, 3)


def as_images(out: pd.DataFrame) -> torch.Tensor:
    """The output's PNGs as uint8 (n, 1, H, W), to compare with sample_images."""
    return torch.from_numpy(np.stack([decode(s) for s in out["image"]]))[:, None]


def client() -> MlflowClient:
    return MlflowClient(resolve_tracking_uri(Path.cwd()))


# Run in a fresh interpreter: pickle disallowed, ganops not imported until MLflow loads the model.
PREDICT = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.DataFrame({"seed": [7], "n": [5]}))
import ganops
print(json.dumps({"rows": out.to_dict("list"), "ganops": ganops.__file__}))
"""


def test_register_twice_tags_versions_and_serves_pickle_free(repo: Path, tmp_path: Path) -> None:
    path = make_generator(repo / "generator.pt")
    v1 = register(repo, path, tags={"note": "first"})
    with stage_run("other", "test", {"seed": 42}, repo, system_metrics=False) as run2:
        pass
    v2 = register_generator(run2, path, "gen", {"fid": 30.0})  # the run need not be active any more
    assert (v1.version, v2.version) == ("1", "2")
    logged2 = client().get_logged_model(client().get_model_version("gen", "2").source.removeprefix("models:/"))
    assert (logged2.experiment_id, logged2.source_run_id) == (run2.experiment_id, run2.run_id) != ("0", None)
    assert [o.model_id for o in client().get_run(run2.run_id).outputs.model_outputs] == [logged2.model_id]
    assert v1.model_uri == "models:/gen/1" and v1.name == "gen"

    mv = client().get_model_version("gen", "1")
    run = client().get_run(v1.run_id)
    assert mv.run_id == v1.run_id
    for tag in LINEAGE:
        assert mv.tags[tag] == run.data.tags[tag]
    assert mv.tags["ganops.data_hash"] == "abc123"
    assert mv.tags["ganops.stage"] == "register"
    assert mv.tags["ganops.run_id"] == v1.run_id
    assert (mv.tags["metric.fid"], mv.tags["metric.kid"], mv.tags["note"]) == ("21.5", "0.0125", "first")
    assert "note" not in client().get_model_version("gen", "2").tags
    assert mv.description == f"ganops generator from run {v1.run_id}: fid=21.5, kid=0.0125"
    logged = client().get_logged_model(mv.source.removeprefix("models:/"))
    assert {m.key: m.value for m in logged.metrics} == {"fid": 21.5, "kid": 0.0125}
    # linked both ways: the logged model's page names its version, the registered model says what it is
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "gen", "version": "1"}]
    assert "pyfunc" in client().get_registered_model("gen").description
    assert logged.experiment_id == run.info.experiment_id and logged.source_run_id == v1.run_id

    local = Path(mlflow.artifacts.download_artifacts(v1.model_uri, dst_path=str(tmp_path / "model")))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".pkl", ".pickle")) or "__pycache__" in f]
    assert {"MLmodel", "artifacts/generator.pt", "code/ganops/models/generator.py",
            "code/ganops/models/seeded_samples.py", "input_example.json"} <= files
    pyfunc = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert "model_code_path" in pyfunc and "python_model" not in pyfunc  # code, not a cloudpickle file
    requirements = (local / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} >= {"mlflow", "torch", "numpy", "pandas", "pillow"}

    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", PREDICT, v1.model_uri], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # ganops came from the model's code dir, not from this checkout
    assert Path(result["ganops"]).resolve().parent.parent.name == "code"
    assert Path(ganops.__file__).resolve().parent != Path(result["ganops"]).resolve().parent
    out = pd.DataFrame(result["rows"])
    assert list(out.columns) == ["request", "index", "seed", "class", "image"]
    assert out[["request", "index", "seed", "class"]].values.tolist() == [[0, i, 7, -1] for i in range(5)]

    G, config = load_generator(path)
    expected, labels = sample_images(G, config, 5, 7)  # uint8 (5, 1, 28, 28)
    assert labels is None
    assert torch.equal(as_images(out), expected)
    assert not torch.equal(expected[0], expected[1])

    G2, config2 = load_registered_generator(v1.model_uri)
    assert config2 == config
    state, state2 = G.state_dict(), G2.state_dict()
    assert state.keys() == state2.keys() and all(torch.equal(state[k], state2[k]) for k in state)


def test_conditional_generator_honours_the_class(repo: Path) -> None:
    path = make_generator(repo / "generator.pt", conditional=True, seed=1)
    v = register(repo, path)
    model = mlflow.pyfunc.load_model(v.model_uri)
    out = model.predict(pd.DataFrame({"seed": [11, 12, 13], "n": [4, 3, 2], "class": [3, None, -1]}))
    assert out["request"].tolist() == [0] * 4 + [1] * 3 + [2] * 2

    G, config = load_generator(path)
    fixed, labels = sample_images(G, config, 4, 11, class_id=3)
    assert labels.tolist() == [3] * 4
    assert out["class"][:4].tolist() == [3] * 4
    assert torch.equal(as_images(out[:4]), fixed)
    for request, seed, n in ((1, 12, 3), (2, 13, 2)):  # NaN and -1: random classes, as sample_images draws them
        rows = out[out["request"] == request]
        images, labels = sample_images(G, config, n, seed)
        assert rows["class"].tolist() == labels.tolist()
        assert torch.equal(as_images(rows), images)

    with pytest.raises(ValueError, match=r"class must be in \[0, 10\)"):
        model.predict(pd.DataFrame({"seed": [1], "n": [1], "class": [10]}))
    G2, _ = load_registered_generator("models:/gen/1")
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G2.state_dict().values(), strict=True))


def test_bad_inputs_and_unknown_models_give_clear_errors(repo: Path) -> None:
    path = make_generator(repo / "generator.pt")
    v = register(repo, path)
    model = mlflow.pyfunc.load_model(v.model_uri)
    with pytest.raises(ValueError, match=r"row 0: n must be in 1\.\.1024, got 0"):
        model.predict(pd.DataFrame({"seed": [1], "n": [0]}))
    with pytest.raises(ValueError, match=r"row 1: n must be in 1\.\.1024, got 5000"):
        model.predict(pd.DataFrame({"seed": [1, 2], "n": [1, 5000]}))
    with pytest.raises(ValueError, match="class 3 given, but this generator is unconditional"):
        model.predict(pd.DataFrame({"seed": [1], "n": [1], "class": [3]}))
    with pytest.raises(ValueError, match="class must be an integer"):
        model.predict(pd.DataFrame({"seed": [1], "n": [1], "class": [2.5]}))
    with pytest.raises(MlflowException, match="missing inputs"):  # the signature: n is required
        model.predict(pd.DataFrame({"seed": [1]}))

    with pytest.raises(TrackingError, match="models:/nope/1 not found: no registered model named 'nope'"):
        load_registered_generator("models:/nope/1")
    with pytest.raises(TrackingError, match="models:/gen/9 not found: registered model 'gen' has no version 9"):
        load_registered_generator("models:/gen/9")
    with pytest.raises(TrackingError, match="models:/gen@champion not found: registered model 'gen' has no alias"):
        load_registered_generator("models:/gen@champion")
    client().set_registered_model_alias("gen", "champion", v.version)
    assert load_registered_generator("models:/gen@champion")[1]["model"]["latent_dim"] == 8
    with pytest.raises(TrackingError, match="is not models:/<name>/<version>"):
        load_registered_generator("runs:/abc/generator")
    with pytest.raises(TrackingError, match="generator checkpoint .*missing.pt not found"):
        register(repo, repo / "missing.pt")
