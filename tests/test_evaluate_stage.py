"""judge → reference → floor → evaluate end to end on real Fashion-MNIST images, a real MLflow store and
the real TF-Inception network (small N so it takes well under a minute of Inception time)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from ganops.io import CSV_FLOAT_FORMAT
from pipelines.cli import app
from tests.conftest import DEBIAN_FASHION, idx_bytes

runner = CliRunner()
N = 60  # generated images per metric → fid60, kid60
N_TEST = 80
pytestmark = pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        raw = f.read()
    nd = raw[3]
    dims = np.frombuffer(raw[4:4 + 4 * nd], ">u4").astype(int)
    return np.frombuffer(raw[4 + 4 * nd:], np.uint8).reshape(dims)


def _subset(dst: Path, n_train: int, n_test: int) -> None:
    """The first images of the real Fashion-MNIST, written as a smaller IDX set."""
    dst.mkdir(parents=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        for kind in ("images-idx3", "labels-idx1"):
            arr = _read_idx(DEBIAN_FASHION / f"{split}-{kind}-ubyte.gz")[:n]
            with gzip.open(dst / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(idx_bytes(arr))


def invoke(*args: str) -> object:
    res = runner.invoke(app, [*args, "--params", "params.yaml"])
    return res


EVAL_ARGS = ("evaluate", "--data", "prepared", "--judge", "judge.pt", "--reference", "ref.safetensors",
             "--floor", "floor_detail.json", "--metrics", "eval.json", "--plots", "eval.csv", "--samples", "samples",
             "--candidate", "candidate.json")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    """A workspace after prepare, judge, train, reference and floor; cwd and MLflow point into it."""
    root = tmp_path_factory.mktemp("evalws")
    _subset(root / "idx", 400, N_TEST)
    params = {"seed": 3, "tracking": {"experiment": "t", "system_metrics": False},
              "data": {"source": "fashion-mnist", "path": str(root / "idx")},
              "model": {"latent_dim": 16, "g_width": 8, "d_width": 8, "conditional": False, "spectral_norm": False,
                        "d_hidden": 0},
              "judge": {"epochs": 1, "batch_size": 64},
              "train": {"epochs": 1, "batch_size": 64, "n_eval": 50, "loss": "bce", "init_from_autoencoder": False},
              "evaluate": {"num_samples": N, "judge_samples": N, "grid_size": 20},
              "promote": {"model_name": "gen-test"}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        for args in (("prepare", "--out", "prepared", "--validation", "validation"),
                     ("judge", "--data", "prepared", "--model-out", "judge.pt", "--metrics", "judge.json"),
                     ("train", "--data", "prepared", "--judge", "judge.pt", "--model-out", "gen.pt",
                      "--checkpoints", "ckpt", "--metrics", "train.json", "--plots", "train.csv"),
                     ("reference", "--data", "prepared", "--out", "ref.safetensors"),
                     ("floor", "--data", "prepared", "--reference", "ref.safetensors", "--metrics", "floor.json")):
            res = invoke(*args)
            assert res.exit_code == 0, (args[0], res.output)
        yield root


def test_judge_stage_writes_a_judge_and_its_accuracy(ws: Path) -> None:
    m = json.loads((ws / "judge.json").read_text())
    assert 0.3 < m["test_accuracy"] <= 1.0  # 1 epoch on 400 images: far above chance (0.1)
    detail = json.loads((ws / "judge_detail.json").read_text())  # per-class figures stay out of `dvc exp show`
    assert set(m) == {"test_accuracy"} and detail["test_accuracy"] == m["test_accuracy"]
    assert len(detail["per_class_accuracy"]) == 10 and "Trouser" in detail["per_class_accuracy"]


def test_train_scores_epochs_with_the_judge_fid(ws: Path) -> None:
    runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("t").experiment_id],
                                      filter_string="tags.`ganops.stage` = 'train'")
    assert runs[0].data.params["score"] == "judge-fid"
    # one name per quantity across stages: the judge FID is judge/fid here as in evaluate, time is `seconds`
    logged = set(runs[0].data.metrics)
    assert {"judge/fid", "judge/fid_best", "seconds", "best_score"} <= logged
    assert not [k for k in logged if k.startswith(("final/", "epoch/score")) or k.endswith("_seconds")], logged
    assert runs[0].data.params["train.epochs"] == "1"  # params prefixed by their section in every stage
    assert np.isfinite(json.loads((ws / "train.json").read_text())["best_score"])


def test_floor_is_n_train_images_against_the_test_reference(ws: Path) -> None:
    floor = json.loads((ws / "floor_detail.json").read_text())
    assert set(floor["metrics"]) == {f"fid{N}", f"kid{N}", f"kid{N}_std"}
    # the DVC metrics: numbers only, named as evaluate logs them (no clash with the generator's fid in a table)
    assert json.loads((ws / "floor.json").read_text()) == {f"floor/{k}": v for k, v in floor["metrics"].items()}
    p = floor["protocol"][f"fid{N}"]
    assert (p["n_gen"], p["n_ref"], p["ref_split"], p["gen_split"]) == (N, N_TEST, "test", "train")
    assert 0 < floor["metrics"][f"fid{N}"] < 200  # real vs real: far below an untrained generator
    runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("t").experiment_id],
                                      filter_string="tags.`ganops.stage` = 'floor'")
    assert {f"floor/fid{N}", "seconds"} <= set(runs[0].data.metrics)  # MLflow: the same names
    assert f"fid{N}" not in runs[0].data.metrics  # a chart of fid{N} over all runs holds generators only


def test_evaluate_writes_protocol_named_metrics_floor_coverage_grids_and_registers(ws: Path) -> None:
    res = invoke(*EVAL_ARGS, "--generator", "gen.pt", "--generator", "ckpt/last.pt")
    assert res.exit_code == 0, res.output
    m = json.loads((ws / "eval.json").read_text())  # the DVC metrics: the numbers a user compares
    detail = json.loads((ws / "eval_detail.json").read_text())  # the full record beside it
    fid, floor = m[f"fid{N}"], json.loads((ws / "floor.json").read_text())
    assert fid > 0 and m[f"kid{N}_std"] > 0 and np.isfinite(m[f"kid{N}"])
    assert set(m) == {f"fid{N}", f"kid{N}", f"kid{N}_std", f"fid{N}_over_floor", "judge/min_share_ratio"}
    assert {k: detail[k] for k in m if "/" not in k} == {k: v for k, v in m.items() if "/" not in k}
    assert detail["floor"][f"fid{N}"] == floor[f"floor/fid{N}"]
    assert m[f"fid{N}_over_floor"] == pytest.approx(fid / floor[f"floor/fid{N}"])
    proto = detail["protocol"][f"fid{N}"]
    assert (proto["n_gen"], proto["n_ref"], proto["ref_split"]) == (N, N_TEST, "test")
    assert proto["network"].startswith("tf-inception") and proto["resize"] == "tf1-bilinear 299"
    judge = detail["judge"]
    assert m["judge/min_share_ratio"] == judge["min_share_ratio"]
    assert judge["n"] == N and 0 <= judge["normalized_entropy"] <= 1 and sum(judge["class_shares"].values()) == 1
    assert judge["collapsed_classes"] == len(judge["collapsed"])
    # one row per generator in the plots CSV; the checkpoint's EMA G is the shipped one, so equal scores
    rows = pd.read_csv(ws / "eval.csv")
    assert list(rows["generator"]) == ["gen.pt", "ckpt/last.pt"]
    # the CSV holds CSV_FLOAT_FORMAT's digits: compare with the JSON value written the same way, since
    # whether 6 digits round-trip within pytest's default rel 1e-6 depends on the digits a CPU produced
    assert rows[f"fid{N}"].iloc[0] == pytest.approx(float(CSV_FLOAT_FORMAT % fid), rel=1e-12)
    assert rows[f"fid{N}"].iloc[1] == pytest.approx(float(CSV_FLOAT_FORMAT % fid), rel=1e-12)
    grid = Image.open(ws / "samples/grid.png")
    assert grid.size == (8 * 30 + 2, 3 * 30 + 2)  # 20 images, 8 a row, 28 px + 2 px padding
    assert (ws / "samples/classes.png").is_file()
    # MLflow: the run has the metrics and the collapse tag; the registry has a version with lineage
    cand = json.loads((ws / "candidate.json").read_text())
    client = MlflowClient()
    run = client.get_run(cand["run_id"])
    assert run.data.metrics[f"fid{N}"] == pytest.approx(fid)
    assert run.data.metrics[f"floor/fid{N}"] == pytest.approx(floor[f"floor/fid{N}"])
    assert run.data.tags["ganops.mode_collapse"] in ("true", "false")
    assert cand["registered"] and cand["name"] == "gen-test"
    version = client.get_model_version("gen-test", cand["version"])
    assert version.tags["ganops.run_id"] == cand["run_id"]
    assert version.tags["ganops.data_hash"] == json.loads((ws / "prepared/meta.json").read_text())["content_hash"]
    assert float(version.tags[f"metric.fid{N}"]) == pytest.approx(fid)
    # the version carries what the gate reads, not every metric (those are on the run and the logged model)
    assert {k for k in version.tags if k.startswith("metric.")} == {
        f"metric.fid{N}", f"metric.kid{N}", f"metric.kid{N}_std", "metric.judge/min_share_ratio"}
    assert len(version.tags) <= 13, sorted(version.tags)
    for tag in ("ganops.git_commit", "ganops.params_hash", "mlflow.user"):  # and who made it
        assert tag in version.tags


def test_evaluate_is_deterministic(ws: Path) -> None:
    """Same generator, seed and reference → byte-identical metrics file (DVC caching relies on it)."""
    outs = []
    for i in range(2):
        res = invoke("evaluate", "--data", "prepared", "--judge", "judge.pt", "--reference", "ref.safetensors",
                     "--floor", "floor_detail.json", "--metrics", f"det{i}.json", "--plots", "det.csv",
                     "--samples", "det", "--candidate", "det_candidate.json", "--generator", "gen.pt")
        assert res.exit_code == 0, res.output
        outs.append(((ws / f"det{i}.json").read_bytes(), (ws / f"det{i}_detail.json").read_bytes()))
    assert outs[0] == outs[1]


def test_the_gate_reads_the_coverage_evaluate_registered(ws: Path) -> None:
    """evaluate → promote through the real registry: the judge's min share reaches the gate's mode-collapse
    rule under the name it looks for, and a bar above it refuses the candidate whatever its FID."""
    from ganops.gate import MIN_SHARE
    from ganops.tracking.promotion import get_version

    res = invoke(*EVAL_ARGS[:-2], "--candidate", "gate_candidate.json", "--generator", "gen.pt")
    assert res.exit_code == 0, res.output
    cand = json.loads((ws / "gate_candidate.json").read_text())
    share = json.loads((ws / "eval.json").read_text())["judge/min_share_ratio"]
    info = get_version(os.environ["MLFLOW_TRACKING_URI"], "gen-test", cand["version"])
    assert info is not None and info.metrics[MIN_SHARE] == pytest.approx(share)
    assert share < 1.0  # 60 samples of a 1-epoch G are not exactly uniform over 10 classes (seeded)

    params = yaml.safe_load((ws / "params.yaml").read_text())
    for bar, code in ((1.0, 1), (0.0, 0)):  # max_fid far above an untrained G's fid60: only coverage decides
        params["promote"] = {"model_name": "gen-test", "max_fid": 1e4, "min_class_share": bar}
        (ws / "gate_params.yaml").write_text(yaml.safe_dump(params))
        res = runner.invoke(app, ["promote", "--params", "gate_params.yaml", "--version", cand["version"],
                                  "--dry-run", "--strict"])
        assert res.exit_code == code, res.output
        assert ("mode collapse" in res.output) == (code == 1), res.output


@pytest.mark.parametrize("mutate, needle", [
    (lambda ws: (ws / "floor_detail.json").write_text(json.dumps(
        {**json.loads((ws / "floor_detail.json").read_text()), "metrics": {"fid10k": 1.0}})), "floor is no fid60"),
    (lambda ws: (ws / "ref.safetensors").write_bytes(b"not a stats file"), "not a ganops statistics file"),
    (lambda ws: (ws / "judge.pt").write_bytes(b"garbage"), "judge.pt: unreadable checkpoint"),
])
def test_broken_inputs_are_one_line_errors(ws: Path, tmp_path: Path, mutate, needle: str) -> None:
    import shutil

    copy = tmp_path / "ws"
    shutil.copytree(ws, copy, ignore=shutil.ignore_patterns("mlflow.db*", "mlartifacts", "idx"))
    os.chdir(copy)
    try:
        mutate(copy)
        res = invoke(*EVAL_ARGS[:-8], "--metrics", "broken.json", "--plots", "broken.csv", "--samples", "broken",
                     "--candidate", "broken_candidate.json", "--generator", "gen.pt")
    finally:
        os.chdir(ws)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert not any((copy / f).exists() for f in ("broken.json", "broken.csv", "broken_candidate.json"))
