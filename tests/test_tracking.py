"""ganops.tracking against a real MLflow sqlite store and a real git repository (no mocks)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from ganops.provenance import params_hash
from ganops.tracking import (
    TrackingError,
    TrackingWarning,
    check_store,
    image_grid,
    repo_root,
    resolve_tracking_uri,
    stage_run,
)
from tests.conftest import git

PARAMS = {"seed": 42, "train": {"lr": 2e-4, "betas": [0.5, 0.999], "epochs": 5}}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> Path:
    """A committed git repo as cwd, with an MLflow sqlite store beside it."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "params.yaml").write_text("seed: 42\ntrain:\n  lr: 0.0002\n")
    (root / "model.py").write_text("WIDTH = 64\n")
    (root / "dvc.yaml").write_text("stages:\n  train:\n    cmd: ganops train\n"
                                   "    metrics:\n    - metrics.json:\n        cache: false\n")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    (root / "metrics.json").write_text("{}\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("GANOPS_PIPELINE_ID", raising=False)
    return root


def client() -> MlflowClient:
    return MlflowClient(resolve_tracking_uri(Path.cwd()))


def pipeline_runs(key: str, experiment: str) -> list[dict]:
    """The stage runs tagged with pipeline key `key`, oldest first, as the MLflow UI or a client finds them
    (the product tags every stage run with `ganops.pipeline` and nests them under one parent run)."""
    exp = client().get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client().search_runs([exp.experiment_id], filter_string=f"tags.`ganops.pipeline` = '{key}'",
                                order_by=["attributes.start_time ASC"])
    return [{"run_id": r.info.run_id, "stage": r.data.tags.get("ganops.stage"), "status": r.info.status}
            for r in runs]


def run_stage(repo: Path, stage: str = "pretrain", params: dict | None = None, **kw) -> str:
    with stage_run(stage, "test", params or PARAMS, repo, system_metrics=False, **kw) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    return run.run_id


def test_stage_run_logs_params_metrics_tags_and_artifacts(repo: Path) -> None:
    params = {**PARAMS, "note": "x" * 700}
    with stage_run("pretrain", "test", params, repo, data_meta={"content_hash": "abc123", "n": 10}) as run:
        for step, loss in enumerate([1.5, 0.75]):
            run.log_metrics({"loss/recon": loss, "lr": torch.tensor(2e-4)}, step=step)
        run.set_tags({"note": "hello"})
        run.log_dict({"best_epoch": 1, "path": repo}, "summary.json")
        run.log_table(pd.DataFrame({"epoch": [0, 1], "loss": [1.5, 0.75]}), "history.csv")

    got = client().get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "pretrain"
    p = got.data.params
    assert (p["seed"], p["train.lr"], p["train.epochs"]) == ("42", "0.0002", "5")
    assert p["train.betas"] == "[0.5, 0.999]"
    assert len(p["note"]) == 500  # cut to the value limit; params.json keeps it whole
    history = client().get_metric_history(run.run_id, "loss/recon")
    assert [(m.step, m.value) for m in history] == [(0, 1.5), (1, 0.75)]

    tags = got.data.tags
    assert tags["ganops.stage"] == "pretrain"
    assert tags["ganops.git_commit"] == git(repo, "rev-parse", "HEAD")
    assert tags["ganops.git_dirty"] == "false"
    assert tags["ganops.data_hash"] == "abc123"
    assert tags["ganops.params_hash"] == params_hash(params)
    assert len(tags["ganops.pipeline"]) == 16
    assert tags["note"] == "hello"

    files = {a.path for a in client().list_artifacts(run.run_id)}
    assert {"params.json", "data_meta.json", "summary.json", "history.csv"} <= files
    # artifacts beside the sqlite store (here the repo's parent), so a store on a volume keeps them
    assert got.info.artifact_uri.startswith((repo.parent / "mlartifacts" / "test").as_uri())
    table = Path(client().download_artifacts(run.run_id, "history.csv", str(repo / "dl")))
    assert table.read_text().splitlines() == ["epoch,loss", "0,1.5", "1,0.75"]


def test_experiments_open_on_the_model_training_view_of_the_mlflow_ui(repo: Path) -> None:
    """MLflow 3's UI shows an experiment without `mlflow.experimentKind` as a GenAI app (traces); ganops
    tags the ones it creates, and an older untagged one on its next run, but keeps a kind set by hand."""
    run_stage(repo)
    assert client().get_experiment_by_name("test").tags["mlflow.experimentKind"] == "custom_model_development"
    old = client().create_experiment("old")  # as made by an earlier ganops, or by hand
    with stage_run("pretrain", "old", PARAMS, repo, system_metrics=False):
        pass
    assert client().get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    client().set_experiment_tag(old, "mlflow.experimentKind", "genai_development")
    run_stage(repo)
    with stage_run("pretrain", "old", PARAMS, repo, system_metrics=False):
        pass
    assert client().get_experiment(old).tags["mlflow.experimentKind"] == "genai_development"


def test_dirty_flag_flips_after_editing_a_tracked_file(repo: Path) -> None:
    clean = client().get_run(run_stage(repo)).data.tags
    (repo / "scratch.txt").write_text("untracked files do not count\n")
    # nor what a running `dvc repro` rewrites before later stages start: dvc.lock, stage metrics
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (repo / "metrics.json").write_text('{"loss": 1.0}\n')
    assert client().get_run(run_stage(repo)).data.tags["ganops.git_dirty"] == "false"

    (repo / "model.py").write_text("WIDTH = 128\n")
    dirty = client().get_run(run_stage(repo)).data.tags
    assert (clean["ganops.git_dirty"], dirty["ganops.git_dirty"]) == ("false", "true")
    assert dirty["ganops.git_commit"] == clean["ganops.git_commit"]
    assert dirty["ganops.pipeline"] != clean["ganops.pipeline"]  # new code, new pipeline


def test_params_hash_is_stable_for_equal_params_and_differs_otherwise() -> None:
    same = {"train": {"epochs": 5, "lr": 2e-4, "betas": [0.5, 0.999]}, "seed": 42}
    assert params_hash(PARAMS) == params_hash(same)
    assert params_hash(PARAMS) != params_hash({**PARAMS, "seed": 43})
    assert len(params_hash(PARAMS)) == 16


def test_stages_of_one_repro_share_a_pipeline_key_and_are_found_together(repo: Path) -> None:
    first = run_stage(repo, "pretrain")
    # What `dvc repro` writes between stages must not split the pipeline.
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {pretrain: {}}\n")
    (repo / "metrics.json").write_text('{"fid": 30.1}\n')
    (repo / ".gitignore").write_text("/data/prepared\n")
    second = run_stage(repo, "train", params={"epochs": 5})

    key = client().get_run(first).data.tags["ganops.pipeline"]
    assert client().get_run(second).data.tags["ganops.pipeline"] == key
    runs = pipeline_runs(key, "test")
    assert [(r["run_id"], r["stage"], r["status"]) for r in runs] == [
        (first, "pretrain", "FINISHED"), (second, "train", "FINISHED")]

    (repo / "params.yaml").write_text("seed: 42\ntrain:\n  lr: 0.001\n")
    assert client().get_run(run_stage(repo, "train")).data.tags["ganops.pipeline"] != key
    assert len(pipeline_runs(key, "test")) == 2
    assert pipeline_runs(key, "no-such-experiment") == []


def test_one_pipeline_is_one_parent_run_with_its_stages_nested_and_the_data_as_an_input(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANOPS_USER", "alice")
    meta = {"content_hash": "abc123", "source": "fashion-mnist", "path": str(repo), "counts": {"train": 10}}
    with stage_run("prepare", "test", PARAMS, repo, data_meta=meta, system_metrics=False) as first:
        pass
    with stage_run("train", "test", PARAMS, repo, data_meta=meta, system_metrics=False) as second:
        pass
    runs = [client().get_run(r.run_id) for r in (first, second)]
    parent_id = runs[0].data.tags["mlflow.parentRunId"]
    assert runs[1].data.tags["mlflow.parentRunId"] == parent_id
    parent = client().get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.info.end_time >= runs[1].info.end_time
    assert parent.data.tags["ganops.pipeline_parent"] == f"{first.pipeline_key}/alice"
    assert parent.info.run_name == f"pipeline {first.pipeline_key[:8]}"
    # who ran it: the UI's User column, on the parent and its stages
    assert parent.data.tags["mlflow.user"] == "alice" and {r.data.tags["mlflow.user"] for r in runs} == {"alice"}
    assert [r["run_id"] for r in pipeline_runs(first.pipeline_key, "test")] == [first.run_id, second.run_id]
    # the prepared data is a dataset input: same content hash, same digest
    for r in runs:
        (ds,) = r.inputs.dataset_inputs
        assert ds.dataset.digest == "abc123" and ds.dataset.name == "fashion-mnist (train 10)"
        assert {t.key: t.value for t in ds.tags}["mlflow.data.context"] == r.data.tags["ganops.stage"]

    # a DVC experiment (dvc exp run sets DVC_EXP_NAME) gets its own parent, named and tagged after it
    monkeypatch.setenv("DVC_EXP_NAME", "wider-d")
    with stage_run("train", "test", {**PARAMS, "seed": 1}, repo, system_metrics=False) as exp_run:
        pass
    tags = client().get_run(exp_run.run_id).data.tags
    exp_parent = client().get_run(tags["mlflow.parentRunId"])
    assert exp_parent.info.run_id != parent_id and exp_parent.info.run_name == "wider-d"
    assert exp_parent.data.tags["ganops.dvc_exp"] == tags["ganops.dvc_exp"] == "wider-d"

    # another person's run of the same commit and params is another parent, under their name
    monkeypatch.delenv("DVC_EXP_NAME")
    monkeypatch.setenv("GANOPS_USER", "bob")
    with stage_run("prepare", "test", PARAMS, repo, data_meta=meta, system_metrics=False) as bobs:
        pass
    assert bobs.pipeline_key == first.pipeline_key
    bob_parent = client().get_run(client().get_run(bobs.run_id).data.tags["mlflow.parentRunId"])
    assert bob_parent.info.run_id not in (parent_id, exp_parent.info.run_id)
    assert bob_parent.data.tags["mlflow.user"] == "bob"
    assert bob_parent.data.tags["ganops.pipeline_parent"] == f"{first.pipeline_key}/bob"


def test_the_pipeline_key_hashes_the_params_file_the_stage_read(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--params other.yaml`: the key follows other.yaml, not params.yaml. Both files here are untracked
    (one beside params.yaml, named relative to the working directory as the CLI passes it, one outside the
    repo), so the git diff, also in the key, cannot see them: only hashing the file itself does."""
    near, far = Path("near.yaml"), tmp_path / "far.yaml"
    near.write_text("seed: 1\n")
    far.write_text("seed: 2\n")

    def key(params_file: Path | None) -> str:
        return client().get_run(run_stage(repo, params_file=params_file)).data.tags["ganops.pipeline"]

    k_near, k_far, k_default = key(near), key(far), key(None)
    assert key(near) == k_near and key(far) == k_far  # one file, one key (a repro's stages agree)
    assert len({k_near, k_far, k_default}) == 3
    assert key(repo / "params.yaml") == k_default  # no params_file: params.yaml, as before

    near.write_text("seed: 3\n")  # editing the named file, params.yaml untouched, starts a new pipeline
    assert key(near) not in (k_near, k_far, k_default)
    assert key(far) == k_far

    monkeypatch.setenv("GANOPS_PIPELINE_ID", "ci-build-18")  # the env var still wins
    assert key(near) == key(far) == "ci-build-18"


def test_pipeline_id_env_var_overrides_the_derived_key(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANOPS_PIPELINE_ID", "ci-build-17")
    run_id = run_stage(repo)
    assert client().get_run(run_id).data.tags["ganops.pipeline"] == "ci-build-17"
    assert [r["run_id"] for r in pipeline_runs("ci-build-17", "test")] == [run_id]


def test_image_grid_is_logged_as_a_png_of_the_grid_size(repo: Path) -> None:
    fake = torch.rand(16, 1, 28, 28) * 2 - 1  # (N, C, H, W) in [-1, 1]
    with stage_run("train", "test", PARAMS, repo, system_metrics=False) as run:
        run.log_image_grid(fake, key="samples", step=3)
        run.log_image_grid((torch.rand(5, 3, 32, 32) * 255).to(torch.uint8), key="real", nrow=4)

    pngs = [a.path for a in client().list_artifacts(run.run_id, "images") if a.path.endswith(".png")]
    assert len(pngs) == 2
    sample = next(p for p in pngs if "samples+step+3" in p)
    img = Image.open(client().download_artifacts(run.run_id, sample, str(repo / "dl")))
    assert img.size == (8 * (28 + 2) + 2, 2 * (28 + 2) + 2)  # (W, H): 8 a row, 2 px padding
    assert img.mode == "RGB"


def test_image_grid_maps_value_ranges_to_uint8() -> None:
    grid = image_grid(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1), nrow=2, padding=0)  # (H, W, 3)
    assert grid.shape == (1, 2, 3)
    assert grid[0, :, 0].tolist() == [0, 255]
    with pytest.raises(ValueError, match="N, C, H, W"):
        image_grid(torch.zeros(2, 4, 8, 8))


def test_exception_inside_stage_run_leaves_a_failed_run(repo: Path) -> None:
    with pytest.raises(RuntimeError, match="diverged"):
        with stage_run("train", "test", PARAMS, repo, system_metrics=False) as run:
            raise RuntimeError("loss diverged")
    assert client().get_run(run.run_id).info.status == "FAILED"


def test_logging_failure_after_start_warns_and_the_stage_continues(repo: Path) -> None:
    with pytest.warns(TrackingWarning) as warned:
        with stage_run("train", "test", PARAMS, repo, system_metrics=False) as run:
            run.log_artifact(repo / "missing.pt")
            run.log_metrics({"loss": 0.5}, step=1)
    assert "log_artifact failed" in str(warned[0].message)
    assert "1 tracking call(s) failed" in str(warned[-1].message)  # summary at the end
    got = client().get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.metrics["loss"] == 0.5


def test_unreachable_server_fails_fast_before_any_work(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on discard
    start = time.monotonic()
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9 is unreachable"):
        with stage_run("train", "test", PARAMS, repo):
            pytest.fail("the stage body must not run")
    assert time.monotonic() - start < 10


def test_sqlite_store_in_a_missing_directory_is_unreachable(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/no/such/dir/mlflow.db")
    with pytest.raises(TrackingError, match="unreachable: directory .* does not exist"):
        run_stage(repo)


LOCKER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")  # what a writer holds while it commits: readers wait too
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
"""


@contextmanager
def locked(db: Path, seconds: float) -> Iterator[None]:
    """Another process holds an exclusive lock on the sqlite file for `seconds` (or until the block ends)."""
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.kill()
        proc.wait()


def test_store_locked_by_another_process_is_waited_for_and_the_stage_runs(repo: Path, tmp_path: Path) -> None:
    """sqlite gives up on a lock after 5 s; a lock held for 8 s (`mlflow ui` or another stage writing)
    delays the stage, the store check retrying with back-off, instead of failing it as unreachable."""
    with locked(tmp_path / "mlflow.db", 8):
        run_id = run_stage(repo)
    assert client().get_run(run_id).info.status == "FINISHED"


def test_store_locked_past_the_budget_is_busy_and_locked_not_unreachable(repo: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with locked(tmp_path / "mlflow.db", 120), pytest.raises(TrackingError) as refused:
        check_store(uri, budget_s=2)
    msg = str(refused.value)
    assert msg.startswith(f"MLflow tracking store {uri} is busy: database is locked (for "), msg
    assert "unreachable" not in msg and "\n" not in msg


def test_default_store_is_mlflow_db_at_the_repo_root(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    (repo / "src").mkdir()
    monkeypatch.chdir(repo / "src")
    assert repo_root() == repo.resolve()
    assert resolve_tracking_uri(repo_root()) == f"sqlite:///{repo.resolve()}/mlflow.db"
    run_stage(repo_root())
    assert (repo / "mlflow.db").is_file()


def test_outside_git_lineage_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        empty_store: Path) -> None:
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("GANOPS_PIPELINE_ID", raising=False)
    monkeypatch.chdir(plain)
    assert repo_root() == plain.resolve()
    tags = client().get_run(run_stage(plain)).data.tags
    assert (tags["ganops.git_commit"], tags["ganops.git_dirty"]) == ("unknown", "unknown")
    assert len(tags["ganops.pipeline"]) == 16
