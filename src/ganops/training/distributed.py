"""torchrun / DistributedDataParallel helpers: who am I, and the few collectives the GAN loop needs.

    dist = init_distributed(cfg.device)       # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun
    result = train_gan(..., dist=dist)        # rank 0 logs and checkpoints, the others wait
    cleanup_distributed()

Single process (no torchrun): `init_distributed()` returns DistInfo(0, 1, 0) and starts nothing;
every helper here is then a no-op, so the loop calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: global rank, number of processes, rank on this host."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, prints and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK env vars).

    Backend: nccl when training on CUDA (and the process's GPU is set to LOCAL_RANK),
    gloo on CPU. Without torchrun (WORLD_SIZE unset or 1) nothing is initialised.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if not tdist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        tdist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def cleanup_distributed() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(dist: DistInfo) -> None:
    if dist.enabled:
        tdist.barrier()


def all_reduce_mean(t: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """Mean of `t` over ranks, in place (NaN on any rank makes the result NaN everywhere)."""
    if dist.enabled:
        tdist.all_reduce(t)
        t.div_(dist.world_size)
    return t


def broadcast_buffers(modules: list[nn.Module], dist: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running stats) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last forward of an
    epoch each rank holds stats updated by its own batch; this makes them equal again
    before checkpoints and sampling.
    """
    if dist.enabled:
        for m in modules:
            for b in m.buffers():
                tdist.broadcast(b, src=0)


def gather_objects(obj: Any, dist: DistInfo) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank; [obj] single-process."""
    if not dist.enabled:
        return [obj]
    out: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out
