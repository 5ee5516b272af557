"""Wall time of `ganops prepare` on full Fashion-MNIST, validation and Data Docs included.

    python benchmarks/bench_prepare.py [--repeats 3]

Runs the real command in a subprocess (so import time counts) into a temp dir and
prints each run, the median and the ratio to the 30 s target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 30.0
DATA = "/usr/share/datasets/fashion-mnist"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--path", default=DATA)
    args = ap.parse_args()
    ganops = Path(sys.executable).parent / "ganops"
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "params.yaml"
        params.write_text(f"seed: 42\ndata:\n  source: fashion-mnist\n  path: {args.path}\n")
        for i in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([str(ganops), "prepare", "--params", str(params), "--out", f"{tmp}/prepared",
                            "--raw", f"{tmp}/raw", "--validation", f"{tmp}/validation"],
                           check=True, env={**os.environ, "GX_ANALYTICS_ENABLED": "false"},
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
            print(f"run {i + 1}: {times[-1]:.2f} s")
    med = statistics.median(times)
    print(f"ganops prepare, full Fashion-MNIST (70k images) incl. GX validation + Data Docs: "
          f"median {med:.2f} s over {len(times)} runs; target {TARGET_S:.0f} s; "
          f"target/measured = {TARGET_S / med:.1f}x")


if __name__ == "__main__":
    main()
