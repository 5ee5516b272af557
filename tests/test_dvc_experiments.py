"""DVC experiments of the real promote stage, run by real DVC in a temp git repo against a real sqlite
MLflow registry: a variant the gate refuses is still a finished, saved experiment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.test_promote import NAME, add_version, champion


def run(repo: Path, uri: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": uri, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def git_commit(repo: Path, uri: str, msg: str) -> None:
    for cmd in (("git", "add", "-A"), ("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", msg)):
        res = run(repo, uri, *cmd)
        assert res.returncode == 0, res.stderr


def promote_repo(tmp_path: Path, uri: str, version: str) -> Path:
    """A git + DVC repo holding this checkout's code and dvc.yaml's promote stage (its upstream stages left
    out: the candidate file they would write is committed instead)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for d in ("src", "pipelines"):
        shutil.copytree(REPO / d, repo / d, ignore=shutil.ignore_patterns("__pycache__"))
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["promote"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"promote": stage}}, sort_keys=False))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["promote"]["model_name"] = NAME
    params["tracking"]["system_metrics"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_candidate(repo, version)
    for cmd in (("git", "init", "-q"), ("dvc", "init", "-q")):
        assert run(repo, uri, *cmd).returncode == 0
    git_commit(repo, uri, "init")
    return repo


def write_candidate(repo: Path, version: str) -> None:
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models/candidate.json").write_text(json.dumps({"registered": True, "name": NAME, "version": version}))


def test_a_refused_variant_is_a_saved_experiment_and_the_champion_stays(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    good, worse = add_version(uri, 30.0, 0.020), add_version(uri, 80.0, 0.090)
    repo = promote_repo(tmp_path, uri, good)
    first = run(repo, uri, "dvc", "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    assert champion(uri) == good
    git_commit(repo, uri, "champion")

    write_candidate(repo, worse)
    git_commit(repo, uri, "a worse candidate")
    exp = run(repo, uri, "dvc", "exp", "run", "-n", "worse", "-S", "promote.min_improvement=1.0")
    assert exp.returncode == 0, exp.stdout + exp.stderr  # the gate refused; the experiment still ran
    assert "refused" in exp.stdout and champion(uri) == good

    listed = run(repo, uri, "dvc", "exp", "list", "--name-only")
    assert listed.stdout.split() == ["worse"], listed.stdout + listed.stderr
    shown = run(repo, uri, "dvc", "exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = [e for r in json.loads(shown.stdout) for e in r.get("experiments") or []]
    exps = {e["name"]: e["revs"][0]["data"] for e in rows}
    promote = exps["worse"]["metrics"]["metrics/promote.json"]["data"]
    assert promote == {"decision": "refused"}
    detail = json.loads((repo / "metrics/promote_detail.json").read_text())
    assert (detail["candidate_version"], detail["champion_after"]) == (worse, good) and "max_fid" in detail["reason"]
    assert exps["worse"]["params"]["params.yaml"]["data"]["promote"]["min_improvement"] == 1.0
