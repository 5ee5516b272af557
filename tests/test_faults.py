"""Faults from outside the pipeline: SIGTERM mid-stage, output paths that cannot be written, a full or
read-only disk. Real subprocesses, signals, mounts and MLflow stores; nothing mocked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ganops.errors import GanopsError
from ganops.io import write_atomic, write_error_of
from pipelines.cli import app
from tests.conftest import REPO, write_idx_dataset, write_params

runner = CliRunner()
MODEL = {"latent_dim": 16, "g_width": 8, "d_width": 8, "conditional": False, "spectral_norm": False, "d_hidden": 0}
# many epochs: a run that is still training whenever the test signals it
LONG_TRAIN = {"epochs": 10_000, "batch_size": 32, "log_every": 1, "n_eval": 50, "init_from_autoencoder": False,
              "loss": "bce"}


def runs(uri: str, stage: str) -> list:
    """The store's runs of `stage`; [] while a child process is still creating the store."""
    client = MlflowClient(uri)
    try:
        ids = [e.experiment_id for e in client.search_experiments()]
        return client.search_runs(ids, filter_string=f"tags.`ganops.stage` = '{stage}'") if ids else []
    except Exception:  # locked by the child for a moment
        return []


def ganops(args: list[str], cwd: Path, uri: str) -> subprocess.Popen:
    """`python -m pipelines.cli ...` with this checkout's code, logging to `uri`."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}", "MLFLOW_TRACKING_URI": uri,
           "OMP_NUM_THREADS": "1"}
    # A background job of a shell without job control (`bash .ci/run > log &` in a script) starts with SIGINT
    # ignored and its children inherit that, so Python installs no Ctrl-C handler and a SIGINT test's child
    # trains on. The child starts as a terminal's foreground process does, Ctrl-C at its default (a Python
    # handler resets to it across exec).
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:  # -X faulthandler: a child that hangs can be made to print every thread's stack (see exits_within)
        return subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "pipelines.cli", *args], cwd=cwd,
                                env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def exits_within(proc: subprocess.Popen, seconds: float) -> tuple[str, str]:
    """(stdout, stderr) of `proc` once it exits; if it has not within `seconds`, fail with the stack of each of its
    threads (SIGABRT makes faulthandler print them) and its last output, so a rare hang says where it hangs."""
    try:
        return proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"still running {seconds:.0f} s after the signal; its threads then:\n{err[-8000:]}\n"
                    f"its last output:\n{out[-2000:]}")


def wait_until(cond: Callable[[], object], proc: subprocess.Popen, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + 300
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"exited {proc.returncode} before {what}:\n{out}\n{err}")
        assert time.monotonic() < deadline, f"no {what} within 300 s"
        time.sleep(poll)


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def temp_leftovers(root: Path) -> list[Path]:
    """What an interrupted write leaves: atomic_file's `.<name>.*.tmp`, prepare's `.<dir>.tmp-*` / `.old-*`."""
    return [p for p in root.rglob(".*") if p.name.endswith(".tmp") or ".tmp-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small prepared data, made once for the module (read-only for the tests)."""
    root = tmp_path_factory.mktemp("prepared")
    write_idx_dataset(root / "idx", n_train=160, n_test=60)
    params = write_params(root / "params.yaml", {"source": "fashion-mnist", "path": str(root / "idx")})
    res = runner.invoke(app, ["prepare", "--params", str(params), "--out", str(root / "data"),
                              "--validation", str(root / "validation")])
    assert res.exit_code == 0, res.output
    return root / "data"


@pytest.fixture
def store(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite store for this test (in-process commands and subprocesses alike)."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def write_train_params(root: Path) -> None:
    params = {"seed": 3, "tracking": {"experiment": "t", "system_metrics": False}, "model": MODEL,
              "train": LONG_TRAIN}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


# ---------------------------------------------------------------- SIGTERM (and Ctrl-C) mid-stage


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                   (signal.SIGINT, 130, "interrupted")])
def test_signal_mid_training_ends_the_run_killed_with_no_outputs_or_temp_files(
        tmp_path: Path, prepared: Path, store: str, sig: int, code: int, said: str) -> None:
    write_train_params(tmp_path)
    proc = ganops(["train", "--params", "params.yaml", "--data", str(prepared), "--model-out", "gen.pt",
                   "--checkpoints", "ckpt", "--metrics", "train.json", "--plots", "train.csv"], tmp_path, store)
    # mid-work: an epoch done (last.pt written) and its run RUNNING
    wait_until(lambda: (tmp_path / "ckpt" / "last.pt").is_file() and runs(store, "train"), proc, "an epoch")
    assert [r.info.status for r in runs(store, "train")] == ["RUNNING"]
    os.kill(proc.pid, sig)
    out, err = exits_within(proc, 120)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == said and "Traceback" not in err, err
    assert [r.info.status for r in runs(store, "train")] == ["KILLED"]
    assert not any((tmp_path / f).exists() for f in ("gen.pt", "train.json", "train_detail.json", "train.csv")), \
        "half-done outputs"
    assert temp_leftovers(tmp_path) == []


