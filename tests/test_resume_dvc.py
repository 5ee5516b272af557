"""A killed `dvc repro` resumes training: real DVC in a temp git repo runs the real prepare → pretrain → judge →
train stages on small data; the first repro is SIGKILLed (its whole process group, as a preempted runner is)
once train has written an epoch's last.pt, and the next `dvc repro` continues from it and ends with the bits of
an uninterrupted run. A changed param starts over, saying why (README "A killed run resumes")."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ganops.checkpoint import load_checkpoint
from tests.conftest import REPO, write_idx_dataset

STAGES = ("prepare", "pretrain", "judge", "train")
EPOCHS = 6
pytestmark = pytest.mark.slow


def dvc_repo(tmp_path: Path) -> Path:
    """This checkout's code and its dvc.yaml's first four stages, params shrunk to a few seconds an epoch."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for d in ("src", "pipelines"):
        shutil.copytree(REPO / d, repo / d, ignore=shutil.ignore_patterns("__pycache__"))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {s: stages[s] for s in STAGES}}, sort_keys=False))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["path"] = str(write_idx_dataset(tmp_path / "idx", n_train=1200, n_test=200))
    params["tracking"]["system_metrics"] = False
    params["model"].update(latent_dim=16, g_width=16, d_width=16, d_hidden=64)
    params["pretrain"].update(epochs=1, batch_size=64, num_threads=1)
    params["judge"].update(epochs=1, num_threads=1)
    params["train"].update(epochs=EPOCHS, batch_size=32, n_eval=200, num_threads=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (("git", "init", "-q"), ("dvc", "init", "-q"), ("git", "add", "-A"),
                ("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")):
        assert subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True).returncode == 0, cmd
    return repo


ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}


def repro(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["dvc", "repro", *args], cwd=repo, env=store_env(repo), capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def store_env(repo: Path) -> dict[str, str]:
    return ENV | {"MLFLOW_TRACKING_URI": f"sqlite:///{repo.parent}/mlflow.db"}


def outputs(repo: Path) -> tuple[dict[str, torch.Tensor], str, str]:
    """The shipped generator's weights, metrics/train.json and plots/train_epochs.csv: what must not depend on
    whether the run was killed (the files' run ids and timings may)."""
    state, _ = load_checkpoint(repo / "models/generator.pt", kind="generator")
    return (state["model"], (repo / "metrics/train.json").read_text(),
            (repo / "plots/train_epochs.csv").read_text())


def test_a_dvc_repro_killed_mid_train_resumes_to_the_bits_of_an_uninterrupted_run(tmp_path: Path) -> None:
    repo = dvc_repo(tmp_path)
    last = repo / "checkpoints/last.pt"
    victim = subprocess.Popen(["dvc", "repro"], cwd=repo, env=store_env(repo),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last.exists(), f"train wrote no last.pt (dvc repro exited {victim.poll()})"
    os.killpg(victim.pid, signal.SIGKILL)  # dvc and the stage command it runs, as a preempted runner
    victim.wait()
    state, _ = load_checkpoint(last, kind="gan")
    done = state["epochs_done"]
    assert 1 <= done < EPOCHS, f"killed after {done} epochs: nothing left to resume"

    resumed = repro(repo)
    assert "Running stage 'train'" in resumed.stdout
    line = next(s for s in resumed.stdout.splitlines() if s.startswith("resume:"))
    assert f"checkpoints/last.pt at step {state['step']} ({done} epochs done" in line, line
    assert "same params, data, inputs, code, torch and precision" in line, line
    killed = outputs(repo)
    assert json.loads((repo / "metrics/train_detail.json").read_text())["steps"] == EPOCHS * (1200 // 32)

    shutil.rmtree(repo / "checkpoints")  # the same stage again, uninterrupted
    whole = repro(repo, "-f", "-s", "train")
    assert "train: starting from step 0: no checkpoints/last.pt to continue" in whole.stdout, whole.stdout
    uninterrupted = outputs(repo)
    assert uninterrupted[0].keys() == killed[0].keys()
    assert [k for k in killed[0] if not torch.equal(killed[0][k], uninterrupted[0][k])] == []
    assert killed[1:] == uninterrupted[1:]

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = EPOCHS + 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    other = repro(repo)
    assert (f"train: starting from step 0: checkpoints/last.pt is another run's (train.epochs {EPOCHS} -> "
            f"{EPOCHS + 1})") in other.stdout, other.stdout
