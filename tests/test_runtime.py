"""Runtime resolution: `precision: auto` follows the CPU, and ONEDNN_MAX_CPU_ISA makes a bf16 CPU act as AVX2."""

from __future__ import annotations

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


def test_auto_follows_the_hardware_probe_without_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert cpu_has_bf16() is native
    assert autocast_dtype(CPU, "auto") == (torch.bfloat16 if native else None)
