"""`ganops pretrain` end to end on a small real subset, tracked in a real temp MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from pipelines.cli import app
from tests.conftest import write_idx_dataset

runner = CliRunner()

PRETRAIN = {"epochs": 2, "batch_size": 32, "log_every": 2}
MODEL = {"latent_dim": 16, "g_width": 16, "d_width": 16, "conditional": False, "spectral_norm": False, "d_hidden": 0}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A prepared small dataset and an empty sqlite MLflow store, cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    write_idx_dataset(tmp_path / "idx", n_train=200, n_test=60)
    write(tmp_path, {})
    res = runner.invoke(app, ["prepare", "--params", "params.yaml", "--out", "prepared",
                              "--validation", "validation"])
    assert res.exit_code == 0, res.output
    return tmp_path


def write(root: Path, pretrain: dict, model: dict | None = None) -> None:
    params = {"seed": 3, "tracking": {"experiment": "t", "system_metrics": False},
              "data": {"source": "fashion-mnist", "path": str(root / "idx")},
              "model": {**MODEL, **(model or {})}, "pretrain": {**PRETRAIN, **pretrain}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def pretrain(root: Path, out: str = "models/ae.pt"):
    return runner.invoke(app, ["pretrain", "--params", "params.yaml", "--data", "prepared", "--model-out", out,
                               "--metrics", "metrics/pretrain.json", "--plots", "plots/pretrain.csv"])


def only_run(root: Path):
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("t")
    runs = client.search_runs([exp.experiment_id], "tags.`ganops.stage` = 'pretrain'")  # prepare made one too
    return client, runs


def test_pretrain_writes_checkpoint_metrics_plots_and_mlflow_run(workspace):
    res = pretrain(workspace)
    assert res.exit_code == 0, res.output
    ckpt = torch.load(workspace / "models/ae.pt", weights_only=True)
    assert ckpt["kind"] == "autoencoder"
    config = json.loads(ckpt["config"])
    assert config["image_size"] == 28 and config["model"]["latent_dim"] == 16
    metrics = json.loads((workspace / "metrics/pretrain_detail.json").read_text())
    assert metrics["epochs"] == 2 and 0 < metrics["test_loss"] < 1
    summary = json.loads((workspace / "metrics/pretrain.json").read_text())
    assert summary == {k: metrics[k] for k in ("test_loss", "train_flops")}
    plots = pd.read_csv(workspace / "plots/pretrain.csv")
    assert list(plots["epoch"]) == [1, 2]
    assert plots["train_loss"].iloc[1] < plots["train_loss"].iloc[0]  # it learns

    client, runs = only_run(workspace)
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED"
    assert r.data.params["pretrain.epochs"] == "2"
    meta = json.loads((workspace / "prepared/meta.json").read_text())
    assert r.data.tags["ganops.stage"] == "pretrain"
    assert r.data.tags["ganops.data_hash"] == meta["content_hash"]
    assert [m.step for m in client.get_metric_history(r.info.run_id, "epoch/test_loss")] == [
        int(plots["step"].iloc[0]), int(plots["step"].iloc[1])]
    images = [f.path for f in client.list_artifacts(r.info.run_id, "images")]
    assert any("reconstructions" in p for p in images), images
    assert any("interpolation" in p for p in images), images


def test_pretrained_weights_load_into_generator_and_discriminator(workspace):
    assert pretrain(workspace).exit_code == 0
    from ganops.checkpoint import load_checkpoint
    from ganops.config import ModelConfig
    from ganops.models.autoencoder import (
        build_autoencoder,
        load_autoencoder_into_discriminator,
        load_autoencoder_into_generator,
    )
    from ganops.models.discriminator import build_discriminator
    from ganops.models.generator import build_generator

    state, config = load_checkpoint(workspace / "models/ae.pt", kind="autoencoder")
    cfg = ModelConfig(**config["model"])
    ae = build_autoencoder(cfg, 28, 1)
    ae.load_state_dict(state["model"])
    G, D = build_generator(cfg, 28, 1), build_discriminator(cfg, 28, 1)
    assert load_autoencoder_into_generator(G, state["model"]) == []
    load_autoencoder_into_discriminator(D, state["model"])
    z = torch.randn(4, 16)
    G.eval()
    ae.eval()
    assert torch.equal(G(z), ae.decode(z))


def test_vae_mode_logs_prior_samples(workspace):
    write(workspace, {"variational": True, "epochs": 1})
    assert pretrain(workspace).exit_code == 0
    client, runs = only_run(workspace)
    images = [f.path for f in client.list_artifacts(runs[0].info.run_id, "images")]
    assert any("prior_samples" in p for p in images), images


def test_same_seed_gives_identical_weights(workspace):
    write(workspace, {"epochs": 1})
    assert pretrain(workspace, "models/a.pt").exit_code == 0
    assert pretrain(workspace, "models/b.pt").exit_code == 0
    a = torch.load(workspace / "models/a.pt", weights_only=True)["state"]["model"]
    b = torch.load(workspace / "models/b.pt", weights_only=True)["state"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bad, needle", [
    ({"epochs": -1}, "pretrain.epochs: must be >= 0"),
    ({"loss": "l1"}, "pretrain.loss: must be one of mse, bce"),
    ({"batch_size": "big"}, "pretrain.batch_size: must be an integer"),
    ({"warmup": 3}, "unknown key(s) warmup"),
])
def test_bad_params_fail_before_any_work(workspace, bad, needle):
    write(workspace, bad)
    res = pretrain(workspace)
    assert res.exit_code == 2 and needle in res.output, res.output
    assert not (workspace / "models/ae.pt").exists()
    assert only_run(workspace)[1] == []  # no pretrain run was even started


def test_unsupported_image_size_is_refused_before_training(workspace):
    meta = json.loads((workspace / "prepared/meta.json").read_text())
    meta["image_size"] = 48
    (workspace / "prepared/meta.json").write_text(json.dumps(meta))
    res = pretrain(workspace)
    assert res.exit_code == 2
    assert "meta.json" in res.output and "image_size 48 not supported" in res.output, res.output
    assert not (workspace / "models/ae.pt").exists()
