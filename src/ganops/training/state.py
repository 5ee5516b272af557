"""Where a GAN run is and how to get back there: data order, RNG streams, checkpoint content.

    EpochPlan            which index batches each rank trains on in each epoch
    stream_generator     the loop's seeded torch.Generator streams (latent, augment)
    capture/restore_rng  every RNG state of a process, checkpointable
    write/read_gan_checkpoint, check_resumable   last.pt / best.pt and the resume checks
    run_identity, continues                       whether last.pt is this run's (resume="auto")
    generator_from_checkpoint                     the shipped G of last.pt / best.pt
    StepMeter            per-step stats kept on device until a log point; throughput

A run is reproducible to the bit when every source of randomness is either a pure
function of (seed, epoch) or saved here:
- data order: `DistributedSampler(seed=cfg.seed).set_epoch(epoch)`, a function of
  (seed, epoch, rank); nothing to save, the position inside the epoch is saved instead;
- latents, fake labels, DiffAugment parameters, GP mixing weights: `torch.Generator`
  streams seeded from (seed, name, rank), saved after every checkpointed step;
- torch's global CPU (and CUDA) RNG, numpy and python `random`: saved too, in case a
  caller's score function or a library draws from them.
States of every rank are saved (rank r resumes from entry r).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from ganops.checkpoint import load_checkpoint, save_checkpoint
from ganops.config import ModelConfig, TrainConfig
from ganops.errors import GanopsError
from ganops.models.generator import build_generator
from ganops.training.distributed import DistInfo, all_reduce_mean

STREAMS = ("latent", "augment")  # the loop's own torch.Generator streams
STATS = ("d_loss", "g_loss", "d_real", "d_fake")  # per-step values kept on device until a log point


def stream_generator(seed: int, name: str, rank: int = 0) -> torch.Generator:
    """A CPU generator for stream `name` of `rank`, seeded independently of the others."""
    h = hashlib.sha256(f"ganops/{seed}/{name}/{rank}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") >> 1)


def capture_rng(streams: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG state of this process, as tensors / ints (loadable with weights_only)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "streams": {k: g.get_state() for k, g in streams.items()},
    }


def restore_rng(state: dict[str, Any], streams: dict[str, torch.Generator]) -> None:
    """Inverse of `capture_rng`, in place on the global RNGs and `streams`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    for k, g in streams.items():
        g.set_state(state["streams"][k])