@pytest.mark.slow
def test_sigterm_while_prepare_writes_removes_its_temp_dir_and_kills_the_run(tmp_path: Path, store: str) -> None:
    # 12k images: their temp dir lives ~0.1 s, long enough to stop the process inside it
    write_idx_dataset(tmp_path / "idx", n_train=12_000, n_test=1_000)
    write_params(tmp_path / "params.yaml", {"source": "fashion-mnist", "path": "idx"},
                 extra="tracking:\n  system_metrics: false\n")
    proc = ganops(["prepare", "--params", "params.yaml", "--out", "prepared", "--validation", "validation"],
                  tmp_path, store)
    temp_dirs = lambda: list(tmp_path.glob(".prepared.tmp-*"))  # noqa: E731
    wait_until(temp_dirs, proc, "the temp dir", poll=0.001)
    os.kill(proc.pid, signal.SIGSTOP)  # freeze it mid-write, so the SIGTERM lands there
    while not stopped(proc.pid):
        time.sleep(0.001)
    caught = bool(temp_dirs())
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    out, err = exits_within(proc, 120)
    assert caught, "prepare finished its temp dir before it was stopped"
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM)", err
    assert temp_leftovers(tmp_path) == []
    out_dir = tmp_path / "prepared"
    if out_dir.exists():  # only if the signal came after the rename: then it is complete
        meta = json.loads((out_dir / "meta.json").read_text())
        assert all((out_dir / f).is_file() for f in meta["files"])
    assert [r.info.status for r in runs(store, "prepare")] == ["KILLED"]


# ---------------------------------------------------------------- outputs that cannot be written

# every stage command with a directory where one of its output files goes; the check comes before
# reading any input (none exists here), so the error names the output, not a missing input
DIR_FOR_FILE = [
    ["pretrain", "--metrics", "taken"],
    ["judge", "--model-out", "taken"],
    ["train", "--plots", "taken"],
    ["reference", "--out", "taken"],
    ["floor", "--metrics", "taken"],
    ["evaluate", "--candidate", "taken"],
    ["promote", "--out", "taken", "--version", "1"],
    ["sample", "--model", "gen.pt", "--out", "taken"],
]


