"""The runtime below every network and loop: device, precision, autocast, seeding, uint8 <-> float.

Lives under `ganops`, not `ganops.training`, so `models`, `metrics` and `data` can use it without
depending on the training loops (tests/test_layering.py keeps it so).
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ganops.config import RuntimeConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from ganops.errors import GanopsError

        raise GanopsError("device: cuda requested but torch sees no CUDA device")
    return torch.device(name)


# oneDNN's own switch for running as a lesser CPU would: with ONEDNN_MAX_CPU_ISA at one of these, oneDNN
# has no bf16 kernels, so `precision: auto` must resolve to fp32 exactly as on an AVX2-only machine.
# `ONEDNN_MAX_CPU_ISA=AVX2 bash setup.sh test` is how .ci/run checks the fp32 path on a bf16 CPU.
_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 (AVX-512 BF16 / AMX), where autocast is fast."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() in _ISAS_WITHOUT_BF16:
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 where the hardware has it (CPU AVX-512 BF16, CUDA Ampere+), else None (fp32)."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if precision == "bf16" or cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for forward passes; weights and optimiser state stay fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def setup_runtime(cfg: RuntimeConfig) -> tuple[torch.device, torch.dtype | None]:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    return device, autocast_dtype(device, cfg.precision)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for data order and latents."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def to_model_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] → float (B, C, H, W) in [-1, 1] on `device`."""
    x = x.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)  # (B, C, H, W)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] → uint8 [0, 255], rounding like the prepared data."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@contextlib.contextmanager
def progress_bar(total: int, description: str) -> Iterator[Any]:
    """A rich progress bar (ETA, running loss in the description); plain when not a TTY."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, disable=not sys.stderr.isatty(), transient=False) as prog:
        task = prog.add_task(description, total=total, info="")

        class Bar:
            def advance(self, n: int = 1, info: str | None = None) -> None:
                prog.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield Bar()
