"""A disk that fills under the MLflow store, a statistics file or the Data Docs: one line naming what could not be
written, exit 2, the previous version in place and no temp files. Real tmpfs mounts (conftest.tmpfs), a real sqlite
MLflow store, real Great Expectations, real TF-Inception on a few images; nothing mocked."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ganops.tracking import flush_outbox, stage_run
from pipelines.cli import app
from tests.conftest import fill, git, write_idx_dataset
from tests.test_faults import ganops, runs, temp_leftovers

runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small IDX dataset, params and a fresh sqlite store (on the ordinary disk) in tmp_path, the cwd."""
    write_idx_dataset(tmp_path / "idx", n_train=60, n_test=40)
    params = {"seed": 5, "tracking": {"experiment": "t", "system_metrics": False},
              "data": {"source": "fashion-mnist", "path": "idx"}, "evaluate": {"num_samples": 24}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def prepare(validation: str | Path = "validation"):
    return runner.invoke(app, ["prepare", "--params", "params.yaml", "--out", "prepared",
                               "--validation", str(validation)])


@pytest.mark.parametrize("store", ["existing", "new"])
def test_a_store_on_a_full_disk_is_one_line_naming_it_and_no_run(ws: Path, empty_store: Path, tmpfs,
                                                                 store: str) -> None:
    disk = tmpfs("store", "size=2m")
    db = disk / "mlflow.db"
    if store == "existing":
        shutil.copy(empty_store, db)
    fill(disk)
    proc = ganops(["prepare", "--params", "params.yaml", "--out", "prepared", "--validation", "validation"], ws,
                  f"sqlite:///{db}")
    out, err = proc.communicate(timeout=300)  # a subprocess: MLflow's own logging goes to the real stderr
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: MLflow tracking store {db}: database or disk is full (0 bytes free"), err
    assert not (ws / "prepared").exists() and out == ""
    if store == "existing":  # refused before the run: none left RUNNING (read with sqlite3, closed at once)
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
            assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    else:
        assert not db.exists(), "a half-made store left on the full disk"


def test_a_store_whose_disk_fills_mid_run_keeps_the_calls_says_why_and_the_run_ends_once_freed(
        tmp_path: Path, empty_store: Path, tmpfs, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """Full after the start: the stage's work stands (its outputs are elsewhere), its calls wait in the outbox
    as for a store that does not answer, without the end's retry (a full disk frees no space by itself), and the
    first command after space is freed sends them and ends the run."""
    disk = tmpfs("store", "size=8m")
    shutil.copy(empty_store, disk / "mlflow.db")
    uri = f"sqlite:///{disk / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("GANOPS_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.delenv("GANOPS_TRACKING_RETRY_S", raising=False)  # the default 120 s
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    monkeypatch.chdir(repo)
    with pytest.warns(UserWarning, match=r"\(database or disk is full\); the stage continues"):
        with stage_run("train", "full", {"seed": 1}, repo, system_metrics=False) as run:
            run.log_metrics({"loss": 1.0}, step=0)
            fill(disk)
            t0 = time.monotonic()
            run.log_metrics({"loss": 0.5}, step=1)
    assert time.monotonic() - t0 < 30, "waited for a full disk to free itself"
    err = capsys.readouterr().err
    assert f"tracking: the store {uri} did not take the run's calls (database or disk is full): run {run.run_id} " \
           "stays RUNNING with 2 call(s) kept" in err, err
    (disk / "filler").unlink()
    assert flush_outbox(uri).completed == {run.run_id: 2}
    client = MlflowClient(uri)
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run.run_id, "loss")] == [1.0, 0.5]


@pytest.mark.slow
def test_reference_statistics_on_a_disk_that_fills_mid_write_keep_the_previous_file(ws: Path, tmpfs) -> None:
    assert prepare().exit_code == 0
    disk = tmpfs("stats", "size=2m")  # passes the up-front check (1 MiB free); the covariance alone is 32 MB
    out = disk / "test_inception.safetensors"
    out.write_bytes(b"previous version\n")
    res = runner.invoke(app, ["reference", "--params", "params.yaml", "--data", "prepared", "--out", str(out),
                              "--shipped", "none"])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert errors == [line for line in res.output.splitlines() if not line.startswith("reference: inception")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {out}: cannot write: no space left on device ("), \
        res.output
    assert out.read_bytes() == b"previous version\n" and sorted(disk.iterdir()) == [out]
    assert [r.info.status for r in runs(f"sqlite:///{ws}/mlflow.db", "reference")] == ["FAILED"]


def docs_snapshot(docs: Path) -> dict[str, bytes]:
    return {str(p.relative_to(docs)): p.read_bytes() for p in sorted(docs.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("before", ["none", "previous"])
def test_data_docs_on_a_disk_that_fills_mid_build_leave_the_previous_docs_whole(ws: Path, tmpfs, before: str) -> None:
    # GX's Data Docs are ~4.2 MB (fonts and images): 3 MB cannot hold one build, 6 MB holds one but not two
    disk = tmpfs("docs", "size=3m" if before == "none" else "size=6m")
    validation = disk / "validation"
    snapshot: dict[str, bytes] = {}
    if before == "previous":
        assert prepare(validation).exit_code == 0
        snapshot = docs_snapshot(validation / "docs")
        assert "index.html" in snapshot
        shutil.rmtree(ws / "prepared")
    res = prepare(validation)
    assert res.exit_code == 2, res.output
    assert res.output.splitlines()[-1].startswith(f"error: {validation / 'docs'}: cannot write: no space left on "
                                                  "device ("), res.output
    assert [line for line in res.output.splitlines() if line.startswith(("error", "warning", "Traceback"))] == \
        res.output.splitlines()[-1:]
    assert temp_leftovers(disk) == [], "temp dir left on the full disk"
    assert docs_snapshot(validation / "docs") == snapshot  # the previous build, whole, or none at all
    assert not (ws / "prepared").exists()  # validation comes before the data is written
    statuses = sorted(r.info.status for r in runs(f"sqlite:///{ws}/mlflow.db", "prepare"))
    assert statuses == (["FAILED"] if before == "none" else ["FAILED", "FINISHED"])