@pytest.mark.parametrize("args", DIR_FOR_FILE, ids=lambda a: a[0])
def test_every_stage_refuses_a_directory_where_its_output_file_goes_before_reading_inputs(
        tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    (tmp_path / "taken").mkdir()
    res = runner.invoke(app, [*args, *(["--params", "params.yaml"] if args[0] != "sample" else [])])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == "error: taken: is a directory (this output is a file)", res.output
    assert list((tmp_path / "taken").iterdir()) == []


def test_prepare_refuses_a_file_where_its_output_directory_goes(tmp_path: Path, store: str) -> None:
    params = write_params(tmp_path / "params.yaml", {"source": "fashion-mnist", "path": str(tmp_path / "idx")})
    (tmp_path / "prepared").write_text("not a directory\n")
    res = runner.invoke(app, ["prepare", "--params", str(params), "--out", str(tmp_path / "prepared"),
                              "--validation", str(tmp_path / "validation")])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == f"error: {tmp_path / 'prepared'}: is a file (this output is a directory)"


def train_with(tmp_path: Path, prepared: Path, **outputs: str):
    """`ganops train` on real prepared data with LONG_TRAIN (hours of work if it started)."""
    write_train_params(tmp_path)
    paths = {"model-out": "gen.pt", "checkpoints": "ckpt", "metrics": "train.json", "plots": "train.csv", **outputs}
    return runner.invoke(app, ["train", "--params", str(tmp_path / "params.yaml"), "--data", str(prepared),
                               *[a for k, v in paths.items() for a in (f"--{k}", v)]])


def assert_refused_before_work(res, tmp_path: Path, store: str, message: str) -> None:
    assert res.exit_code == 2, res.output
    assert res.output.strip() == f"error: {message}", res.output
    assert not (tmp_path / "ckpt").exists(), "training started"
    assert runs(store, "train") == [], "an MLflow run started"


def test_train_with_a_file_where_an_output_directory_is_needed_does_no_work(
        tmp_path: Path, prepared: Path, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("blocker").write_text("a file\n")
    res = train_with(tmp_path, prepared, **{"model-out": "blocker/gen.pt"})
    assert_refused_before_work(res, tmp_path, store, "blocker/gen.pt: parent blocker is a file, not a directory")
    res = train_with(tmp_path, prepared, checkpoints="blocker")
    assert_refused_before_work(res, tmp_path, store, "blocker: is a file (this output is a directory)")


def test_train_onto_a_read_only_file_system_does_no_work(tmp_path: Path, prepared: Path, store: str,
                                                         monkeypatch: pytest.MonkeyPatch, tmpfs) -> None:
    monkeypatch.chdir(tmp_path)
    tmpfs("ro", "size=64k,ro")  # read-only for root too, unlike chmod
    res = train_with(tmp_path, prepared, metrics="ro/metrics/train.json")
    assert_refused_before_work(res, tmp_path, store,
                               "ro/metrics/train.json: cannot write in ro: read-only file system")


def test_train_onto_a_full_disk_does_no_work(tmp_path: Path, prepared: Path, store: str,
                                             monkeypatch: pytest.MonkeyPatch, tmpfs) -> None:
    monkeypatch.chdir(tmp_path)
    full = tmpfs("full", "size=1m")
    with pytest.raises(OSError, match="No space left"), (full / "filler").open("wb") as f:
        f.write(b"\0" * (2 << 20))
    res = train_with(tmp_path, prepared, **{"model-out": "full/gen.pt"})
    assert_refused_before_work(res, tmp_path, store, "full/gen.pt: no space left on the file system of full "
                                                     "(0 bytes free)")


@pytest.mark.slow
def test_prepare_running_out_of_space_mid_write_is_one_line_and_leaves_no_temp_dir(
        tmp_path: Path, store: str, tmpfs) -> None:
    disk = tmpfs("disk", "size=2m")  # passes the up-front check (1 MiB free), too small for 4 MB of images
    write_idx_dataset(tmp_path / "idx", n_train=5_000, n_test=200)
    params = write_params(tmp_path / "params.yaml", {"source": "fashion-mnist", "path": str(tmp_path / "idx")})
    res = runner.invoke(app, ["prepare", "--params", str(params), "--out", str(disk / "prepared"),
                              "--validation", str(tmp_path / "validation")])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {disk / 'prepared'}: cannot write: no space left "
                                                   "on device ("), res.output
    assert list(disk.iterdir()) == [], "temp dir or partial output left on the full disk"
    assert [r.info.status for r in runs(store, "prepare")] == ["FAILED"]


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temp_file(tmp_path: Path, tmpfs) -> None:
    disk = tmpfs("disk", "size=2m")
    target = write_atomic(disk / "metrics.json", b"{}\n")
    with pytest.raises(GanopsError, match=r"metrics\.json: cannot write: no space left on device \(\d+ bytes free\)"):
        write_atomic(target, b"x" * (4 << 20))
    assert sorted(p.name for p in disk.iterdir()) == ["metrics.json"]
    assert target.read_bytes() == b"{}\n"


def test_a_write_failing_with_enospc_becomes_one_line_naming_the_file() -> None:
    """/dev/full fails every write with ENOSPC (a library's wrapped "(os error 28)" is covered by prepare's test)."""
    if not Path("/dev/full").is_char_device():
        pytest.skip("no /dev/full character device here")
    with pytest.raises(OSError) as failed, open("/dev/full", "wb") as f:
        f.write(b"x")
        f.flush()
    err = write_error_of("out/data.bin", failed.value)
    assert err is not None and str(err).startswith("out/data.bin: cannot write: no space left on device"), err
    assert write_error_of("x", ValueError("not a write error")) is None
