"""A team, end to end: one `mlflow server` on PostgreSQL (a throwaway `pg_virtualenv` cluster) serving artifacts
over HTTP, one DVC remote and one git remote in temp directories, and clones of this repo as teammates running
the smoke profile on a 5000/400 subset of Fashion-MNIST, all through the real CLIs (git, dvc, ganops, the job
script). The steps build on each other, as a team's day does, so they are one test:

 1. alice `dvc repro`s; the server is stopped mid-train and restarted: the train run ends FINISHED, complete
 2. alice `dvc push`es and `git push`es; bob clones and `dvc pull`s: `dvc status` is clean, `dvc repro` runs nothing
 3. every run carries its user; bob's forced evaluate is his own parent, in the experiment MLFLOW_EXPERIMENT_NAME
    names; a changed `tracking.experiment` reruns nothing
 4. two clones promote at once: exactly one champion
 5. `ganops sample` and `ganops lineage` of the champion from outside any repo; artifacts downloaded over HTTP
 6. CI=true with an empty MLFLOW_TRACKING_URI: `promote --strict` refuses (exit 2) and creates no store
 7. the GPU job (.ci/train-and-gate.sh) twice on one commit: the second pulls the experiment and trains nothing;
    a DVC remote that fails fails the job
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import DEBIAN_FASHION, MlflowServer

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "ganops-generator"
pytestmark = pytest.mark.slow


def subset(dst: Path, n_train: int = 5000, n_test: int = 400) -> Path:
    """The first n images of each split of the Debian package's Fashion-MNIST, as IDX files (as .ci/smoke.sh)."""
    dst.mkdir(parents=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        for kind, item, head in (("images-idx3", 784, 16), ("labels-idx1", 1, 8)):
            with gzip.open(DEBIAN_FASHION / f"{split}-{kind}-ubyte.gz") as f:
                raw = f.read()
            with gzip.open(dst / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(raw[:4] + n.to_bytes(4, "big") + raw[8:head] + raw[head:head + n * item])
    return dst


@contextlib.contextmanager
def postgres(root: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster (pg_virtualenv) with the README runbook's user and database; yields the
    backend store URI. The cluster lives as long as the command pg_virtualenv runs: one that writes the PG*
    settings and waits. -t: a temporary cluster directory also as root (else /etc/postgresql/<v>/regress, which
    a killed run would leave behind to block the next)."""
    pg = shutil.which("pg_virtualenv")
    assert pg, "pg_virtualenv missing: `bash setup.sh test` installs postgresql (this test does not skip)"
    env_file, stop_file = root / "pg.env", root / "pg.stop"
    holder = subprocess.Popen(
        [pg, "-t", "sh", "-c", f'env | grep ^PG > "{env_file}.tmp" && mv "{env_file}.tmp" "{env_file}"; '
                               f'while [ ! -e "{stop_file}" ]; do sleep 0.5; done'],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not env_file.exists():
            if holder.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pg_virtualenv did not start (exit {holder.poll()})")
            time.sleep(0.2)
        pg_env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        # the README runbook's two commands, as the cluster's superuser (there: sudo -u postgres)
        for cmd in (["psql", "-q", "-c", "CREATE USER mlflow PASSWORD 'change-me'"],
                    ["createdb", "-O", "mlflow", "mlflow"]):
            subprocess.run(cmd, env={**os.environ, **pg_env}, check=True, capture_output=True)
        yield f"postgresql://mlflow:change-me@{pg_env['PGHOST']}:{pg_env['PGPORT']}/mlflow"
    finally:
        stop_file.touch()
        try:
            holder.wait(timeout=60)  # pg_virtualenv drops its cluster
        except subprocess.TimeoutExpired:
            holder.terminate()  # its trap drops the cluster on SIGTERM too
            holder.wait(timeout=60)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, MlflowServer]]:
    """`mlflow server` on PostgreSQL with the artifact proxy; the test stops and restarts it (an outage)."""
    root = tmp_path_factory.mktemp("team")
    with postgres(root) as db:
        server = MlflowServer(root / "server", workers=2, backend=db)
        try:
            server.start()
            yield root, server
        finally:
            server.stop()


def person(root: Path, server: MlflowServer, user: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "GANOPS_PIPELINE_ID", "DVC_EXP_NAME", "MLFLOW_EXPERIMENT_NAME")}
    return env | {"PATH": f"{BIN}:{env['PATH']}", "MLFLOW_TRACKING_URI": server.uri, "GANOPS_USER": user,
                  "GANOPS_OUTBOX": str(root / f"outbox-{user}"), "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
                  "GIT_AUTHOR_NAME": user, "GIT_AUTHOR_EMAIL": f"{user}@team", "GIT_COMMITTER_NAME": user,
                  "GIT_COMMITTER_EMAIL": f"{user}@team", "COLUMNS": "160"} | extra


def sh(cwd: Path, env: dict[str, str], *cmd: str, ok: bool = True,
       timeout: float = 1200) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert res.returncode == 0, f"{cmd} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def runs(client: MlflowClient, where: str, experiment: str = "ganops") -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], where) if exp else []


def test_a_team_shares_one_server_one_remote_and_one_champion(team: tuple[Path, MlflowServer]) -> None:
    root, server = team
    client = MlflowClient(server.uri)
    idx = subset(root / "idx")
    origin = root / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(REPO), str(origin)], check=True)
    alice, bob = person(root, server, "alice"), person(root, server, "bob")

    # ---- the team's repo: the smoke profile on the subset, a DVC remote in a temp dir, pushed to origin ----
    a = root / "alice"
    sh(root, alice, "git", "clone", "-q", str(origin), str(a))
    sh(a, alice, "ganops", "profile", "profiles/smoke.yaml", "-S", f"data.path={idx}")
    sh(a, alice, "dvc", "remote", "add", "-d", "store", str(root / "dvc-remote"))
    sh(a, alice, "git", "commit", "-qam", "team: smoke profile, DVC remote")
    sh(a, alice, "git", "push", "-q", "origin", "HEAD")

    # ---- 1. alice's dvc repro; the server dies mid-train and comes back 8 s later ----
    with open(root / "alice-repro.log", "w") as log:
        repro = subprocess.Popen(["dvc", "repro"], cwd=a, env=alice, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 900
        while repro.poll() is None and time.monotonic() < deadline:
            live = runs(client, "tags.`ganops.stage` = 'train' and attributes.status = 'RUNNING'")
            if live and live[0].data.metrics:  # training, and logging
                break
            time.sleep(0.5)
        assert repro.poll() is None, "train ended before the outage:\n" + (root / "alice-repro.log").read_text()[-3000:]
        server.stop()
        time.sleep(8)
        server.start()
        assert repro.wait(timeout=1800) == 0, (root / "alice-repro.log").read_text()[-4000:]
    out = (root / "alice-repro.log").read_text()
    assert "sent late" in out, out[-3000:]  # the calls made while the store was down were delivered
    (train,) = runs(client, "tags.`ganops.stage` = 'train'")
    assert train.info.status == "FINISHED" and "ganops.tracking_incomplete" not in train.data.tags
    curves = pd.read_csv(a / "plots/train.csv")
    assert len(client.get_metric_history(train.info.run_id, "train/d_loss")) == len(curves)  # every point
    epochs = pd.read_csv(a / "plots/train_epochs.csv")
    assert len(client.get_metric_history(train.info.run_id, "judge/fid")) == len(epochs)
    detail = json.loads((a / "metrics/train_detail.json").read_text())
    assert {k for k, v in detail.items() if isinstance(v, int | float)} <= set(train.data.metrics)
    assert not runs(client, "attributes.status = 'RUNNING'")  # no run (stage or parent) left RUNNING
    # artifacts over HTTP (the server's proxy): the run's copy is the clone's file
    got = client.download_artifacts(train.info.run_id, "train_epochs.csv", str(root / "dl"))
    assert Path(got).read_bytes() == (a / "plots/train_epochs.csv").read_bytes()

    # ---- 2. push; a teammate pulls and has nothing to run ----
    pushed = sh(a, alice, "dvc", "push")
    sh(a, alice, "git", "add", "-A")
    sh(a, alice, "git", "commit", "-qm", "alice: champion run")
    sh(a, alice, "git", "push", "-q", "origin", "HEAD")
    b = root / "bob"
    sh(root, bob, "git", "clone", "-q", str(origin), str(b))
    sh(b, bob, "dvc", "pull")
    status = sh(b, bob, "dvc", "status")
    assert "Data and pipelines are up to date" in status.stdout, pushed.stdout + status.stdout
    again = sh(b, bob, "dvc", "repro")
    assert "Running stage" not in again.stdout, again.stdout
    assert (b / "dvc.lock").read_bytes() == (a / "dvc.lock").read_bytes()

    # ---- 3. who ran what; the experiment's name is no dependency ----
    alices = runs(client, "tags.`mlflow.user` = 'alice'")
    assert len(alices) >= 9 and all(r.info.status == "FINISHED" for r in alices)  # 8 stages + the parent
    assert len({r.data.tags.get("mlflow.parentRunId") for r in alices if "ganops.stage" in r.data.tags}) == 1
    sh(b, bob | {"MLFLOW_EXPERIMENT_NAME": "bob-scratch"}, "dvc", "repro", "-f", "-s", "evaluate")
    (bobs,) = runs(client, "tags.`ganops.stage` = 'evaluate'", experiment="bob-scratch")
    assert bobs.data.tags["mlflow.user"] == "bob"
    bob_parent = client.get_run(bobs.data.tags["mlflow.parentRunId"])
    assert bob_parent.data.tags["mlflow.user"] == "bob"
    assert bob_parent.info.run_id != train.data.tags["mlflow.parentRunId"]
    sh(a, alice, "ganops", "profile", "profiles/smoke.yaml", "-S", f"data.path={idx}", "-S",
       "tracking.experiment=alice-scratch")
    assert "Data and pipelines are up to date" in sh(a, alice, "dvc", "status").stdout
    sh(a, alice, "git", "checkout", "params.yaml")

    # ---- 4. alice and bob promote at once (the champion alias removed first): exactly one champion ----
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    assert versions == [1, 2]  # alice's evaluate, bob's forced one
    client.delete_registered_model_alias(MODEL, "champion")
    procs = [subprocess.Popen(["ganops", "promote", "--version", str(v), "--out", f"{root}/race{v}.json"],
                              cwd=c, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for v, c, e in ((1, a, alice), (2, b, bob))]
    assert [p.wait(timeout=300) for p in procs] == [0, 0], [p.communicate() for p in procs]
    decisions = sorted(json.loads((root / f"race{v}.json").read_text())["decision"] for v in (1, 2))
    assert decisions == ["promoted", "refused"]  # equal FIDs: the second is no clear improvement
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    winner = next(v for v in (1, 2) if json.loads((root / f"race{v}.json").read_text())["decision"] == "promoted")
    assert int(champion) == winner

    # ---- 5. the champion from outside any repo ----
    outside = root / "outside"
    outside.mkdir()
    sh(outside, bob, "ganops", "sample", "--model", f"models:/{MODEL}@champion", "-n", "16", "--out", "grid.png")
    assert (outside / "grid.png").stat().st_size > 0
    lineage = sh(outside, bob, "ganops", "lineage", f"models:/{MODEL}@champion").stdout
    assert "fid200" in lineage and "warning" not in lineage and server.uri in lineage

    # ---- 6. CI with an empty MLFLOW_TRACKING_URI: the gate refuses to judge a local store ----
    ci_empty = bob | {"CI": "true", "MLFLOW_TRACKING_URI": ""}
    res = sh(b, ci_empty, "ganops", "promote", "--strict", ok=False)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "set but empty" in res.stderr and "--allow-local-store" in res.stderr
    assert not (b / "mlflow.db").exists()

    # ---- 7. the GPU job's script, twice on one commit, then with a broken remote ----
    job = person(root, server, "ci:bot", CI="true")
    variant = ("-S", f"data.path={idx}", "-S", "train.epochs=1")
    first = root / "job1"
    sh(root, job, "git", "clone", "-q", str(origin), str(first))
    one = sh(first, job, "bash", ".ci/train-and-gate.sh", "profiles/smoke.yaml", *variant, ok=False, timeout=1800)
    assert one.returncode in (0, 1), one.stdout[-3000:] + one.stderr[-3000:]  # 1: the gate refused the variant
    assert "Running stage 'train'" in one.stdout + one.stderr and "pushed experiment" in one.stdout
    second = root / "job2"
    sh(root, job, "git", "clone", "-q", str(origin), str(second))
    two = sh(second, job, "bash", ".ci/train-and-gate.sh", "profiles/smoke.yaml", *variant, ok=False, timeout=900)
    assert two.returncode == one.returncode, two.stdout[-3000:] + two.stderr[-3000:]
    assert "nothing to train" in two.stdout and "Running stage" not in two.stdout + two.stderr
    assert (second / "models/generator.pt").read_bytes() == (first / "models/generator.pt").read_bytes()
    (job_eval,) = runs(client, "tags.`ganops.stage` = 'evaluate' and tags.`mlflow.user` = 'ci:bot'")
    assert job_eval.data.tags["ganops.git_dirty"] == "false"  # the profile is in the experiment, not a dirty tree
    assert job_eval.data.tags["ganops.dvc_exp"].startswith("smoke-")
    (root / "not-a-dir").write_text("")
    third = root / "job3"
    sh(root, job, "git", "clone", "-q", str(origin), str(third))
    broken = sh(third, job | {"DVC_REMOTE_URL": str(root / "not-a-dir" / "remote")}, "bash", ".ci/train-and-gate.sh",
                "profiles/smoke.yaml", *variant, ok=False, timeout=600)
    assert broken.returncode == 2 and "job: error: dvc pull" in broken.stderr, broken.stdout[-2000:] + broken.stderr
    for clone in (a, b, first, second, third):  # the clones' DVC caches are a few hundred MB
        shutil.rmtree(clone, ignore_errors=True)
