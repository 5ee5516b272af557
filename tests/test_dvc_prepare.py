"""The real `dvc.yaml` prepare stage, run by real DVC in a temp git repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, write_idx_dataset


def make_repo(tmp_path: Path, data: dict) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    for d in ("src", "pipelines"):
        shutil.copytree(REPO / d, repo / d, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(data)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env_run(repo, "git", "init", "-q")
    env_run(repo, "dvc", "init", "-q")
    env_run(repo, "git", "add", "-A")
    env_run(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    return repo


def env_run(repo: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}
    res = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res


def test_dvc_repro_prepare_then_noop(tmp_path):
    idx = write_idx_dataset(tmp_path / "idx", n_train=200, n_test=50)
    repo = make_repo(tmp_path, {"path": str(idx)})
    first = env_run(repo, "dvc", "repro", "prepare")
    assert "Running stage 'prepare'" in first.stdout
    assert (repo / "data/prepared/meta.json").is_file()
    assert (repo / "data/validation/docs/index.html").is_file()
    assert (repo / "dvc.lock").is_file()
    second = env_run(repo, "dvc", "repro", "prepare")
    assert "Running stage" not in second.stdout
    assert "didn't change" in second.stdout or "up to date" in second.stdout
    # a params change reruns the stage
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["limit"] = 100
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = env_run(repo, "dvc", "repro", "prepare")
    assert "Running stage 'prepare'" in third.stdout
    assert '"train": 100' in (repo / "data/prepared/meta.json").read_text()


def test_stage_commands_run_the_checkouts_own_code(tmp_path: Path) -> None:
    """`dvc exp run --queue` runs each experiment in a temporary copy of its commit: the stage
    command there must import that copy's `ganops`, not the editable install's (this checkout)."""
    copy = tmp_path / "exp-copy"
    for d in ("src", "pipelines"):
        shutil.copytree(REPO / d, copy / d, ignore=shutil.ignore_patterns("__pycache__"))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert all(s["cmd"].startswith("python -m pipelines.cli ") for s in stages.values()), \
        [s["cmd"] for s in stages.values()]
    probe = "import sys, pipelines.cli, ganops; print(ganops.__file__); print(sys.modules['pipelines'].__file__)"
    res = subprocess.run([sys.executable, "-c", probe], cwd=copy, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert res.returncode == 0, res.stderr[-2000:]
    ganops_file, pipelines_file = (Path(line).resolve() for line in res.stdout.split())
    assert ganops_file == (copy / "src/ganops/__init__.py").resolve()
    assert pipelines_file == (copy / "pipelines/__init__.py").resolve()
