"""Exact resume of the adversarial loop (no mocks): mid-epoch, after SIGKILL of a real process, and the
resume="auto" rule that `dvc repro` runs (a last.pt is continued only when it is this run's). The loop's other
behaviour is tests/test_gan_training.py, whose tiny configs and helpers these share."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from ganops.checkpoint import load_checkpoint
from ganops.errors import GanopsError
from tests.gan_worker import tiny_data
from tests.test_gan_training import (  # noqa: F401  (_restore_threads: an autouse fixture, active here too)
    FAST,
    REPO,
    TESTS,
    TINY,
    _last_states,
    _restore_threads,
    all_state_equal,
    tensors_equal,
    train,
)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return tiny_data(128)


def test_resume_mid_epoch_continues_exactly(tmp_path: Path, data: Any) -> None:
    """max_steps stops inside epoch 1; resuming without it ends where an uninterrupted run ends."""
    cfg = dataclasses.replace(FAST, diffaugment="translation,cutout", d_steps=2)  # 4 G steps per epoch
    full = train(tmp_path / "full", data, cfg)
    train(tmp_path / "cut", data, dataclasses.replace(cfg, max_steps=3))
    state, _ = load_checkpoint(tmp_path / "cut" / "last.pt", kind="gan")
    assert (state["step"], state["epochs_done"], state["epoch_step"]) == (3, 0, 3)
    resumed = train(tmp_path / "cut", data, cfg, resume=True)
    assert resumed.metrics["steps"] == full.metrics["steps"] == 8
    assert all_state_equal(full, resumed) == []
    assert resumed.history["step"].tolist() == [2, 3, 4, 6, 8]  # + the row written where max_steps stopped


def _worker(ckpt: Path, *args: str) -> list[str]:
    return [sys.executable, str(TESTS / "gan_worker.py"), str(ckpt), *args]


def test_resume_after_sigkill_is_bit_identical(tmp_path: Path) -> None:
    """Kill a run mid-epoch 2 (after epoch 1's last.pt), resume it: the same bits as an uninterrupted run."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    flag = tmp_path / "paused"
    full = subprocess.Popen(_worker(tmp_path / "full"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = subprocess.Popen(_worker(tmp_path / "killed", "--pause-at", "20", "--flag", str(flag)), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not flag.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "worker never reached step 20"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    before = _last_states(tmp_path / "killed" / "last.pt")
    assert (before["step"], before["epochs_done"], before["epoch_step"]) == (16, 1, 0)  # epoch 1's checkpoint

    resumed = subprocess.run(_worker(tmp_path / "killed", "--resume"), env=env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resume:" in resumed.stdout and "at step 16" in resumed.stdout
    out, _ = full.communicate(timeout=120)
    assert full.returncode == 0, out

    a, b = _last_states(tmp_path / "full" / "last.pt"), _last_states(tmp_path / "killed" / "last.pt")
    assert a["step"] == b["step"] == 48
    for key in ("G", "D", "ema"):
        assert tensors_equal(a[key], b[key]) == [], key
    assert a["opt_g"]["state"].keys() == b["opt_g"]["state"].keys()
    for k in a["opt_d"]["state"]:
        assert all(torch.equal(a["opt_d"]["state"][k][n], b["opt_d"]["state"][k][n]) for n in ("exp_avg", "exp_avg_sq"))
    assert torch.equal(a["rng"][0]["streams"]["augment"], b["rng"][0]["streams"]["augment"])


def test_auto_resume_continues_only_this_runs_checkpoint_and_says_why_not(tmp_path: Path, data: Any) -> None:
    """resume="auto" (dvc.yaml's train): last.pt is continued when params, identity and runtime all match,
    bit-identically, including a finished one (nothing left to train, the same metrics); otherwise step 0."""
    ident = {"data": "d1", "code": "c1"}
    full = train(tmp_path / "full", data, identity=ident)
    logs: list[str] = []
    fresh = train(tmp_path / "run", data, resume="auto", identity=ident, log=logs.append)
    assert fresh.resumed_from is None
    assert f"train: starting from step 0: no {tmp_path / 'run' / 'last.pt'} to continue" in logs

    def killed_after_epoch_1(line: str) -> None:  # the epoch line is logged once its last.pt is written
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", data, identity=ident, log=killed_after_epoch_1)
    logs.clear()
    resumed = train(tmp_path / "cut", data, resume="auto", identity=ident, log=logs.append)
    assert resumed.resumed_from == 8 and all_state_equal(full, resumed) == []
    assert any(line.startswith("resume:") and "at step 8" in line and "same params, data" in line for line in logs)
    done = train(tmp_path / "cut", data, resume="auto", identity=ident)  # finished: continued with no step left
    assert done.resumed_from == 16 and all_state_equal(full, done) == []
    assert {k: done.metrics[k] for k in ("train_flops", "d_loss", "best_score") if k in done.metrics} == \
        {k: full.metrics[k] for k in ("train_flops", "d_loss", "best_score") if k in full.metrics}

    for why, kw in (("train.epochs 2 -> 3", {"cfg": dataclasses.replace(FAST, epochs=3), "identity": ident}),
                    ("the code differs", {"identity": {**ident, "code": "c2"}}),
                    ("the data differs", {"identity": {**ident, "data": "d2"}})):
        logs.clear()
        case = tmp_path / why.replace(" ", "_")
        shutil.copytree(tmp_path / "cut", case)  # each case starts from the finished run's last.pt
        other = train(case, data, resume="auto", log=logs.append, **kw)
        assert other.resumed_from is None and logs[0].startswith("train: starting from step 0:"), logs[0]
        assert why in logs[0] and "is another run's" in logs[0], logs[0]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "last.pt").write_bytes(b"not a checkpoint")
    logs.clear()
    assert train(tmp_path / "bad", data, resume="auto", identity=ident, log=logs.append).resumed_from is None
    assert "unreadable checkpoint" in logs[0], logs[0]


def test_resume_refuses_missing_checkpoint_and_other_architecture(tmp_path: Path, data: Any) -> None:
    with pytest.raises(GanopsError, match="no checkpoint to resume from"):
        train(tmp_path, data, resume=True)
    train(tmp_path, data, dataclasses.replace(FAST, max_steps=1))
    with pytest.raises(GanopsError, match=r"architecture differs.*g_width: checkpoint 4, now 8"):
        train(tmp_path, data, model=dataclasses.replace(TINY, g_width=8), resume=True)