class EpochPlan:
    """Which images each rank sees: DistributedSampler order cut into per-rank batches.

    The per-rank batch is cfg.batch_size // world_size, so the global batch (and with it
    the meaning of lr and batch_size) does not change with the number of processes.
    Each G step consumes d_steps batches (a fresh real batch per D update).
    """

    def __init__(self, n: int, cfg: TrainConfig, dist: DistInfo) -> None:
        self.batch = cfg.batch_size // dist.world_size
        if self.batch < 2:
            raise GanopsError(f"train.batch_size {cfg.batch_size} over {dist.world_size} processes leaves "
                              f"{self.batch} image(s) per rank; BatchNorm needs at least 2")
        self.d_steps = cfg.d_steps
        self.sampler = DistributedSampler(range(n), num_replicas=dist.world_size, rank=dist.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=True)
        per_rank = len(self.sampler)
        n_batches = per_rank // self.batch or int(per_rank >= 2)  # one short batch on tiny data
        self.steps_per_epoch = n_batches // cfg.d_steps
        if self.steps_per_epoch == 0:
            raise GanopsError(f"{n} training images are too few for batch_size {cfg.batch_size} × d_steps "
                              f"{cfg.d_steps} over {dist.world_size} process(es)")

    def epoch(self, epoch: int) -> list[list[torch.Tensor]]:
        """Index batches for `epoch` (a pure function of seed, epoch and rank), grouped per G step."""
        self.sampler.set_epoch(epoch)
        idx = torch.tensor(list(self.sampler), dtype=torch.long)
        size = min(self.batch, len(idx))
        cuts = list(idx[: len(idx) // size * size].view(-1, size))
        d = self.d_steps
        return [cuts[i * d:(i + 1) * d] for i in range(self.steps_per_epoch)]


def run_config(cfg: TrainConfig, model_cfg: ModelConfig, shape: tuple[int, int, int],
               num_classes: int, world_size: int) -> dict[str, Any]:
    """The config stored with a checkpoint: enough to rebuild G and D and to check a resume."""
    c, h, _ = shape
    return {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_cfg),
            "data": {"channels": c, "image_size": h, "num_classes": num_classes},
            "world_size": world_size}


ARCH_KEYS = ("model", "data")  # what must match for the saved weights to fit
# Train keys that change the run but not the shapes: allowed on resume, reported.
_REPORTED = ("batch_size", "loss", "d_steps", "diffaugment", "ema_decay", "seed", "g_lr", "d_lr")


def check_resumable(saved: dict[str, Any], current: dict[str, Any], where: str) -> list[str]:
    """GanopsError if the saved architecture differs; notes on other changed settings."""
    diffs = [f"{sec}.{k}: checkpoint {saved.get(sec, {}).get(k)!r}, now {v!r}"
             for sec in ARCH_KEYS for k, v in current[sec].items() if saved.get(sec, {}).get(k) != v]
    if diffs:
        raise GanopsError(f"{where}: cannot resume, the architecture differs ({'; '.join(diffs)}); "
                          f"use the checkpoint's model settings or start without resume")
    train = saved.get("train", {})
    notes = [f"train.{k} {train.get(k)!r} -> {current['train'][k]!r}" for k in _REPORTED
             if train.get(k) != current["train"][k]]
    if saved.get("world_size") != current["world_size"]:
        notes.append(f"world size {saved.get('world_size')} -> {current['world_size']}")
    return notes


# `resume="auto"` (what `dvc repro` runs): last.pt is continued only when it is this run's, so a killed or
# preempted run loses at most an epoch and the result is the bits an uninterrupted run gives on this machine.
# This run's = the same config (train, model, data shape, world size) and the same identity: what the
# command puts there (the prepared data's hash, the digests of the input files and of the code) and what
# the core adds here (torch version, device, autocast dtype: another CPU kind or precision trains other bits).
_RUNTIME = ("torch", "device", "precision")


def run_identity(given: dict[str, Any], device: torch.device, amp: torch.dtype | None) -> dict[str, Any]:
    """`given` (digests by name: data, code, autoencoder, judge) plus this process's runtime."""
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, str(amp))
    return {**given, "torch": torch.__version__, "device": device.type, "precision": precision}


