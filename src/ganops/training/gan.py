"""Adversarial training, the loop in one place: schedule, step, EMA, scoring, checkpoint, reports.

    result = train_gan(cfg, model_cfg, train_x, train_y, num_classes, ckpt_dir, sink)
    result.generator      # EMA of G (G itself when ema_decay == 0), eval mode
    result.history        # one row per log point / epoch end: step, epoch, d_loss, g_loss, d_real, d_fake, ...
    result.metrics        # final figures for metrics/train.json

Pure: takes tensors and configs, reports to a `MetricSink`, writes only `ckpt_dir/{last,best}.pt`.
Data stays an in-memory uint8 tensor, batches are index tensors from a seeded permutation.
`train_gan` reads top to bottom; the step's mathematics (D and G updates, losses, penalties, DiffAugment)
is `game.Game.train_step`, the EMA's `ema.py`, what last.pt holds and the resume rules `state.py`.

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
from torch.utils.data import DistributedSampler

from ganops import runtime
from ganops.config import ModelConfig, TrainConfig
from ganops.errors import GanopsError
from ganops.models.autoencoder import load_autoencoder_into_discriminator, load_autoencoder_into_generator
from ganops.models.discriminator import Discriminator
from ganops.models.generator import Generator
from ganops.models.latent import sample_latent
from ganops.training.common import MetricSink, NullSink
from ganops.training.distributed import DistInfo
from ganops.training.ema import EMA, standing_stats
from ganops.training.flops import counted
from ganops.training.game import STATS, Game
from ganops.training.meter import StepMeter
from ganops.training.state import (
    Progress,
    continues,
    load_nets,
    read_gan_checkpoint,
    restore_rng,
    run_config,
    run_identity,
    save_gan_checkpoint,
    stream_generator,
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
    # ---------------------------------------------------------------- setup: runtime, networks, data order
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
    last_path, best_path = Path(ckpt_dir) / "last.pt", Path(ckpt_dir) / "best.pt"
    meter = StepMeter(dist, plan.batch * plan.d_steps * dist.world_size)
    fixed = stream_generator(cfg.seed, "fixed-samples")  # the same z every epoch and every run
    z_grid = sample_latent(N_GRID, model_cfg.latent_dim, model_cfg.latent_dist, generator=fixed).to(device)
    z_pairs = sample_latent(2 * N_PAIRS, model_cfg.latent_dim, model_cfg.latent_dist, generator=fixed).to(device)
    k = max(num_classes, 1)
    y_grid = (torch.arange(N_GRID) % k).to(device) if game.cond else None
    y_pairs = (torch.arange(N_PAIRS) % k).to(device) if game.cond else None

    # ---------------------------------------------------------------- start fresh or resume from last.pt
    loaded, why = None, ""
    if resume == "auto":
        loaded, why = continues(last_path, config, key)  # last.pt read once, when it is this run's
        resume = loaded is not None
        if not resume:
            log(f"train: starting from step 0: {why}")
    if not resume and cfg.init_from_autoencoder:
        _init_from_autoencoder(game, ae_state, log)
    ema = EMA(game.G, cfg.ema_decay) if cfg.ema_decay > 0 else None  # averages from the initialised G
    game.wrap_ddp(dist)
    shipped: Generator = ema.model if ema is not None else game.G  # type: ignore[assignment]
    run, saved_step, resumed_from = Progress(), None, None
    if resume:
        state, run, notes = read_gan_checkpoint(last_path, config, key, loaded)
        for note in notes:
            log(f"resume: {note} (allowed, but the run is no longer the one checkpointed)")
        load_nets(state, game, ema)
        # A changed batch_size / d_steps / world size shortens the epoch: a saved position past its end
        # means that epoch is done.
        run.epoch_step = min(run.epoch_step, plan.steps_per_epoch)
        saved_step = resumed_from = run.step
        if dist.rank < len(state["rng"]):
            restore_rng(state["rng"][dist.rank], game.streams)
        else:
            log(f"resume: no RNG state for rank {dist.rank} in a {len(state['rng'])}-rank checkpoint; "
                "its streams restart")
        log(f"resume: {last_path} at step {run.step} ({run.epochs_done} epochs done, {run.epoch_step} steps "
            f"into the next)" + (f": {why}" if why else ""))
    elif dist.is_main:
        best_path.unlink(missing_ok=True)  # fresh run: an older best.pt would mislead
    total = plan.steps_per_epoch * cfg.epochs
    total = min(total, cfg.max_steps) if cfg.max_steps else total
    _, c, h, w = train_x.shape
    log(f"train: {cfg.loss} GAN on {len(train_x)} images {c}×{h}×{w}, {cfg.epochs} epochs × "
        f"{plan.steps_per_epoch} steps (batch {plan.batch}/rank × {dist.world_size}, d_steps {cfg.d_steps})"
        f"{f', max_steps {cfg.max_steps}' if cfg.max_steps else ''}, device {device}, autocast {amp or 'off'}, "
        f"channels_last {cfg.channels_last}, EMA {cfg.ema_decay or 'off'}, "
        f"DiffAugment {','.join(cfg.diffaugment_ops) or 'off'}")

    def last_good() -> str:
        if saved_step is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint {last_path} (step {saved_step}) is kept unchanged"

    def stand_shipped() -> None:
        """BatchNorm statistics of the shipped G recomputed for its current weights (ema.standing_stats), before
        anything scores, draws or writes it; seeded on its own, so the training streams stay untouched."""
        standing_stats(shipped, model_cfg.latent_dist, stream_generator(cfg.seed, "standing").initial_seed())

    # ---------------------------------------------------------------- the loop
    with runtime.progress_bar(max(total - run.step, 0), "train") as bar:
        for epoch in range(run.epochs_done + 1, cfg.epochs + 1):
            if run.step >= total:
                break
            t0 = meter.mark = time.perf_counter()
            batches = plan.epoch(epoch)  # (steps_per_epoch × d_steps) index batches
            for i in range(run.epoch_step, plan.steps_per_epoch):
                if run.step >= total:
                    break
                # schedule: the step number alone sets the lr, so a resumed run follows the same schedule;
                # over the epochs' steps: max_steps cuts a run short, not its schedule
                if cfg.lr_decay:
                    factor = lr_factor(run.step, plan.steps_per_epoch * cfg.epochs, cfg.lr_decay)
                    for opt, base in ((game.opt_g, cfg.g_lr), (game.opt_d, cfg.d_lr)):
                        for group in opt.param_groups:
                            group["lr"] = base * factor
                # step: d_steps D updates, then one G update
                if run.step_flops is None:  # every step has the same shapes: count the first one taken
                    stats, flops = counted(lambda: game.train_step(batches[i]))  # noqa: B023
                    run.step_flops = flops * dist.world_size
                else:
                    stats = game.train_step(batches[i])
                # EMA of G's weights (the unwrapped G, not its DDP wrapper)
                if ema is not None:
                    ema.update(game.G, run.step)
                meter.add(stats)
                run.step, run.epoch_step = run.step + 1, i + 1
                info = None
                if run.step % cfg.log_every == 0:
                    row = _log_point(meter, run, game, sink, epoch, last_good)
                    assert row is not None
                    info = (f"epoch {epoch} step {run.step} D {row['d_loss']:.3f} G {row['g_loss']:.3f} "
                            f"D(x) {row['d_real']:.2f} D(G(z)) {row['d_fake']:.2f}")
                bar.advance(1, info=info)
            if run.epoch_step < plan.steps_per_epoch:
                continue  # stopped by max_steps: no epoch end
            # epoch end: report, samples, score, checkpoint
            seconds = time.perf_counter() - t0
            _log_point(meter, run, game, sink, epoch, last_good)
            means = run.last_means = meter.epoch_means()
            stand_shipped()  # before the grids, the score and the checkpoint see it
            # images on the metrics' step axis (G steps), so MLflow's step slider and the curves line up
            if dist.is_main:
                sink.log_image_grid(eval_images(game.G, z_grid, y_grid), "samples", step=run.step)
            if dist.is_main and ema is not None:
                sink.log_image_grid(eval_images(ema.model, z_grid, y_grid), "samples_ema", step=run.step)
            score, is_best = math.nan, False
            if score_fn is not None and dist.is_main:
                was = shipped.training
                score = float(score_fn(shipped.eval()))
                shipped.train(was)
                is_best = score < run.best  # NaN never wins
                run.best = score if is_best else run.best
                if run.history and run.history[-1]["step"] == run.step:
                    run.history[-1]["score"] = score
                sink.log_metrics({"epoch/score": score, "epoch/best_score": run.best}, run.step)
            run.epochs_done, run.epoch_step = epoch, 0
            save_gan_checkpoint([last_path, best_path] if is_best else [last_path], game, ema, run, config, key,
                                dist)
            saved_step = run.step
            log(f"epoch {epoch}/{cfg.epochs} step {run.step}: D {means['d_loss']:.4f} "
                f"G {means['g_loss']:.4f} D(x) {means['d_real']:.3f} D(G(z)) {means['d_fake']:.3f}"
                + (f" score {score:.4g}{' (best)' if is_best else ''}" if not math.isnan(score) else "")
                + f" ({plan.steps_per_epoch * meter.images_per_step / max(seconds, 1e-9):.0f} img/s,"
                f" {seconds:.1f} s)")
    if saved_step != run.step:  # stopped mid-epoch (max_steps) or nothing to train; the same on every rank
        _log_point(meter, run, game, sink, run.epochs_done + 1 if run.epoch_step else run.epochs_done, last_good)
        stand_shipped()
        save_gan_checkpoint([last_path], game, ema, run, config, key, dist)  # collective

    # ---------------------------------------------------------------- results
    if meter.epoch_n:  # stopped mid-epoch: the partial epoch's means
        run.last_means = meter.epoch_means()
    means = run.last_means or {k: run.history[-1][k] if run.history else math.nan for k in STATS}
    if dist.is_main:
        sink.log_image_grid(_interpolation(shipped, z_pairs, y_pairs), "interpolation", step=run.step,
                            nrow=N_INTERP)
    metrics = _final_metrics(run, meter, means)
    log(f"train: done, {run.step} steps, {metrics['img_per_s']:.0f} img/s"
        + (f", best score {run.best:.4g}" if "best_score" in metrics else ""))
    history = pd.DataFrame(run.history, columns=HISTORY_COLUMNS)
    return GanResult(generator=shipped.eval(), raw_generator=game.G.eval(), discriminator=game.D.eval(),
                     history=history, metrics=metrics, resumed_from=resumed_from)


# ---------------------------------------------------------------- the loop's pieces, in the order it uses them

def _check_inputs(model_cfg: ModelConfig, x: torch.Tensor, y: torch.Tensor, k: int) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise GanopsError(f"train_gan: images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    if y.shape != (len(x),):
        raise GanopsError(f"train_gan: labels of shape {tuple(y.shape)} for {len(x)} images")
    if model_cfg.conditional and (k < 1 or (len(y) and not 0 <= int(y.min()) <= int(y.max()) < k)):
        raise GanopsError(f"model.conditional: labels must lie in 0..{k - 1} (num_classes {k})")


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


def _init_from_autoencoder(game: Game, ae_state: dict[str, Any] | None, log: Callable[[str], Any]) -> None:
    if ae_state is None:
        raise GanopsError("train.init_from_autoencoder is true but no autoencoder weights were given")
    try:
        g_left = load_autoencoder_into_generator(game.G, ae_state)
        d_left = load_autoencoder_into_discriminator(game.D, ae_state)
    except ValueError as e:
        raise GanopsError(f"init_from_autoencoder: {e}") from None
    log(f"init from autoencoder: G keys left at init: {', '.join(g_left) or 'none'}; "
        f"D keys left at init: {', '.join(d_left) or 'none'}")


def lr_factor(step: int, total: int, decay: float) -> float:
    """Learning-rate multiplier for G step `step` (0-based) of `total`: 1, then falling linearly towards 0
    over the last `decay` share of the steps (0 = constant). The last step still moves (factor 1/n)."""
    n = decay * total  # steps in the decay
    start = total - n
    if n <= 0 or step < start:
        return 1.0
    return max(total - step, 0) / n


def _log_point(meter: StepMeter, run: Progress, game: Game, sink: MetricSink, epoch: int,
               last_good: Callable[[], str]) -> dict[str, float] | None:
    """One history row (and sink point) for the steps since the last one, or None if none ran; the NaN guard."""
    out = meter.flush(run.step)
    if out is None:
        return None
    means, bad = out
    if bad is not None:
        step, name, value = bad
        raise NonFiniteLoss(f"non-finite {name} = {value} at step {step} (epoch {epoch}); training stopped, "
                            f"{last_good()}")
    g_norm, d_norm = _grad_norm(game.G), _grad_norm(game.D)
    img_per_s = means.pop("img_per_s")
    row = {"step": run.step, "epoch": epoch, **means, "g_grad_norm": g_norm, "d_grad_norm": d_norm,
           "img_per_s": img_per_s, "score": math.nan}
    run.history.append(row)
    sink.log_metrics({f"train/{k}": v for k, v in row.items() if k not in ("step", "epoch", "score")}, run.step)
    return row


def _grad_norm(m: torch.nn.Module) -> float:
    """‖∇‖₂ over `m`'s parameters after the last update (grads live until the next zero_grad)."""
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).item() if grads else 0.0


