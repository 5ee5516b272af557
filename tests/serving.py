"""The served generator under load: `mlflow models serve` as a real process, a generator saved as training saves
one, and bounded concurrent clients with a few hostile ones. Shared by tests/test_serving.py,
tests/test_champion.py and benchmarks/bench_serve.py, so it imports no pytest.

    with ModelServer("models:/gen/1", root, env) as server, RssSampler(server) as rss:
        replies = run_load(server.url, valid_plans(8, 200, seed=0), hostile_requests())
    print(percentile([r.seconds for r in replies if not r.error], 99), rss.peak_bytes)
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch

from ganops.config import ModelConfig
from ganops.models.generator import build_generator
from ganops.models.generator import save_generator as save_generator_file

BIN = Path(sys.executable).parent  # `mlflow models serve` execs `uvicorn`, which must be on PATH
SIZES = (1, 16, 64, 256)  # n of one valid row: one image to a quarter of MAX_N


def save_generator(path: Path, model: Mapping[str, Any], seed: int = 0, key: bytes | None = None,
                   image_size: int = 28, channels: int = 1, num_classes: int = 10) -> Path:
    """A generator with seeded random weights, saved as `ganops train` saves one (kind "generator").
    Sampling speed does not depend on the weights, so an untrained one serves for timing too."""
    torch.manual_seed(seed)
    G = build_generator(ModelConfig(**model), image_size, channels, num_classes)
    config = {"model": dict(model), "image_size": image_size, "channels": channels, "num_classes": num_classes,
              "class_names": [str(i) for i in range(num_classes)], "data_hash": "abc123", "ema": False}
    return save_generator_file(path, G, config, key=key)


def register_version(root: Path, generator: Path, name: str = "gen") -> str:
    """`generator` as a new version of `name` in the store MLFLOW_TRACKING_URI names (a run of stage "register"
    in `root`); its models:/ URI."""
    from ganops.tracking import stage_run
    from ganops.tracking.model_registry import register_generator

    with stage_run("register", "serve", {"generator": str(generator)}, root, system_metrics=False) as run:
        return register_generator(run, generator, name, {}).model_uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    """The server exited or did not answer /ping; the message ends with its log's tail."""


