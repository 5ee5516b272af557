"""Shared benchmark helpers: the CPU's measured bf16/fp32 matmul peak and FLOP counting."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def matmul_peak_gflops(dtype: torch.dtype = torch.bfloat16, n: int = 2048, seconds: float = 3.0) -> float:
    """Best sustained GFLOP/s of an n×n×n matmul in `dtype` on all torch threads."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b  # warm-up: oneDNN picks and JITs its kernel
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        dt = time.perf_counter() - t0
        best = max(best, 5 * 2 * n**3 / dt / 1e9)
    return best


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs torch's FlopCounterMode sees while running `fn` (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())
