"""Shared benchmark helpers: which CPU this is, its measured matmul peak in a given precision, FLOP counting.

A share of peak means something only against the peak of the precision the work runs in: a CPU
without native bf16 runs bf16 matmuls emulated (or not at all through oneDNN), so training there
uses fp32 (`precision: auto`) and is measured against the fp32 peak.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from ganops.runtime import cpu_has_bf16
from ganops.training.flops import count_flops

__all__ = ["count_flops", "cpu_model", "machine", "matmul_peak_gflops", "precision_name"]


def cpu_model() -> str:
    """The "model name" of /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """What every measured figure is printed beside: CPU model, native bf16 or not, torch threads."""
    bf16 = "native bf16" if cpu_has_bf16() else "no native bf16"
    return f"{cpu_model()}, {bf16}, {torch.get_num_threads()} threads"


def precision_name(amp: torch.dtype | None) -> str:
    """The precision a loop runs in, from its autocast dtype (None: fp32)."""
    if amp is None:
        return "fp32"
    name = str(amp).removeprefix("torch.").replace("bfloat16", "bf16").replace("float16", "fp16")
    return name if amp != torch.bfloat16 or cpu_has_bf16() else f"{name} (emulated: this CPU has no native bf16)"


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, seconds: float = 3.0) -> float:
    """Best sustained GFLOP/s of an n×n×n matmul in `dtype` on all torch threads.

    Emulated bf16 runs under 1 GFLOP/s, where one 2048³ product takes about half a minute: it is
    measured on 512³ so the figure comes in seconds (its peak is low at any size).
    """
    if dtype == torch.bfloat16 and not cpu_has_bf16():
        n = min(n, 512)
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up: oneDNN picks and JITs its kernel
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best
