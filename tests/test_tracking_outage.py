"""A tracking store that stops answering during a stage: nothing logged is lost, no run is left RUNNING.

Against a real `mlflow server` (conftest.MlflowServer) killed and restarted on the same port and database,
and a real sqlite store; no mocks. Each test isolates the outbox (GANOPS_OUTBOX) in its tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from ganops.tracking import TAG_INCOMPLETE, TrackingError, TrackingWarning, flush_outbox, outbox_root, runs, stage_run
from ganops.tracking.inspect import record_warnings
from ganops.tracking.outbox import Outbox, redact
from pipelines.lineage import render
from tests.conftest import REPO, git

PARAMS = {"seed": 42, "train": {"lr": 2e-4, "epochs": 5}}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A committed git repo as cwd; the outbox in tmp_path, a short retry at a stage's end."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "params.yaml").write_text("seed: 42\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    monkeypatch.chdir(root)
    monkeypatch.setenv("GANOPS_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("GANOPS_TRACKING_RETRY_S", "1")
    monkeypatch.delenv("GANOPS_PIPELINE_ID", raising=False)
    return root


def log_steps(run, steps: range, logged: Counter) -> None:
    for step in steps:
        run.log_metrics({"loss": 1.0 / (step + 1), "lr": 1e-3}, step=step)
        logged.update(["loss", "lr"])


def history_counts(client: MlflowClient, run_id: str, keys) -> Counter:
    return Counter({k: len(client.get_metric_history(run_id, k)) for k in keys})


def ganops(*args: str, uri: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": f"{REPO}:{REPO / 'src'}"}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_server_killed_mid_run_and_back_before_the_end_loses_nothing(
        repo: Path, mlflow_server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    server = mlflow_server()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setattr(runs, "PAUSE_S", 2.0)  # a restart takes longer: the first call after it sends the outbox
    monkeypatch.setenv("GANOPS_TRACKING_RETRY_S", "90")
    logged: Counter = Counter()
    plots = repo / "plots.csv"
    with stage_run("train", "outage", PARAMS, repo, system_metrics=False) as run:
        box = outbox_root() / run.run_id
        log_steps(run, range(2), logged)
        # ---- 1. down for a while, back in the middle of the stage
        server.stop()
        with pytest.warns(TrackingWarning, match="wait in"):
            log_steps(run, range(2, 4), logged)
        assert len((box / "entries.jsonl").read_text().splitlines()) == 2
        server.start()
        assert flush_outbox(server.uri).busy == [run.run_id]  # another command leaves a live stage's outbox alone
        log_steps(run, range(4, 5), logged)  # sends what waits first, then itself
        assert not box.exists()
        # ---- 2. down again, back only while the stage's end waits for it
        server.stop()
        log_steps(run, range(5, 8), logged)
        plots.write_text("step,loss\n0,1.0\n")
        run.log_artifact(plots)
        plots.write_text("overwritten after the call\n")  # what was logged is what the call saw
        run.log_image_grid(torch.zeros(4, 1, 8, 8), key="samples", step=7)
        run.log_dict({"fid": 12.5}, "summary.json")
        run.set_tags({"ganops.decision": "kept"})
        assert len((box / "entries.jsonl").read_text().splitlines()) == 7  # 3 metrics, artifact, image, dict, tags
        restart = threading.Thread(target=server.start)
        restart.start()
    restart.join()

    client = MlflowClient(server.uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert history_counts(client, run.run_id, logged) == logged  # every point, none twice
    assert got.data.tags["ganops.decision"] == "kept" and TAG_INCOMPLETE not in got.data.tags
    files = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"plots.csv", "summary.json", "params.json", "images"} <= files
    assert Path(client.download_artifacts(run.run_id, "plots.csv", str(repo / "dl"))).read_text() == \
        "step,loss\n0,1.0\n"
    assert any("samples" in a.path and a.path.endswith(".png") for a in client.list_artifacts(run.run_id, "images"))
    assert client.get_run(run.parent_id).info.end_time == got.info.end_time
    assert not box.exists()
    err = capsys.readouterr().err
    assert f"10 call(s) sent late to run {run.run_id}" in err  # 2 in the middle; 7 and the run's end at the end
    assert "stays RUNNING" not in err


def test_server_down_at_the_end_leaves_the_run_running_and_the_next_command_completes_it(
        repo: Path, mlflow_server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    server = mlflow_server()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    logged: Counter = Counter()
    with stage_run("train", "outage", PARAMS, repo, system_metrics=False) as first:
        log_steps(first, range(2), logged)
        server.stop()
        log_steps(first, range(2, 6), logged)
    ended = int(time.time() * 1000)  # the block exited normally: the stage's work stands
    box = outbox_root() / first.run_id
    assert (box / "entries.jsonl").is_file()
    meta = json.loads((box / "run.json").read_text())
    assert meta["tracking_uri"] == redact(server.uri) and meta["parent_id"] == first.parent_id
    err = capsys.readouterr().err
    assert f"run {first.run_id} stays RUNNING" in err and str(box) in err and "ganops flush" in err

    down = ganops("flush", uri=server.uri, cwd=repo)
    assert down.returncode == 2 and "unreachable" in down.stderr and len(down.stderr.strip().splitlines()) == 1
    with pytest.raises(TrackingError, match="unreachable"):  # a stage still fails fast, before any work
        with stage_run("evaluate", "outage", PARAMS, repo, system_metrics=False):
            pytest.fail("must not run")

    server.start()
    client = MlflowClient(server.uri)
    assert client.get_run(first.run_id).info.status == "RUNNING"
    time.sleep(0.05)
    with stage_run("evaluate", "outage", PARAMS, repo, system_metrics=False) as second:
        # its start sent the first run's kept calls and ended it, at its real end time, and the parent with it
        got = client.get_run(first.run_id)
        assert got.info.status == "FINISHED" and got.info.end_time <= ended
        assert history_counts(client, first.run_id, logged) == logged
        parent = client.get_run(first.parent_id)
        assert parent.info.status == "FINISHED" and parent.info.end_time == got.info.end_time
        assert second.parent_id == first.parent_id
    assert not box.exists()
    assert f"sent 5 kept call(s) of 1 run(s) ({first.run_id})" in capsys.readouterr().err  # 4 metrics, the end


def test_calls_the_store_refuses_or_that_lost_their_file_mark_the_run_incomplete(
        repo: Path, mlflow_server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    server = mlflow_server()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    logged: Counter = Counter()
    (repo / "model.pt").write_bytes(b"weights")
    with pytest.raises(RuntimeError, match="diverged"), stage_run("train", "outage", PARAMS, repo,
                                                                  system_metrics=False) as run:
        log_steps(run, range(2), logged)
        server.stop()
        log_steps(run, range(2, 4), logged)
        run.log_params({"seed": 7})  # seed=42 was logged at the start: the server refuses a new value
        run.log_artifact(repo / "model.pt")
        raise RuntimeError("loss diverged")
    box = outbox_root() / run.run_id
    (copy,) = box.glob("files/*/model.pt")
    copy.unlink()  # e.g. cleaned by hand: the call cannot be made any more

    server.start()
    res = ganops("flush", uri=server.uri, cwd=repo)
    assert res.returncode == 0, res.stderr
    assert f"of 1 run(s) ({run.run_id})" in res.stdout and "1 marked incomplete" in res.stdout
    client = MlflowClient(server.uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED"  # as the stage ended
    assert history_counts(client, run.run_id, logged) == logged
    assert got.data.params["seed"] == "42"
    reason = got.data.tags[TAG_INCOMPLETE]
    assert reason.startswith("2 tracking call(s) not recorded: params seed")
    note = got.data.tags["mlflow.note.content"]
    assert "params seed" in note and "artifact model.pt: the file is gone from the outbox" in note
    assert not box.exists()
    capsys.readouterr()

    # ganops lineage names it (the train run of a registered generator, as describe() reads it)
    train_run = {"run_id": run.run_id, "tags": dict(got.data.tags), "status": got.info.status}
    warnings = record_warnings({"train": train_run, "evaluate": {"run_id": "e1", "status": "RUNNING", "tags": {}}},
                               kept={"e1"})
    d = {"name": "gen", "version": "3", "aliases": (), "tags": {}, "metrics": {}, "generator": {},
         "train_run": train_run, "evaluate_run_id": "e1", "tracking_uri": server.uri, "warnings": warnings}
    lines = render(d).splitlines()
    assert lines[1] == f"  warning   train run {run.run_id} is incomplete: {reason}"
    assert lines[2] == ("  warning   evaluate run e1 is still RUNNING: its store was unreachable; "
                        "`ganops flush` completes it")


def test_a_torn_last_line_is_left_out_and_a_run_whose_stage_died_is_ended_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> None:
    import shutil

    monkeypatch.setenv("GANOPS_OUTBOX", str(tmp_path / "outbox"))
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    now = int(time.time() * 1000)

    def kept_run(with_end: bool) -> tuple[str, Path]:
        run_id = client.create_run("0").info.run_id
        box = Outbox.create(run_id, uri, None)
        for step in range(3):
            box.add({"kind": "metrics", "metrics": [["loss", 1.0 / (step + 1), now + step, step]], "t": now + step})
        if with_end:
            box.add({"kind": "end", "status": "FINISHED", "end_time": now + 10, "parent_id": None, "rejected": [],
                     "t": now + 10})
        box.close()  # as a stage that ended (or died)
        return run_id, box.path / "entries.jsonl"

    # a stage killed while writing a call: its end never written, the call torn
    died, entries = kept_run(with_end=False)
    with open(entries, "ab") as f:
        f.write(b'{"kind":"metrics","metrics":[["loss",0.1')
    # a torn line after a whole end (the reader must not care where it is)
    whole, entries2 = kept_run(with_end=True)
    with open(entries2, "ab") as f:
        f.write(b'{"kind":"tags","ta')

    summary = flush_outbox(uri)
    assert set(summary.completed) == {died, whole} and not summary.pending
    assert len(client.get_metric_history(died, "loss")) == 3 and len(client.get_metric_history(whole, "loss")) == 3
    got = client.get_run(died)
    assert got.info.status == "KILLED" and got.info.end_time == now + 2  # its last call
    assert "ended without closing its run" in got.data.tags[TAG_INCOMPLETE]
    got = client.get_run(whole)
    assert got.info.status == "FINISHED" and got.info.end_time == now + 10 and TAG_INCOMPLETE not in got.data.tags
    assert not any((tmp_path / "outbox").iterdir())


def test_a_run_the_store_does_not_have_keeps_its_outbox_and_a_missing_store_is_not_created(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> None:
    import shutil

    monkeypatch.setenv("GANOPS_OUTBOX", str(tmp_path / "outbox"))
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    entry = {"kind": "metrics", "metrics": [["loss", 1.0, 0, 0]], "t": 0}
    # a store recreated under the same URI (the run is not there), and a store deleted
    for run_id, db in (("0" * 32, "mlflow.db"), ("1" * 32, "gone.db")):
        box = Outbox.create(run_id, f"sqlite:///{tmp_path}/{db}", None)
        box.add(entry)
        box.close()
    recreated = flush_outbox(f"sqlite:///{tmp_path}/mlflow.db")
    assert "is not in this store" in recreated.pending["0" * 32] and not recreated.completed
    gone = flush_outbox(f"sqlite:///{tmp_path}/gone.db")
    assert gone.pending == {"1" * 32: f"no store at {tmp_path}/gone.db"} and not (tmp_path / "gone.db").exists()
    assert {d.name for d in (tmp_path / "outbox").iterdir()} == {"0" * 32, "1" * 32}  # nothing lost


def test_the_outbox_stores_no_credentials() -> None:
    assert redact("https://alice:s3cret@mlflow.example.com:5000/base?token=x#y") == "https://mlflow.example.com:5000/base"
    assert redact("postgresql://u:p@db/mlflow") == "postgresql://db/mlflow"
    assert redact("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
