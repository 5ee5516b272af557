"""`ganops train` end to end: small real data, real MLflow store, AE initialisation, resume."""

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
# the plain DCGAN game with BCE, stated: the defaults are the default recipe (conditional, SN, hinge, ...)
MODEL = {"latent_dim": 16, "g_width": 8, "d_width": 8, "conditional": False, "spectral_norm": False, "d_hidden": 0}
TRAIN = {"epochs": 2, "batch_size": 32, "log_every": 2, "n_eval": 50, "init_from_autoencoder": True,
         "loss": "bce"}


def write(root: Path, train: dict | None = None, model: dict | None = None) -> None:
    params = {"seed": 5, "tracking": {"experiment": "t", "system_metrics": False},
              "data": {"source": "fashion-mnist", "path": str(root / "idx")},
              "model": {**MODEL, **(model or {})},
              "pretrain": {"epochs": 1, "batch_size": 32},
              "train": {**TRAIN, **(train or {})}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    write_idx_dataset(tmp_path / "idx", n_train=160, n_test=60)
    write(tmp_path)
    for args in (["prepare", "--out", "prepared", "--validation", "validation"],
                 ["pretrain", "--data", "prepared", "--model-out", "ae.pt", "--metrics", "pm.json",
                  "--plots", "pp.csv"]):
        res = runner.invoke(app, [*args, "--params", "params.yaml"])
        assert res.exit_code == 0, res.output
    return tmp_path


def train(*extra: str):
    return runner.invoke(app, ["train", "--params", "params.yaml", "--data", "prepared", "--autoencoder", "ae.pt",
                               "--model-out", "gen.pt", "--checkpoints", "ckpt", "--metrics", "train.json",
                               "--plots", "train.csv", *extra])


def test_train_writes_generator_checkpoints_metrics_and_mlflow_run(workspace):
    res = train()
    assert res.exit_code == 0, res.output
    ckpt = torch.load(workspace / "gen.pt", weights_only=True)
    assert ckpt["kind"] == "generator"
    config = json.loads(ckpt["config"])
    assert config["ema"] is True and config["image_size"] == 28 and config["num_classes"] == 10
    assert (workspace / "ckpt/last.pt").is_file() and (workspace / "ckpt/best.pt").is_file()
    summary = json.loads((workspace / "train.json").read_text())  # the DVC metrics: what `dvc exp show` lists
    metrics = json.loads((workspace / "train_detail.json").read_text())  # the full record beside it
    assert set(summary) == {"best_score", "total_flops"} and summary == {k: metrics[k] for k in summary}
    assert metrics["steps"] == 2 * (160 // 32) and metrics["img_per_s"] > 0
    for k in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert k in metrics
    curves = pd.read_csv(workspace / "train.csv")
    assert {"step", "epoch", "d_loss", "g_loss", "d_real", "d_fake"} <= set(curves.columns)

    client = MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    exp = client.get_experiment_by_name("t")
    found = client.search_runs([exp.experiment_id])
    parents = [r for r in found if "ganops.stage" not in r.data.tags]  # the pipeline's parent run
    runs = {r.data.tags["ganops.stage"]: r for r in found if "ganops.stage" in r.data.tags}
    assert set(runs) == {"prepare", "pretrain", "train"} and len(parents) == 1
    assert len({r.data.tags["ganops.pipeline"] for r in runs.values()}) == 1  # one pipeline key for all
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == {parents[0].info.run_id}
    r = runs["train"]
    assert r.data.params["train.init_from_autoencoder"] == "True"
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert any(key in m for m in r.data.metrics), (key, r.data.metrics)
    images = [f.path for f in client.list_artifacts(r.info.run_id, "images")]
    assert any("ema" in p.lower() for p in images), images
    assert any("interpolation" in p for p in images), images


def test_resume_continues_from_last_checkpoint(workspace):
    write(workspace, {"epochs": 1})
    assert train().exit_code == 0
    write(workspace, {"epochs": 2})
    res = train("--resume")
    assert res.exit_code == 0, res.output
    metrics = json.loads((workspace / "train_detail.json").read_text())
    assert metrics["steps"] == 2 * (160 // 32)


def test_autoencoder_of_another_architecture_is_refused(workspace):
    write(workspace, model={"latent_dim": 32})
    res = train()
    assert res.exit_code == 2
    assert "ae.pt" in res.output and "model.latent_dim=16" in res.output, res.output


def test_autoencoder_written_before_model_depth_existed_still_initialises(workspace):
    from ganops.checkpoint import load_checkpoint, save_checkpoint

    state, config = load_checkpoint(workspace / "ae.pt", kind="autoencoder")
    del config["model"]["depth"]  # as checkpoints written before the field existed
    save_checkpoint(workspace / "ae.pt", "autoencoder", state, config)
    assert train().exit_code == 0
    write(workspace, model={"depth": 1})  # a deeper model still refuses it
    res = train()
    assert res.exit_code == 2 and "model.depth=0" in res.output, res.output


@pytest.mark.parametrize("bad, needle", [
    ({"loss": "wasserstein"}, "train.loss: must be one of"),
    ({"d_steps": 0}, "train.d_steps: must be >= 1"),
    ({"diffaugment": "rotate"}, "train.diffaugment: unknown op"),
    ({"ema_decay": 1.5}, "train.ema_decay: must be in [0, 1)"),
])
def test_bad_train_params_fail_before_any_work(workspace, bad, needle):
    write(workspace, bad)
    res = train()
    assert res.exit_code == 2 and needle in res.output, res.output
    assert not (workspace / "gen.pt").exists() and not (workspace / "ckpt").exists()


def test_train_reports_its_compute_budget_with_the_pretraining_it_started_from(workspace):
    res = train()
    assert res.exit_code == 0, res.output
    m = json.loads((workspace / "train_detail.json").read_text())
    pm = json.loads((workspace / "pm_detail.json").read_text())
    assert json.loads((workspace / "train.json").read_text())["total_flops"] == m["total_flops"]
    # FLOPs per step × steps, for both loops; the train stage adds the autoencoder's (from its checkpoint)
    assert pm["train_flops"] == pm["flops_per_step"] * pm["steps"] > 0
    assert m["train_flops"] == m["flops_per_step"] * m["steps"] > 0
    assert m["pretrain_flops"] == pm["train_flops"]
    assert m["total_flops"] == m["train_flops"] + m["pretrain_flops"]
    assert f"train: compute {m['total_flops'] / 1e12:.1f} TFLOP" in res.output


def test_plots_have_no_empty_cells_and_dvc_draws_exactly_the_defined_curves(workspace: Path) -> None:
    """`dvc plots show` of the stages' real CSVs: the four titled plots of dvc.yaml and no default plot of
    a whole file, every y column present; no empty cell (a plot draws one as 0)."""
    import os
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    res = train()
    assert res.exit_code == 0, res.output
    curves, epochs = pd.read_csv(workspace / "train.csv"), pd.read_csv(workspace / "plots/train_epochs.csv")
    assert not curves.isna().any().any() and not epochs.isna().any().any()
    assert list(epochs.columns) == ["epoch", "step", "score", "best_score"] and list(epochs["epoch"]) == [1, 2]
    assert list(epochs["best_score"]) == list(epochs["score"].cummin())

    repo = workspace / "dvcrepo"
    (repo / "plots").mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, repo / name)
    for src, dst in (("pp.csv", "pretrain.csv"), ("train.csv", "train.csv"), ("plots/train_epochs.csv",
                                                                           "train_epochs.csv")):
        shutil.copy(workspace / src, repo / "plots" / dst)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, timeout=120)
    shown = subprocess.run(["dvc", "plots", "show", "--json"], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0 and "could not find" not in shown.stderr, shown.stderr
    out = json.loads(shown.stdout)
    titles = [next(iter(p)) for p in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]]
    assert not out.get("errors") and sorted(out["data"]) == sorted(titles), out
    assert all(len(v) == 1 and v[0]["type"] == "vega" for v in out["data"].values())
