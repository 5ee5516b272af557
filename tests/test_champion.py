"""Using the champion: `ganops sample`, `ganops lineage` and `mlflow models serve` against a real registry,
with pickle deserialisation disallowed throughout."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ganops.models.generator import load_generator
from ganops.models.seeded_samples import sample_images
from ganops.tracking import stage_run
from ganops.tracking.model_registry import register_generator
from tests.conftest import git
from tests.serving import ModelServer, request
from tests.test_registry import make_generator

BIN = Path(sys.executable).parent
METRICS = {"fid10k": 30.0, "kid10k": 0.02, "kid10k_std": 0.001, "floor/fid10k": 2.5,
           "judge/normalized_entropy": 0.97, "judge/min_share_ratio": 0.8}


@pytest.fixture(scope="module")
def champ(tmp_path_factory: pytest.TempPathFactory):
    """A git repo whose registry holds one generator version, promoted to champion by `ganops promote`."""
    root = tmp_path_factory.mktemp("champ")
    (root / "params.yaml").write_text(yaml.safe_dump({"tracking": {"experiment": "t", "system_metrics": False},
                                                      "promote": {"model_name": "gen"}}))
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for k, v in env.items():
            mp.setenv(k, v)
        mp.setattr(sys, "path", list(sys.path))
        path = make_generator(root / "generator.pt", seed=3)
        with stage_run("evaluate", "t", {"seed": 1}, root, data_meta={"content_hash": "abc123"},
                       system_metrics=False) as run:
            version = register_generator(run, path, "gen", METRICS)
        res = ganops(root, "promote", "--params", "params.yaml", "--version", version.version, "--out", "p.json")
        assert res.returncode == 0, res.stderr
        yield root, path, version


def ganops(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_sample_refuses_an_unsigned_registered_generator_when_a_key_is_set(champ) -> None:
    root, _, _ = champ
    env = {**os.environ, "GANOPS_CHECKPOINT_KEY": "k" * 32}
    res = subprocess.run([sys.executable, "-m", "pipelines.cli", "sample", "--model", "models:/gen@champion",
                          "-n", "2", "--out", "signed.png"], cwd=root, capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 2, res.stderr
    assert "not signed" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (root / "signed.png").exists()


def test_sample_draws_the_champions_images(champ) -> None:
    root, path, _ = champ
    res = ganops(root, "sample", "--model", "models:/gen@champion", "-n", "6", "--seed", "4", "--out", "grid.png",
                 "--individual", "pngs")
    assert res.returncode == 0, res.stderr
    G, config = load_generator(path)
    want, _ = sample_images(G, config, 6, seed=4)  # (6, 1, 28, 28)
    got = np.stack([png((root / f"pngs/{i:04d}.png").read_bytes()) for i in range(6)])
    assert np.array_equal(got, want[:, 0].numpy())
    assert Image.open(root / "grid.png").size == (6 * 30 + 2, 30 + 2)  # 8 a row; 6 fit in one
    inter = ganops(root, "sample", "--model", "models:/gen/1", "-n", "5", "--interpolate", "--out", "i.png")
    assert inter.returncode == 0, inter.stderr
    bad = ganops(root, "sample", "--model", "models:/gen@nope", "--out", "x.png")
    assert bad.returncode == 2 and "has no alias 'nope'" in bad.stderr and not (root / "x.png").exists()


def test_lineage_answers_commit_data_params_and_metrics_in_one_screen(champ) -> None:
    root, _, version = champ
    res = ganops(root, "lineage", "models:/gen@champion")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert "gen v1  @champion" in out and commit.strip() in out and "abc123" in out
    assert "fid10k 30.000" in out and "real-data floor 2.500, ×12.00" in out and "gate      promoted" in out
    assert len(out.splitlines()) <= 24
    full = json.loads(ganops(root, "lineage", "models:/gen@champion", "--json").stdout)
    assert full["evaluate_run_id"] == version.run_id and full["generator"]["model"]["latent_dim"] == 8


def _post(url: str, body: dict) -> tuple[int, dict]:
    status, data = request(url, "/invocations", json.dumps(body).encode(), timeout=60)
    return status, json.loads(data or b"{}")


def test_mlflow_models_serve_answers_with_png_images(champ) -> None:
    root, path, _ = champ
    with ModelServer("models:/gen@champion", root) as server:
        status, body = _post(server.url, {"dataframe_records": [{"seed": 9, "n": 3}, {"seed": 2, "n": 1}]})
        assert status == 200, body
        rows = body["predictions"]
        assert [(r["request"], r["index"], r["seed"], r["class"]) for r in rows] == [
            (0, 0, 9, -1), (0, 1, 9, -1), (0, 2, 9, -1), (1, 0, 2, -1)]
        G, config = load_generator(path)
        want, _ = sample_images(G, config, 3, seed=9)
        got = torch.from_numpy(np.stack([png(base64.b64decode(r["image"])) for r in rows[:3]]))
        assert torch.equal(got, want[:, 0])
        status, body = _post(server.url, {"dataframe_records": [{"seed": 1, "n": 5000}]})
        assert status == 400 and "row 0: n must be in 1..1024, got 5000" in body["message"]
