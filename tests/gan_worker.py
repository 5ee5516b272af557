"""Subprocess helper for tests/test_gan_training.py: a tiny real GAN run that can be killed and resumed.

    python tests/gan_worker.py CKPT_DIR [--resume] [--pause-at STEP --flag FILE]

With --pause-at, the run's sink blocks (after touching FLAG) at the first log point at or after
STEP, so the test can SIGKILL it at a known place: mid-epoch, after last.pt of the earlier epoch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ganops.config import ModelConfig, TrainConfig
from ganops.training.common import NullSink
from ganops.training.gan import train_gan

N, CLASSES = 512, 10
CFG = TrainConfig(epochs=3, batch_size=32, log_every=4, ema_decay=0.9, diffaugment="color,translation,cutout",
                  num_threads=1, seed=7, loss="bce", init_from_autoencoder=False)  # 16 G steps per epoch
MODEL = ModelConfig(latent_dim=16, g_width=8, d_width=8, conditional=True, spectral_norm=False, d_hidden=0)


def tiny_data(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 28, 28) uint8 images with a bright square on noise, and labels 0..CLASSES-1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 40, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    pos = torch.randint(2, 18, (n, 2), generator=g)
    for i, (r, c) in enumerate(pos.tolist()):
        x[i, :, r:r + 8, c:c + 8] = 200
    return x, torch.arange(n) % CLASSES


class PausingSink(NullSink):
    def __init__(self, pause_at: int, flag: Path) -> None:
        self.pause_at, self.flag = pause_at, flag

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.pause_at and step is not None and step >= self.pause_at:
            self.flag.write_text(str(step))
            time.sleep(600)  # the test kills us here


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt_dir", type=Path)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--pause-at", type=int, default=0)
    ap.add_argument("--flag", type=Path, default=Path("/dev/null"))
    args = ap.parse_args()
    x, y = tiny_data()
    train_gan(CFG, MODEL, x, y, CLASSES, args.ckpt_dir, PausingSink(args.pause_at, args.flag),
              resume=args.resume, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()
