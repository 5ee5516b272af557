"""A GAN run's checkpoint (last.pt, best.pt): what it holds, writing it, and getting back to it.

    stream_generator     the run's seeded torch.Generator streams (latent, augment)
    capture/restore_rng  every RNG state of a process, checkpointable
    run_config, run_identity   the config and identity stored with the checkpoint
    continues            whether last.pt is this run's (resume="auto"), loaded once
    Progress             where a run is and what it has measured (saved with the weights)
    save_gan_checkpoint, read_gan_checkpoint, load_nets   last.pt / best.pt and the resume checks

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ganops.checkpoint import load_checkpoint, save_checkpoint
from ganops.config import ModelConfig, TrainConfig
from ganops.errors import GanopsError
from ganops.training.distributed import DistInfo, barrier, broadcast_buffers, gather_objects

if TYPE_CHECKING:
    from ganops.training.ema import EMA
    from ganops.training.game import Game

STREAMS = ("latent", "augment")  # the run's own torch.Generator streams


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


def run_config(cfg: TrainConfig, model_cfg: ModelConfig, shape: tuple[int, int, int],
               num_classes: int, world_size: int) -> dict[str, Any]:
    """The config stored with a checkpoint: enough to rebuild G and D and to check a resume."""
    c, h, _ = shape
    return {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_cfg),
            "data": {"channels": c, "image_size": h, "num_classes": num_classes},
            "world_size": world_size}


WEIGHT_SHAPE_SECTIONS = ("model", "data")  # config sections that must match for the saved weights to fit
# Train keys that change the run but not the shapes: allowed on resume, reported.
_REPORTED = ("batch_size", "loss", "d_steps", "diffaugment", "ema_decay", "seed", "g_lr", "d_lr")


def check_resumable(saved: dict[str, Any], current: dict[str, Any], where: str) -> list[str]:
    """GanopsError if the saved architecture differs; notes on other changed settings."""
    diffs = [f"{sec}.{k}: checkpoint {saved.get(sec, {}).get(k)!r}, now {v!r}"
             for sec in WEIGHT_SHAPE_SECTIONS for k, v in current[sec].items() if saved.get(sec, {}).get(k) != v]
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


def continues(path: Path, config: dict[str, Any],
              key: bytes | None) -> tuple[tuple[dict[str, Any], dict[str, Any]] | None, str]:
    """For resume="auto": (the checkpoint as `load_checkpoint` gives it, or None when `path` is not this run's
    to continue, why); the loaded checkpoint goes to `read_gan_checkpoint` so last.pt is read once."""
    if not path.is_file():
        return None, f"no {path} to continue"
    try:
        loaded = load_checkpoint(path, kind="gan", key=key)
    except GanopsError as e:
        return None, str(e)
    why = other_run(loaded[1], config)
    if why is not None:
        return None, f"{path} is another run's ({why})"
    return loaded, "same params, data, inputs, code, torch and precision"


@dataclass
class Progress:
    """Where a run is (G steps done, full epochs done, steps done into the next epoch) and what it measured."""

    step: int = 0
    epochs_done: int = 0
    epoch_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # the loop's HISTORY_COLUMNS rows
    best: float = math.inf  # best score so far (lower is better)
    # what the final metrics need that the steps after a resume would not measure again:
    step_flops: int | None = None  # matmul/conv FLOPs of one G step on all ranks (training.flops)
    last_means: dict[str, float] | None = None  # the step's STATS averaged over the last full epoch


def save_gan_checkpoint(paths: list[Path], game: Game, ema: EMA | None, run: Progress, config: dict[str, Any],
                        key: bytes | None, dist: DistInfo) -> None:
    """Collective: every rank contributes its RNG state; rank 0 atomically writes the same full state to each
    path (last.pt, and best.pt when it improved), signed with `key` when given (`ganops.checkpoint`); all wait."""
    broadcast_buffers([game.G, game.D, *([ema.model] if ema is not None else [])], dist)
    rng = gather_objects(capture_rng(game.streams), dist)
    if dist.is_main:
        state = {"G": game.G.state_dict(), "D": game.D.state_dict(),
                 "ema": ema.state_dict() if ema is not None else None,
                 "opt_g": game.opt_g.state_dict(), "opt_d": game.opt_d.state_dict(),
                 "step": run.step, "epochs_done": run.epochs_done, "epoch_step": run.epoch_step,
                 "history": run.history, "best_score": run.best, "rng": rng,
                 "figures": {"step_flops": run.step_flops or 0, "last_means": run.last_means or {}}}
        for p in paths:
            save_checkpoint(p, "gan", state, config, key=key)
    barrier(dist)


def read_gan_checkpoint(path: Path, config: dict[str, Any], key: bytes | None = None,
                        loaded: tuple[dict[str, Any], dict[str, Any]] | None = None,
                        ) -> tuple[dict[str, Any], Progress, list[str]]:
    """(state, progress, notes on allowed setting changes) of a checkpoint to resume from (`loaded`: what
    `continues` read, else read here); GanopsError if absent or incompatible, CheckpointError if not intact
    or (given `key`) not signed with it."""
    if loaded is None:
        if not path.is_file():
            raise GanopsError(f"{path}: no checkpoint to resume from; run without resume first")
        loaded = load_checkpoint(path, kind="gan", key=key)
    state, saved = loaded
    notes = check_resumable(saved, config, str(path))
    figures = state.get("figures") or {}  # absent in checkpoints written before it existed
    run = Progress(state["step"], state["epochs_done"], state["epoch_step"], list(state["history"]),
                   state["best_score"], figures.get("step_flops") or None, figures.get("last_means") or None)
    return state, run, notes


def load_nets(state: dict[str, Any], game: Game, ema: EMA | None) -> None:
    """G, D, their optimisers and the EMA (G's weights when the checkpoint has none) from `state`, in place."""
    game.G.load_state_dict(state["G"])
    game.D.load_state_dict(state["D"])
    game.opt_g.load_state_dict(state["opt_g"])
    game.opt_d.load_state_dict(state["opt_d"])
    if ema is not None:
        ema.load_state_dict(state["ema"] if state["ema"] is not None else state["G"])
