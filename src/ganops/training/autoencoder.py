"""Autoencoder / VAE pretraining: a pure loop over in-memory uint8 tensors."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from ganops.config import ModelConfig, PretrainConfig
from ganops.models.autoencoder import Autoencoder, build_autoencoder
from ganops.runtime import autocast, progress_bar, seed_everything, setup_runtime, to_model_input
from ganops.training.common import MetricSink, shuffled_batches
from ganops.training.flops import counted

N_SHOW = 16  # test images shown beside their reconstructions
N_INTERP = 10  # steps of each latent interpolation row


@dataclass
class PretrainResult:
    model: Autoencoder
    history: pd.DataFrame  # one row per epoch: epoch, step, train_loss, test_loss, img_per_s, seconds
    metrics: dict[str, float]


def _step_loss(model: Autoencoder, x: torch.Tensor, cfg: PretrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(x)
    rec = reconstruction_loss(out.recon, x, cfg.loss)
    if cfg.variational and out.mu is not None and out.logvar is not None:
        return rec + cfg.kl_weight * kl_normal(out.mu, out.logvar), rec
    return rec, rec


@torch.inference_mode()
def evaluate_reconstruction(model: Autoencoder, images: torch.Tensor, cfg: PretrainConfig,
                            device: torch.device, amp: torch.dtype | None, batch_size: int = 500) -> float:
    """Mean reconstruction loss over `images` (uint8 (N, C, H, W)), eval mode (z = mu)."""
    model.eval()
    total, n = 0.0, 0
    for s in range(0, len(images), batch_size):
        x = to_model_input(images[s:s + batch_size], device, cfg.channels_last)
        with autocast(device, amp):
            recon = model(x).recon
        total += reconstruction_loss(recon, x, cfg.loss).item() * len(x)
        n += len(x)
    model.train()
    return total / max(n, 1)


@torch.inference_mode()
def reconstruction_grid(model: Autoencoder, x_show: torch.Tensor) -> torch.Tensor:
    """(2·N_SHOW, C, H, W): originals in the first row, reconstructions in the second."""
    model.eval()
    recon = model(x_show).recon.float()
    model.train()
    return torch.cat([x_show.float(), recon])


@torch.inference_mode()
def interpolation_strip(model: Autoencoder, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Decode straight lines in latent space from each a[i] to b[i]: (P·N_INTERP, C, H, W)."""
    model.eval()
    za, zb = model.encode(a), model.encode(b)  # (P, Z)
    t = torch.linspace(0, 1, N_INTERP, device=za.device)[None, :, None]  # (1, T, 1)
    z = za[:, None] * (1 - t) + zb[:, None] * t  # (P, T, Z)
    imgs = model.decode(z.reshape(-1, z.shape[-1])).float()  # (P·T, C, H, W)
    model.train()
    return imgs


@torch.inference_mode()
def prior_samples(model: Autoencoder, n: int, latent_dim: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent_dim, generator=g).to(device)  # (n, Z)
    model.eval()
    out = model.decode(z).float()
    model.train()
    return out


