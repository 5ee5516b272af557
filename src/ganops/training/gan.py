"""Adversarial training: the DCGAN game with EMA, DiffAugment, penalties, DDP and exact resume.

    result = train_gan(cfg, model_cfg, train_x, train_y, num_classes, ckpt_dir, sink)
    result.generator      # EMA of G (G itself when ema_decay == 0), eval mode
    result.history        # one row per log point / epoch end: step, epoch, d_loss, g_loss, d_real, d_fake, ...
    result.metrics        # final figures for metrics/train.json

Pure: takes tensors and configs, reports to a `MetricSink`, writes only `ckpt_dir/{last,best}.pt`.
Data stays an in-memory uint8 tensor, batches are index tensors from a seeded permutation.

Decisions worth knowing:
- one G step = d_steps D updates, each on a fresh real batch, then one G update; `step` counts G steps;
- D with BatchNorm sees real and fake in one batch, in the D step and in the G step alike (see
  `game.Game.train_step`);
- the per-rank batch is batch_size // world_size (the global batch does not depend on the GPU count);
- img/s counts real images consumed per second of training steps (not samples/scores/checkpoints).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from ganops import runtime
from ganops.config import ModelConfig, TrainConfig
from ganops.errors import GanopsError
from ganops.models.discriminator import Discriminator
from ganops.models.generator import Generator
from ganops.models.latent import sample_latent
from ganops.training.common import MetricSink, NullSink
from ganops.training.distributed import DistInfo, barrier, broadcast_buffers, gather_objects
from ganops.training.flops import counted
from ganops.training.game import Game, generate, lr_factor
from ganops.training.state import (
    STATS,
    EpochPlan,
    Position,
    StepMeter,
    capture_rng,
    continues,
    read_gan_checkpoint,
    restore_rng,
    run_config,
    run_identity,
    stream_generator,
    write_gan_checkpoint,
)

N_GRID = 64  # fixed-z samples per epoch grid (8×8)
N_PAIRS, N_INTERP = 8, 10  # interpolation strip: pairs of z, steps between them
HISTORY_COLUMNS = ["step", "epoch", *STATS, "g_grad_norm", "d_grad_norm", "img_per_s", "score"]


class NonFiniteLoss(GanopsError):
    """A D or G loss became NaN/inf; training stopped and the last good checkpoint was kept."""


@dataclass
class GanResult:
    generator: Generator  # what to ship: EMA G (or G itself when ema_decay == 0), eval mode
    raw_generator: Generator  # the trained G (the same object as `generator` when ema_decay == 0)
    discriminator: Discriminator
    history: pd.DataFrame  # HISTORY_COLUMNS, one row per log point and per epoch end
    metrics: dict[str, float]
    resumed_from: int | None = None  # the G step last.pt was continued from, None for a run from step 0


def _check_inputs(model_cfg: ModelConfig, x: torch.Tensor, y: torch.Tensor, k: int) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise GanopsError(f"train_gan: images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    if y.shape != (len(x),):
        raise GanopsError(f"train_gan: labels of shape {tuple(y.shape)} for {len(x)} images")
    if model_cfg.conditional and (k < 1 or (len(y) and not 0 <= int(y.min()) <= int(y.max()) < k)):
        raise GanopsError(f"model.conditional: labels must lie in 0..{k - 1} (num_classes {k})")


class _Run:
    """The loop's bookkeeping: position, history, best score, checkpoints and reports."""

    def __init__(self, game: Game, plan: EpochPlan, cfg: TrainConfig, config: dict[str, Any], ckpt_dir: Path,
                 sink: MetricSink, log: Callable[[str], Any], score_fn: Callable[[Generator], float] | None,
                 dist: DistInfo, key: bytes | None) -> None:
        self.game, self.plan, self.cfg, self.config, self.dist = game, plan, cfg, config, dist
        self.key = key  # checkpoint signing key (None: plain digest only)
        self.sink, self.log, self.score_fn = sink, log, score_fn
        self.last_path, self.best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
        self.pos = Position()
        self.saved_step: int | None = None
        self.best = math.inf
        self.history: list[dict[str, float]] = []
        self.last_means: dict[str, float] | None = None  # STATS averaged over the last full epoch
        self.meter = StepMeter(dist, plan.batch * plan.d_steps * dist.world_size)
        self.step_flops: int | None = None  # matmul/conv FLOPs of one G step on all ranks (training.flops)
        fixed = stream_generator(cfg.seed, "fixed-samples")  # the same z every epoch and every run
        lat, dev = game.model_cfg.latent_dim, game.device
        self.z_grid = sample_latent(N_GRID, lat, game.model_cfg.latent_dist, generator=fixed).to(dev)
        self.z_pairs = sample_latent(2 * N_PAIRS, lat, game.model_cfg.latent_dist, generator=fixed).to(dev)
        k = max(game.num_classes, 1)
        self.y_grid = (torch.arange(N_GRID) % k).to(dev) if game.cond else None
        self.y_pairs = (torch.arange(N_PAIRS) % k).to(dev) if game.cond else None

    # ---------------------------------------------------------------- checkpoints
    def resume(self, why: str = "") -> None:
        state, self.pos, notes = read_gan_checkpoint(self.last_path, self.config, self.key)
        for note in notes:
            self.log(f"resume: {note} (allowed, but the run is no longer the one checkpointed)")
        self.game.load(state)
        # A changed batch_size / d_steps / world size shortens the epoch: a saved position past
        # its end means that epoch is done.
        self.pos.epoch_step = min(self.pos.epoch_step, self.plan.steps_per_epoch)
        self.best, self.history, self.saved_step = state["best_score"], list(state["history"]), self.pos.step
        figures = state.get("figures") or {}  # absent in checkpoints written before it existed
        self.step_flops = figures.get("step_flops") or None
        self.last_means = figures.get("last_means") or None
        rngs, rank = state["rng"], self.dist.rank
        if rank < len(rngs):
            restore_rng(rngs[rank], self.game.streams)
        else:
            self.log(f"resume: no RNG state for rank {rank} in a {len(rngs)}-rank checkpoint; its streams restart")
        self.log(f"resume: {self.last_path} at step {self.pos.step} "
                 f"({self.pos.epochs_done} epochs done, {self.pos.epoch_step} steps into the next)"
                 + (f": {why}" if why else ""))

    def save(self, is_best: bool) -> None:
        """Every rank contributes its RNG state; rank 0 writes last.pt (and best.pt); all wait."""
        game = self.game
        broadcast_buffers([game.G, game.D, *([game.ema.model] if game.ema else [])], self.dist)
        rng = gather_objects(capture_rng(game.streams), self.dist)
        if self.dist.is_main:
            paths = [self.last_path, self.best_path] if is_best else [self.last_path]
            figures = {"step_flops": self.step_flops or 0, "last_means": self.last_means or {}}
            write_gan_checkpoint(paths, game.state(), self.pos, self.history, self.best, rng, self.config,
                                 self.key, figures)
        self.saved_step = self.pos.step
        barrier(self.dist)

    def last_good(self) -> str:
        if self.saved_step is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint {self.last_path} (step {self.saved_step}) is kept unchanged"

    # ---------------------------------------------------------------- reports
    def flush(self, epoch: int) -> dict[str, float] | None:
        """One history row (and sink point) for the steps since the last one; NaN guard."""
        out = self.meter.flush(self.pos.step)
        if out is None:
            return None
        means, bad = out
        if bad is not None:
            step, name, value = bad
            raise NonFiniteLoss(f"non-finite {name} = {value} at step {step} (epoch {epoch}); training stopped, "
                                f"{self.last_good()}")
        g_norm, d_norm = self.game.grad_norms()
        img_per_s = means.pop("img_per_s")
        row = {"step": self.pos.step, "epoch": epoch, **means, "g_grad_norm": g_norm, "d_grad_norm": d_norm,
               "img_per_s": img_per_s, "score": math.nan}
        self.history.append(row)
        self.sink.log_metrics({f"train/{k}": v for k, v in row.items() if k not in ("step", "epoch", "score")},
                              self.pos.step)
        return row

    def end_epoch(self, epoch: int, seconds: float) -> None:
        self.flush(epoch)
        means = self.last_means = self.meter.epoch_means()
        self.game.stand_shipped()  # before the grids, the score and the checkpoint see it
        G, ema, main = self.game.G, self.game.ema, self.dist.is_main
        # images on the metrics' step axis (G steps), so MLflow's step slider and the curves line up
        if main:
            self.sink.log_image_grid(generate(G, self.z_grid, self.y_grid), "samples", step=self.pos.step)
        if main and ema is not None:
            self.sink.log_image_grid(generate(ema.model, self.z_grid, self.y_grid), "samples_ema",
                                     step=self.pos.step)
        score, is_best = math.nan, False
        if self.score_fn is not None and main:
            shipped = self.game.shipped()
            was = shipped.training
            score = float(self.score_fn(shipped.eval()))
            shipped.train(was)
            is_best = score < self.best  # NaN never wins
            self.best = score if is_best else self.best
            if self.history and self.history[-1]["step"] == self.pos.step:
                self.history[-1]["score"] = score
            self.sink.log_metrics({"epoch/score": score, "epoch/best_score": self.best}, self.pos.step)
        self.pos.epochs_done, self.pos.epoch_step = epoch, 0
        self.save(is_best)
        self.log(f"epoch {epoch}/{self.cfg.epochs} step {self.pos.step}: D {means['d_loss']:.4f} "
                 f"G {means['g_loss']:.4f} D(x) {means['d_real']:.3f} D(G(z)) {means['d_fake']:.3f}"
                 + (f" score {score:.4g}{' (best)' if is_best else ''}" if not math.isnan(score) else "")
                 + f" ({self.plan.steps_per_epoch * self.meter.images_per_step / max(seconds, 1e-9):.0f} img/s,"
                 f" {seconds:.1f} s)")

    def interpolation(self) -> torch.Tensor:
        """(N_PAIRS·N_INTERP, C, H, W): straight lines in z between fixed pairs, one row per pair."""
        a, b = self.z_pairs[:N_PAIRS], self.z_pairs[N_PAIRS:]  # (P, Z) each
        t = torch.linspace(0, 1, N_INTERP, device=a.device)[None, :, None]  # (1, T, 1)
        z = (a[:, None] * (1 - t) + b[:, None] * t).reshape(-1, a.shape[1])  # (P·T, Z)
        y = self.y_pairs.repeat_interleave(N_INTERP) if self.y_pairs is not None else None  # (P·T,)
        return generate(self.game.shipped(), z, y)

    # ---------------------------------------------------------------- the loop
    def run(self, total: int) -> None:
        cfg, game, plan = self.cfg, self.game, self.plan
        with runtime.progress_bar(max(total - self.pos.step, 0), "train") as bar:
            for epoch in range(self.pos.epochs_done + 1, cfg.epochs + 1):
                if self.pos.step >= total:
                    break
                t0 = time.perf_counter()
                self.meter.mark = t0
                batches = plan.epoch(epoch)
                for i in range(self.pos.epoch_step, plan.steps_per_epoch):
                    if self.pos.step >= total:
                        break
                    if cfg.lr_decay:  # over the epochs' steps: max_steps cuts a run short, not its schedule
                        game.set_lr(lr_factor(self.pos.step, plan.steps_per_epoch * cfg.epochs, cfg.lr_decay))
                    if self.step_flops is None:  # every step has the same shapes: count the first one taken
                        stats, flops = counted(lambda: game.train_step(batches[i], self.pos.step))  # noqa: B023
                        self.step_flops = flops * self.dist.world_size
                    else:
                        stats = game.train_step(batches[i], self.pos.step)
                    self.meter.add(stats)
                    self.pos.step, self.pos.epoch_step = self.pos.step + 1, i + 1
                    info = None
                    if self.pos.step % cfg.log_every == 0:
                        row = self.flush(epoch)
                        assert row is not None
                        info = (f"epoch {epoch} step {self.pos.step} D {row['d_loss']:.3f} G {row['g_loss']:.3f} "
                                f"D(x) {row['d_real']:.2f} D(G(z)) {row['d_fake']:.2f}")
                    bar.advance(1, info=info)
                if self.pos.epoch_step == plan.steps_per_epoch:
                    self.end_epoch(epoch, time.perf_counter() - t0)
        if self.saved_step != self.pos.step:  # the same answer on every rank (save is collective)
            self.flush(self.pos.epochs_done + 1 if self.pos.epoch_step else self.pos.epochs_done)
            self.game.stand_shipped()
            self.save(is_best=False)  # stopped mid-epoch (max_steps) or nothing to train

    def metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Final figures (for metrics/train.json); values that were never measured are left out, not NaN."""
        scores = [r["score"] for r in self.history if not math.isnan(r["score"])]
        m = {"steps": float(self.pos.step), "epochs": float(self.pos.epochs_done), **means,
             "img_per_s": self.meter.throughput(), "seconds": self.meter.train_seconds,
             # the compute budget (issue 13), the same on every machine: FLOPs per step × steps of the whole run
             **({"flops_per_step": float(self.step_flops), "train_flops": float(self.step_flops * self.pos.step)}
                if self.step_flops is not None else {}),
             **({"score": scores[-1], "best_score": self.best} if scores else {})}
        return {k: v for k, v in m.items() if math.isfinite(v)}


def train_gan(cfg: TrainConfig, model_cfg: ModelConfig, train_x: torch.Tensor, train_y: torch.Tensor,
              num_classes: int, ckpt_dir: Path, sink: MetricSink, ae_state: dict[str, Any] | None = None,
              resume: bool | Literal["auto"] = False, score_fn: Callable[[Generator], float] | None = None,
              dist: DistInfo | None = None, log: Callable[[str], Any] = print,
              key: bytes | None = None, identity: dict[str, Any] | None = None) -> GanResult:
    """Train G and D on uint8 images (N, C, H, W) with int64 labels (N,); see the module docstring.

    `ae_state`: an autoencoder state_dict, loaded into G and D.trunk when cfg.init_from_autoencoder.
    `resume`: continue from ckpt_dir/last.pt (weights, optimisers, EMA, RNG, position in the epoch);
    "auto": only when last.pt is this run's (`state.continues`), else start from step 0, saying why.
    `identity`: digests naming this run's inputs and code (`state.run_identity`), stored in the checkpoints.
    `score_fn(G_eval) -> float`: lower is better; called at each epoch end on rank 0; best.pt tracks it.
    `dist`: from `init_distributed()`; only rank 0 reports, logs and writes checkpoints.
    `key`: sign last.pt / best.pt with it and require its signature on resume (`ganops.checkpoint`).
    cfg.max_steps counts G steps over the whole run, resumed parts included.
    Raises GanopsError (bad input, resume problems) and NonFiniteLoss (NaN/inf loss).
    """
    dist = dist or DistInfo()
    if not dist.is_main:
        sink, log = NullSink(), lambda *_: None
    _check_inputs(model_cfg, train_x, train_y, num_classes)
    runtime.seed_everything(cfg.seed)  # model init; the loop itself draws only from its own streams
    device, amp = runtime.setup_runtime(cfg)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    try:
        game = Game(cfg, model_cfg, train_x, train_y, num_classes, device, amp, dist)
    except ValueError as e:
        raise GanopsError(f"train_gan: {e}") from None
    plan = EpochPlan(len(train_x), cfg, dist)
    config = run_config(cfg, model_cfg, tuple(train_x.shape[1:]), num_classes, dist.world_size)
    config["identity"] = run_identity(identity or {}, device, amp)
    run = _Run(game, plan, cfg, config, Path(ckpt_dir), sink, log, score_fn, dist, key)
    why = ""
    if resume == "auto":
        resume, why = continues(run.last_path, config, key)
        if not resume:
            log(f"train: starting from step 0: {why}")
    if not resume and cfg.init_from_autoencoder:
        if ae_state is None:
            raise GanopsError("train.init_from_autoencoder is true but no autoencoder weights were given")
        game.init_from_autoencoder(ae_state, log)
    game.start(dist)
    resumed_from = None
    if resume:
        run.resume(why)
        resumed_from = run.pos.step
    elif dist.is_main:
        run.best_path.unlink(missing_ok=True)  # fresh run: an older best.pt would mislead
    total = plan.steps_per_epoch * cfg.epochs
    total = min(total, cfg.max_steps) if cfg.max_steps else total
    _, c, h, w = train_x.shape
    log(f"train: {cfg.loss} GAN on {len(train_x)} images {c}×{h}×{w}, {cfg.epochs} epochs × "
        f"{plan.steps_per_epoch} steps (batch {plan.batch}/rank × {dist.world_size}, d_steps {cfg.d_steps})"
        f"{f', max_steps {cfg.max_steps}' if cfg.max_steps else ''}, device {device}, autocast {amp or 'off'}, "
        f"channels_last {cfg.channels_last}, EMA {cfg.ema_decay or 'off'}, "
        f"DiffAugment {','.join(cfg.diffaugment_ops) or 'off'}")
    run.run(total)
    if run.meter.epoch_n:  # stopped mid-epoch: the partial epoch's means
        run.last_means = run.meter.epoch_means()
    means = run.last_means or {k: run.history[-1][k] if run.history else math.nan for k in STATS}
    if dist.is_main:
        sink.log_image_grid(run.interpolation(), "interpolation", step=run.pos.step, nrow=N_INTERP)
    metrics = run.metrics(means)
    log(f"train: done, {run.pos.step} steps, {metrics['img_per_s']:.0f} img/s"
        + (f", best score {run.best:.4g}" if "best_score" in metrics else ""))
    history = pd.DataFrame(run.history, columns=HISTORY_COLUMNS)
    return GanResult(generator=game.shipped().eval(), raw_generator=game.G.eval(), discriminator=game.D.eval(),
                     history=history, metrics=metrics, resumed_from=resumed_from)