class ModelServer:
    """`mlflow models serve -m URI --env-manager local` on 127.0.0.1 (a free port) in its own process group,
    run in `cwd` with `env`; its output in cwd/serve-<port>.log. stop() ends the whole group (the mlflow
    command and the uvicorn server it starts)."""

    def __init__(self, model_uri: str, cwd: Path, env: Mapping[str, str] | None = None) -> None:
        self.model_uri, self.cwd, self.proc = model_uri, Path(cwd), None
        self.env = {**(os.environ if env is None else env)}
        self.env["PATH"] = f"{BIN}:{self.env.get('PATH', '')}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.cwd / f"serve-{self.port}.log"

    def start(self, timeout: float = 120) -> ModelServer:
        cmd = [str(BIN / "mlflow"), "models", "serve", "-m", self.model_uri, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(self.port)]
        with open(self.log, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"mlflow models serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if request(self.url, "/ping", None, timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise ServerError(f"mlflow models serve did not answer /ping within {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else ""

    def processes(self) -> list[psutil.Process]:
        """The mlflow command and its descendants (uvicorn, its workers)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            top = psutil.Process(self.proc.pid)
            return [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> int:
        """Resident memory of the process tree now (VmRSS summed)."""
        total = 0
        for p in self.processes():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:  # ended between listing and reading
                pass
        return total

    def stop(self, grace: float = 10) -> None:
        """SIGTERM to the group, SIGKILL after `grace` s (a server busy in a long request may not stop)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # children the group leader outlived keep the port
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> ModelServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RssSampler(threading.Thread):
    """Peak resident memory of a server's process tree, sampled every `interval` s while in a `with` block."""

    def __init__(self, server: ModelServer, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.server, self.interval, self.peak_bytes = server, interval, 0
        self.first_bytes = server.rss_bytes()  # before the load: the loaded model at rest
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak_bytes = max(self.peak_bytes, self.server.rss_bytes())
            self._done.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join()


def request(url: str, path: str, body: bytes | None, timeout: float) -> tuple[int, bytes]:
    """(status, body) of a POST (GET when body is None) to url+path; OSError (TimeoutError too) if it
    does not answer in time."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Call:
    """One request of a plan: `records` (a valid one, as rows) or a hostile `body`, what it should get."""
    name: str
    body: bytes
    records: list[dict[str, int]] | None = None  # the rows of a valid request
    refusal: str | None = None  # a hostile request: text its 400's message must contain
    timeout: float = 60.0


@dataclass
class Reply:
    call: Call
    client: int
    status: int | None  # None: no answer within call.timeout (or the connection failed)
    seconds: float
    end: float  # time.perf_counter() when it came
    body: bytes = field(repr=False, default=b"")
    error: str = ""


def records_call(records: list[dict[str, int]], timeout: float = 60.0) -> Call:
    return Call(f"{len(records)} rows, {sum(r['n'] for r in records)} images",
                json.dumps({"dataframe_records": records}).encode(), records=records, timeout=timeout)


def valid_plans(clients: int, requests: int, seed: int = 0, num_classes: int = 10,
                sizes: tuple[int, ...] = SIZES, max_rows: int = 4) -> list[list[Call]]:
    """`clients` lists of `requests` valid calls each: 1..max_rows rows, n from `sizes`, seeds up to 2**31,
    and (num_classes > 0) a class per row that is random (-1), missing, or one of the classes."""
    rng = random.Random(seed)
    plans = []
    for _ in range(clients):
        plan = []
        for _ in range(requests):
            rows = []
            for _ in range(rng.randint(1, max_rows)):
                row = {"seed": rng.randrange(2**31), "n": rng.choice(sizes)}
                cls = rng.choice([-1, None, *range(num_classes)]) if num_classes else None
                if cls is not None:
                    row["class"] = cls
                rows.append(row)
            plan.append(records_call(rows))
        plans.append(plan)
    return plans


def hostile_requests(timeout: float = 10.0) -> list[Call]:
    """Requests a bounded server refuses at once with 400: 8 × 1,024 images (over MAX_IMAGES, every row within
    MAX_N), the issue's 4,000 rows × 1,024 (4.1 M images, over MAX_ROWS), broken JSON, a wrong type, a negative
    n. `timeout`: how long each may take. Fixed figures, so the same requests hit a model without bounds."""
    calls = [
        Call("8 rows × n 1024", json.dumps({"dataframe_records": [
            {"seed": i, "n": 1024} for i in range(8)]}).encode(), refusal="request asks for 8192 images"),
        Call("4000 rows × n 1024", json.dumps({"dataframe_records": [
            {"seed": i, "n": 1024} for i in range(4000)]}).encode(), refusal="request has 4000 rows"),
        Call("malformed JSON", b'{"dataframe_records": [{"seed": 1, "n": 2}',
             refusal="Ensure that input is a valid JSON"),  # MLflow's own refusals
        Call("n is a string", b'{"dataframe_records": [{"seed": 1, "n": "many"}]}',
             refusal="Failed to convert column n"),
        Call("negative n", b'{"dataframe_records": [{"seed": 1, "n": -5}]}', refusal="n must be in 1..1024, got -5"),
    ]
    for call in calls:
        call.timeout = timeout
    return calls


def _send(url: str, call: Call, client: int, keep_body: bool) -> Reply:
    t0 = time.perf_counter()
    try:
        status, body = request(url, "/invocations", call.body, call.timeout)
    except OSError as e:  # TimeoutError included: the server did not answer in time
        end = time.perf_counter()
        return Reply(call, client, None, end - t0, end, error=f"{type(e).__name__}: {e}")
    end = time.perf_counter()
    reply = Reply(call, client, status, end - t0, end, body if keep_body else b"")
    reply.error = check_reply(call, status, body)
    return reply


def check_reply(call: Call, status: int, body: bytes) -> str:
    """What is wrong with a reply at the level the load itself can check ("" if nothing): a valid call
    answered 200 with one row per image, a hostile one refused with 400 naming the reason."""
    if call.records is None:
        if status != 400:
            return f"status {status}, expected 400"
        return "" if call.refusal in body.decode(errors="replace") else f"message lacks {call.refusal!r}"
    if status != 200:
        return f"status {status}: {body[:300]!r}"
    got, want = len(json.loads(body)["predictions"]), sum(r["n"] for r in call.records)
    return "" if got == want else f"{got} images, expected {want}"


def run_load(url: str, plans: list[list[Call]], hostile: Sequence[Call] = (), hostile_gap: float = 1.0,
             keep_bodies: bool = False) -> list[Reply]:
    """Every plan sent in order by its own client thread (closed loop: one request in flight a client) while
    one more client sends the hostile calls, `hostile_gap` s apart (the first after one gap, into the load).
    Replies of all clients; valid ones keep their body if `keep_bodies`."""
    replies: list[Reply] = []
    lock = threading.Lock()

    def client(i: int, calls: list[Call], gap: float) -> None:
        for call in calls:
            if gap:
                time.sleep(gap)
            reply = _send(url, call, i, keep_bodies and call.records is not None)
            with lock:
                replies.append(reply)

    threads = [threading.Thread(target=client, args=(i, plan, 0.0)) for i, plan in enumerate(plans)]
    if hostile:
        threads.append(threading.Thread(target=client, args=(len(plans), list(hostile), hostile_gap)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0 < q <= 100) by nearest rank: the smallest value with q % of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