def other_run(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """None when a checkpoint written with config `saved` continues the run of config `current` exactly;
    else the first difference, e.g. "train.epochs 30 -> 40" or "the code differs"."""
    for sec in ("train", "model", "data"):
        for k, v in current[sec].items():
            if saved.get(sec, {}).get(k) != v:
                return f"{sec}.{k} {saved.get(sec, {}).get(k)!r} -> {v!r}"
    if saved.get("world_size") != current["world_size"]:
        return f"world size {saved.get('world_size')} -> {current['world_size']}"
    had = saved.get("identity") or {}
    for k, v in current.get("identity", {}).items():
        if had.get(k) != v:  # the command's entries are digests: naming them says enough
            return f"{k} {had.get(k)} -> {v}" if k in _RUNTIME else f"the {k} differs"
    return None


def continues(path: Path, config: dict[str, Any], key: bytes | None) -> tuple[bool, str]:
    """(whether `path` is this run's checkpoint to continue, why) for resume="auto"."""
    if not path.is_file():
        return False, f"no {path} to continue"
    try:
        _, saved = load_checkpoint(path, kind="gan", key=key)
    except GanopsError as e:
        return False, str(e)
    why = other_run(saved, config)
    if why is not None:
        return False, f"{path} is another run's ({why})"
    return True, "same params, data, inputs, code, torch and precision"


@dataclass
class Position:
    """Where a run is: G steps done, full epochs done, steps done into the next epoch."""

    step: int = 0
    epochs_done: int = 0
    epoch_step: int = 0


def write_gan_checkpoint(paths: list[Path], nets: dict[str, Any], pos: Position, history: list[dict[str, float]],
                         best_score: float, rng: list[dict[str, Any]], config: dict[str, Any],
                         key: bytes | None = None, figures: dict[str, Any] | None = None) -> None:
    """Atomically write the same full state to each path (last.pt, and best.pt when it improved).

    `nets`: state_dicts of G, D, ema (or None), opt_g, opt_d; `rng`: `capture_rng()` of every rank;
    `key`: sign with it (see `ganops.checkpoint`); `figures`: what the final metrics need that the steps
    after a resume would not measure again (FLOPs per step, the last full epoch's means).
    """
    state = {**nets, **dataclasses.asdict(pos), "history": history, "best_score": best_score, "rng": rng,
             "figures": figures or {}}
    for p in paths:
        save_checkpoint(p, "gan", state, config, key=key)


def read_gan_checkpoint(path: Path, config: dict[str, Any],
                        key: bytes | None = None) -> tuple[dict[str, Any], Position, list[str]]:
    """(state, position, notes) of a checkpoint to resume from; GanopsError if absent or incompatible,
    CheckpointError if not intact or (given `key`) not signed with it."""
    if not path.is_file():
        raise GanopsError(f"{path}: no checkpoint to resume from; run without resume first")
    state, saved = load_checkpoint(path, kind="gan", key=key)
    notes = check_resumable(saved, config, str(path))
    pos = Position(state["step"], state["epochs_done"], state["epoch_step"])
    return state, pos, notes


class StepMeter:
    """Per-step STATS stay on the device; `flush` syncs once per log point (mean over ranks).

    Also keeps the run's throughput (real images consumed per second of training steps,
    not counting samples, scores and checkpoints) and the current epoch's sums.
    """

    def __init__(self, dist: DistInfo, images_per_step: int) -> None:
        self.dist, self.images_per_step = dist, images_per_step
        self.buf: list[torch.Tensor] = []
        self.mark = time.perf_counter()  # start of the interval being measured
        self.train_seconds, self.images = 0.0, 0
        self.epoch_sum, self.epoch_n = torch.zeros(len(STATS), dtype=torch.float64), 0

    def add(self, stats: torch.Tensor) -> None:
        self.buf.append(stats)  # (len(STATS),) on device: no sync

    def flush(self, step: int) -> tuple[dict[str, float], tuple[int, str, float] | None] | None:
        """(means of STATS and img_per_s since the last flush, first non-finite loss (step, name, value) or
        None); None when no step ran since the last flush. Collective when distributed."""
        if not self.buf:
            return None
        stats = all_reduce_mean(torch.stack(self.buf), self.dist).cpu()  # (k, len(STATS)): the one sync
        k, first = len(self.buf), step - len(self.buf) + 1
        self.buf.clear()
        bad = (~torch.isfinite(stats[:, :2])).nonzero()  # (n_bad, 2): rows, loss columns
        if len(bad):
            r, c = (int(i) for i in bad[0])
            return {}, (first + r, STATS[c], stats[r, c].item())
        now = time.perf_counter()
        seconds, self.mark = max(now - self.mark, 1e-9), now
        self.train_seconds += seconds
        self.images += k * self.images_per_step
        self.epoch_sum += stats.double().sum(0)
        self.epoch_n += k
        means = dict(zip(STATS, stats.mean(0).tolist(), strict=True))
        return {**means, "img_per_s": k * self.images_per_step / seconds}, None

    def epoch_means(self) -> dict[str, float]:
        """Means of STATS over the epoch so far (NaN if no step), and a reset."""
        means = (self.epoch_sum / self.epoch_n).tolist() if self.epoch_n else [math.nan] * len(STATS)
        self.epoch_sum.zero_()
        self.epoch_n = 0
        return dict(zip(STATS, means, strict=True))

    def throughput(self) -> float:
        return self.images / max(self.train_seconds, 1e-9)


def generator_from_checkpoint(path: Path, key: bytes | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The shipped generator of a GAN checkpoint (its EMA, or G when trained without one), eval mode,
    on CPU, and the checkpoint's config (train, model, data sections); `key` as in `load_checkpoint`."""
    state, config = load_checkpoint(path, kind="gan", key=key)
    model_cfg = ModelConfig(**config["model"])
    data = config["data"]
    G = build_generator(model_cfg, data["image_size"], data["channels"], data["num_classes"])
    G.load_state_dict(state["ema"] if state["ema"] is not None else state["G"])
    return G.eval(), config
