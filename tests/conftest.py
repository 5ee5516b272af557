"""Shared fixtures: small real IDX datasets and image folders written to disk."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# .ci/run sets CI=true, which changes what `ganops promote --strict` accepts (a local store is refused): the tests
# that mean CI set it themselves, the others must behave the same on a laptop and in CI
os.environ.pop("CI", None)


@pytest.fixture(scope="session", autouse=True)
def _session_mlflow_store(tmp_path_factory: pytest.TempPathFactory):
    """Every stage command logs to MLflow. A test that does not pick a store (monkeypatch.setenv, or
    env= for a subprocess) logs to one session-wide temp sqlite store, never to the repo's mlflow.db
    or to whatever store the developer's shell points at."""
    from mlflow.tracking import MlflowClient

    old = os.environ.get("MLFLOW_TRACKING_URI")
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    # created now, so no test's output carries the "creating a new, empty one" notice of its first use
    MlflowClient(uri).search_experiments(max_results=1)
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="session", autouse=True)
def _session_outbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tracking calls a test's store did not answer are kept in a session temp dir, never in the developer's
    outbox (~/.local/state/ganops/outbox), whose runs the next real command would send."""
    old = os.environ.get("GANOPS_OUTBOX")
    os.environ["GANOPS_OUTBOX"] = str(path := tmp_path_factory.mktemp("outbox"))
    yield path
    if old is None:
        os.environ.pop("GANOPS_OUTBOX", None)
    else:
        os.environ["GANOPS_OUTBOX"] = old


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """mount(name, options) -> a tmpfs under tmp_path (unmounted after the test); skips where mounting is not
    permitted. A real file system that fills or is read-only, for root too."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in reversed(mounted):
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            # still open (a store's cached connection, say): detach it now, the kernel frees it once closed
            subprocess.run(["umount", "--lazy", str(d)], check=False)


def fill(directory: Path) -> None:
    """Write zeros into `directory` until its file system is full (0 bytes free)."""
    with pytest.raises(OSError, match="No space left"), (directory / "filler").open("wb", buffering=0) as f:
        while True:
            f.write(b"\0" * (64 << 10))


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 ndim, big-endian dims, raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def make_images(n: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """(n, size, size) uint8 with structure: a random blob on noise, never blank."""
    imgs = rng.integers(0, 40, size=(n, size, size), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(2, size - 10, size=2)
        imgs[i, r:r + 8, c:c + 8] = rng.integers(120, 255)
    return imgs


def write_idx_dataset(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0,
                      classes: int = 10) -> Path:
    """A small Fashion-MNIST-shaped IDX dataset (gzipped) under `root`; returns root."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % classes).astype(np.uint8)
        with gzip.open(root / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(idx_bytes(make_images(n, rng)))
        with gzip.open(root / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(idx_bytes(labels))
    return root


def write_params(path: Path, data: dict, extra: str = "") -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"seed": 0, "data": data}) + extra)
    return path


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return write_idx_dataset(tmp_path / "idx")


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three class folders of 12 PNGs each, 20×20 RGB (resized on prepare)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    root = tmp_path / "folder"
    for k, name in enumerate(("cat", "dog", "fox")):
        d = root / name
        d.mkdir(parents=True)
        for i in range(12):
            arr = rng.integers(0, 255, size=(20, 20, 3), dtype=np.uint8)
            arr[..., k] = 255
            Image.fromarray(arr).save(d / f"{i:03d}.png")
    return root


def git(root: Path, *args: str) -> str:
    """`git -C root args...` with a throwaway identity; stdout, stripped."""
    cmd = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com",
           "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow sqlite store; tests copy it instead of migrating (~2 s) each time."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    return db


# 127.0.0.1 without any proxy: urlopen's global opener keeps the proxy settings of its first use, which may
# be a test's dead proxy (test_prepare's offline download); the health check must not depend on test order.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1: the artifact proxy in `root`, the backend store `backend` (default a
    sqlite file in `root`), its log in root/server.log. stop() kills it (the whole process group: uvicorn, its
    workers and job runner, as a crash would); start() brings it back on the same port, database and artifacts,
    as the end of an outage."""

    def __init__(self, root: Path, workers: int = 1, backend: str | None = None) -> None:
        self.root, self.workers, self.proc = root, workers, None
        self.backend = backend or f"sqlite:///{root}/server.db"
        root.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        bindir = Path(sys.executable).parent
        cmd = [str(bindir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", str(self.workers), "--backend-store-uri", self.backend,
               "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts")]
        with open(self.root / "server.log", "a") as log:  # the child keeps its own descriptor
            # no job runner: tests run no server jobs, and a killed one leaves its huey directory in /dev/shm
            env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}",
                   "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with _DIRECT.open(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                if self.proc.poll() is not None:
                    pytest.fail("mlflow server exited:\n" + (self.root / "server.log").read_text()[-3000:])
                time.sleep(0.3)
        self.stop()
        pytest.fail(f"mlflow server did not answer within {timeout:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self.proc is not None:  # children the killed group left behind would keep the port
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[Callable[..., MlflowServer]]:
    """`mlflow_server(workers=1)` starts a real `mlflow server` and returns its `MlflowServer`; all are stopped
    at teardown."""
    servers: list[MlflowServer] = []

    def start(workers: int = 1) -> MlflowServer:
        server = MlflowServer(tmp_path / f"mlflow-server-{len(servers)}", workers)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
