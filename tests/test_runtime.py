"""Runtime resolution: `precision: auto` follows the CPU, and ONEDNN_MAX_CPU_ISA makes a bf16 CPU act as AVX2."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ganops.runtime import autocast_dtype, cpu_has_bf16

CPU = torch.device("cpu")


@pytest.mark.parametrize("isa", ["AVX2", "avx2", "AVX512_CORE", "SSE41"])
def test_an_isa_cap_without_bf16_makes_auto_resolve_to_fp32(monkeypatch: pytest.MonkeyPatch, isa: str) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert cpu_has_bf16() is False
    assert autocast_dtype(CPU, "auto") is None
    assert autocast_dtype(CPU, "fp32") is None
    assert autocast_dtype(CPU, "bf16") == torch.bfloat16  # an explicit choice is honoured (emulated if need be)


def _cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


def _probe(isa: str | None) -> tuple[bool, str]:
    """(cpu_has_bf16(), autocast_dtype(cpu, "auto")) in a fresh process: oneDNN reads its ISA cap once, at start."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    env |= {"ONEDNN_MAX_CPU_ISA": isa} if isa else {}
    code = ("import torch; from ganops.runtime import autocast_dtype, cpu_has_bf16; "
            "print(cpu_has_bf16(), autocast_dtype(torch.device('cpu'), 'auto'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    has, dtype = out.stdout.split()
    return has == "True", dtype


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not _cpu_flags(), reason="reads x86 /proc/cpuinfo")
def test_auto_is_bf16_exactly_on_cpus_whose_flags_give_onednn_bf16() -> None:
    """Expected from the CPU's own flags, not from the probe the code calls: oneDNN runs bf16 natively from
    AVX-512 core (F, BW, VL, DQ; AVX512_BF16 / AMX add faster kernels) or AVX-NE-CONVERT; an AVX2 cap turns it off."""
    flags = _cpu_flags()
    native = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags or "avx_ne_convert" in flags
    assert _probe(None) == (native, "torch.bfloat16" if native else "None"), sorted(flags & {
        "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "amx_bf16", "avx_ne_convert"})
    assert _probe("AVX2") == (False, "None")