def pretrain_autoencoder(cfg: PretrainConfig, model_cfg: ModelConfig, train_x: torch.Tensor,
                         test_x: torch.Tensor, sink: MetricSink, log: Any = print) -> PretrainResult:
    """Train the autoencoder on uint8 (N, C, H, W) images; report to `sink`."""
    gen = seed_everything(cfg.seed)
    device, amp = setup_runtime(cfg)
    _, c, h, w = train_x.shape
    model = build_autoencoder(model_cfg, h, c, variational=cfg.variational).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    x_show = to_model_input(test_x[:N_SHOW], device, cfg.channels_last)
    rows: list[dict[str, float]] = []
    step = 0
    step_flops: int | None = None  # matmul/conv FLOPs of one step (training.flops), for the compute budget
    steps_per_epoch = len(shuffled_batches(len(train_x), cfg.batch_size, torch.Generator().manual_seed(0)))
    log(f"pretrain: {'VAE' if cfg.variational else 'autoencoder'} on {len(train_x)} images {c}×{h}×{w}, "
        f"{cfg.epochs} epochs × {steps_per_epoch} steps, device {device}, "
        f"autocast {amp or 'off'}, channels_last {cfg.channels_last}")
    with progress_bar(cfg.epochs * steps_per_epoch, "pretrain") as bar:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            run_loss, seen = 0.0, 0
            for idx in shuffled_batches(len(train_x), cfg.batch_size, gen):
                x = to_model_input(train_x[idx], device, cfg.channels_last)  # (B, C, H, W)

                def take_step() -> tuple[torch.Tensor, torch.Tensor]:
                    with autocast(device, amp):
                        loss, rec = _step_loss(model, x, cfg)  # noqa: B023 (called right here)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    return loss, rec

                if step_flops is None:  # every batch has the same shape: count the first step
                    (loss, rec), step_flops = counted(take_step)
                else:
                    loss, rec = take_step()
                step += 1
                run_loss += rec.item() * len(x)
                seen += len(x)
                if step % cfg.log_every == 0:
                    sink.log_metrics({"train/step_loss": loss.item(), "train/recon_loss": rec.item()}, step)
                bar.advance(1, info=f"epoch {epoch} loss {rec.item():.4f}")
            seconds = time.perf_counter() - t0
            test_loss = evaluate_reconstruction(model, test_x, cfg, device, amp)
            row = {"epoch": epoch, "step": step, "train_loss": run_loss / max(seen, 1), "test_loss": test_loss,
                   "img_per_s": seen / seconds, "seconds": seconds}
            rows.append(row)
            sink.log_metrics({"epoch/train_loss": row["train_loss"], "epoch/test_loss": test_loss,
                              "epoch/img_per_s": row["img_per_s"]}, step)
            # images on the metrics' step axis, so MLflow's step slider and the curves line up
            sink.log_image_grid(reconstruction_grid(model, x_show), "reconstructions", step=step, nrow=N_SHOW)
            if cfg.variational:
                sink.log_image_grid(prior_samples(model, 64, model_cfg.latent_dim, cfg.seed, device),
                                    "prior_samples", step=step)
            log(f"epoch {epoch}/{cfg.epochs}: train {row['train_loss']:.4f} test {test_loss:.4f} "
                f"({row['img_per_s']:.0f} img/s, {seconds:.1f} s)")
    pairs = min(8, len(test_x) // 2)
    if pairs:
        a = to_model_input(test_x[:pairs], device, cfg.channels_last)
        b = to_model_input(test_x[pairs:2 * pairs], device, cfg.channels_last)
        sink.log_image_grid(interpolation_strip(model, a, b), "interpolation", step=step, nrow=N_INTERP)
    history = pd.DataFrame(rows, columns=["epoch", "step", "train_loss", "test_loss", "img_per_s", "seconds"])
    last = rows[-1] if rows else {}
    metrics = {
        "epochs": float(cfg.epochs),
        "steps": float(step),
        "train_loss": float(last.get("train_loss", float("nan"))),
        "test_loss": float(last.get("test_loss", evaluate_reconstruction(model, test_x, cfg, device, amp))),
        "img_per_s": float(history["img_per_s"].mean()) if rows else 0.0,
        "seconds": float(history["seconds"].sum()) if rows else 0.0,
        **({"flops_per_step": float(step_flops), "train_flops": float(step_flops * step)} if step_flops else {}),
    }
    model.eval()
    return PretrainResult(model=model, history=history, metrics=metrics)


# ---------------------------------------------------------------- the autoencoder's losses
# Here, not in ganops/losses.py (the GAN's): only pretrain uses them, so an edit to either reruns only its stage.
# Computed in fp32 even under autocast, like the GAN losses: `.float()` keeps the reductions comparable across runs.

def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean per-pixel reconstruction loss of images in [-1, 1]: mse, or bce on [0, 1]."""
    recon, x = recon.float(), x.float()
    if kind == "mse":
        return F.mse_loss(recon, x)
    if kind == "bce":
        p = ((recon + 1) / 2).clamp(1e-6, 1 - 1e-6)
        return F.binary_cross_entropy(p, (x + 1) / 2)
    raise ValueError(f"unknown reconstruction loss {kind!r}")


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), summed over latent dims, mean over the batch."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
