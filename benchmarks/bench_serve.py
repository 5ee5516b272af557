"""The served generator under load: `mlflow models serve` on 127.0.0.1 against bounded concurrent clients.

    python benchmarks/bench_serve.py [--clients 8] [--requests 200] [--params params.yaml]

Registers a generator of `--params`' `model:` architecture (the default's) for the default data's shape
(28×28 gray, 10 classes) in a temp sqlite MLflow store, with seeded random weights: sampling speed does not
depend on them. Starts the real server (`--env-manager local`), waits for /ping, warms it up, then
`--clients` threads each send `--requests` valid requests one after another (1-4 rows, n in {1, 16, 64,
256}, classes random, missing or fixed) while one more thread sends the hostile requests (over the image
and the row bound, broken JSON, a wrong type, a negative n) `--hostile-gap` s apart. Prints requests/s,
images/s, p50/p99 latency of the valid requests, every hostile request's status and time, and the peak
resident memory of the server's process tree (sampled every 50 ms), beside the CPU model, its bf16 flags
and the load average before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.serving: the load the tests run too
from _peak import cpu_model  # noqa: E402

from ganops.checkpoint import key_from_env  # noqa: E402
from ganops.config import ModelConfig  # noqa: E402
from ganops.params import load_section  # noqa: E402
from ganops.tracking.generator_model import MAX_IMAGES, MAX_N, MAX_ROWS  # noqa: E402
from tests.serving import (  # noqa: E402
    ModelServer,
    Reply,
    RssSampler,
    hostile_requests,
    percentile,
    records_call,
    register_version,
    run_load,
    save_generator,
    valid_plans,
)

MB = 2**20


def bf16_flags() -> str:
    """What `grep -o -E 'avx512_bf16|amx_bf16' /proc/cpuinfo` finds, once each."""
    try:
        found = set(re.findall(r"\b(avx512_bf16|amx_bf16)\b", Path("/proc/cpuinfo").read_text()))
    except OSError:
        return "unknown"
    return " ".join(sorted(found)) or "none (no native bf16)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml", help="its model: section is the architecture served")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients, one request in flight each")
    ap.add_argument("--requests", type=int, default=200, help="valid requests per client")
    ap.add_argument("--hostile-gap", type=float, default=2.0, help="seconds between hostile requests")
    ap.add_argument("--seed", type=int, default=0, help="seed of the request mix")
    args = ap.parse_args()

    model = load_section(args.params, "model", ModelConfig)
    print(f"CPU: {cpu_model()}; bf16 flags: {bf16_flags()}; {os.cpu_count()} cores; "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"bounds: {MAX_ROWS} rows, n <= {MAX_N} a row, {MAX_IMAGES} images a request")
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "GANOPS_OUTBOX": str(root / "outbox"),
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    try:
        os.environ.update(env)  # the store and outbox registering uses
        key = key_from_env(os.environ)  # signed, as training signs, when a key is set: the server checks it
        uri = register_version(root, save_generator(root / "generator.pt", dataclasses.asdict(model), key=key))
        print(f"model: G of {args.params} model: (g_width {model.g_width}, latent {model.latent_dim}, conditional "
              f"{model.conditional}) for 1×28×28, 10 classes, drawn in fp32 on any CPU; untrained seeded weights "
              f"(speed does not depend on them){', signed with GANOPS_CHECKPOINT_KEY' if key else ''}")
        t0 = time.perf_counter()
        with ModelServer(uri, root, env) as server:
            at_rest = [f"{Path(p.cmdline()[1]).name} {p.memory_info().rss / MB:.0f} MB" for p in server.processes()]
            print(f"server up in {time.perf_counter() - t0:.1f} s: {server.url}; at rest {', '.join(at_rest)}")
            warm = run_load(server.url, [[records_call([{"seed": 0, "n": n}]) for n in (1, 16, 64, 256)]])
            assert all(not r.error for r in warm), [r.error for r in warm]
            plans = valid_plans(args.clients, args.requests, seed=args.seed)
            hostile = hostile_requests()
            with RssSampler(server) as rss:
                t0 = time.perf_counter()
                replies = run_load(server.url, plans, hostile, hostile_gap=args.hostile_gap)
            # the valid clients' time: the hostile client may still sleep between its calls after they end
            wall = max(r.end for r in replies if r.call.records is not None) - t0
            report(replies, wall, rss, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def report(replies: list[Reply], wall: float, rss: RssSampler, args: argparse.Namespace) -> None:
    valid = [r for r in replies if r.call.records is not None]
    ok = [r for r in valid if not r.error]
    images = sum(sum(row["n"] for row in r.call.records) for r in ok)
    ms = [r.seconds * 1000 for r in ok]
    print(f"{args.clients} clients × {args.requests} requests in {wall:.1f} s: {len(ok)}/{len(valid)} answered "
          f"(status 200, one row per image); {len(ok) / wall:.1f} requests/s, {images / wall:.0f} images/s "
          f"({images} images)")
    print(f"latency of valid requests: p50 {percentile(ms, 50):.0f} ms, p99 {percentile(ms, 99):.0f} ms, "
          f"max {max(ms):.0f} ms")
    for r in valid:
        if r.error:
            print(f"  FAILED {r.call.name}: {r.error}")
    for r in (r for r in replies if r.call.records is None):
        verdict = "refused" if not r.error else f"NOT REFUSED AS EXPECTED ({r.error})"
        print(f"hostile {r.call.name}: status {r.status} in {r.seconds * 1000:.0f} ms, {verdict}")
    print(f"server RSS (process tree): {rss.first_bytes / MB:.0f} MB at rest, peak {rss.peak_bytes / MB:.0f} MB "
          f"under load")


if __name__ == "__main__":
    main()