@torch.no_grad()
def eval_images(G: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """G's images (n, C, H, W) in [-1, 1] for z (n, Z) and labels (n,) or None, drawn in eval mode in one
    batch, leaving G's mode (and BN stats) as they were."""
    was = G.training
    G.eval()
    out = G(z, y).float()
    G.train(was)
    return out


def _interpolation(G: Generator, z_pairs: torch.Tensor, y_pairs: torch.Tensor | None) -> torch.Tensor:
    """(N_PAIRS·N_INTERP, C, H, W): straight lines in z between fixed pairs, one row per pair."""
    a, b = z_pairs[:N_PAIRS], z_pairs[N_PAIRS:]  # (P, Z) each
    t = torch.linspace(0, 1, N_INTERP, device=a.device)[None, :, None]  # (1, T, 1)
    z = (a[:, None] * (1 - t) + b[:, None] * t).reshape(-1, a.shape[1])  # (P·T, Z)
    y = y_pairs.repeat_interleave(N_INTERP) if y_pairs is not None else None  # (P·T,)
    return eval_images(G, z, y)


def _final_metrics(run: Progress, meter: StepMeter, means: dict[str, float]) -> dict[str, float]:
    """Final figures (for metrics/train.json); values that were never measured are left out, not NaN."""
    scores = [r["score"] for r in run.history if not math.isnan(r["score"])]
    m = {"steps": float(run.step), "epochs": float(run.epochs_done), **means,
         "img_per_s": meter.throughput(), "seconds": meter.train_seconds,
         # the compute budget (issue 13), the same on every machine: FLOPs per step × steps of the whole run
         **({"flops_per_step": float(run.step_flops), "train_flops": float(run.step_flops * run.step)}
            if run.step_flops is not None else {}),
         **({"score": scores[-1], "best_score": run.best} if scores else {})}
    return {k: v for k, v in m.items() if math.isfinite(v)}
