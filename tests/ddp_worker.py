"""torchrun helper for tests/test_gan_training.py: a tiny 2-process DDP GAN run on CPU (gloo).

    torchrun --standalone --nproc-per-node=2 tests/ddp_worker.py OUT_DIR

Each rank gets its own checkpoint dir (OUT_DIR/ckpt_rank<r>) so the test can see who wrote
what, records what it logged and reported in OUT_DIR/rank<r>.json, and dumps its final
G, EMA and D state_dicts to OUT_DIR/rank<r>.pt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ganops.config import ModelConfig, TrainConfig
from ganops.training.distributed import cleanup_distributed, init_distributed
from ganops.training.gan import train_gan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gan_worker import CLASSES, tiny_data  # noqa: E402

CFG = TrainConfig(epochs=2, batch_size=32, log_every=3, ema_decay=0.9, diffaugment="translation", num_threads=1,
                  seed=3, loss="bce", init_from_autoencoder=False)
MODEL = ModelConfig(latent_dim=16, g_width=8, d_width=8, conditional=True, spectral_norm=False, d_hidden=0)


class RecordingSink:
    def __init__(self) -> None:
        self.metrics: list[int | None] = []
        self.images: list[str] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append(step)

    def log_image_grid(self, images: torch.Tensor, key: str, step: int | None = None, nrow: int = 8) -> None:
        self.images.append(key)


def main() -> None:
    out = Path(sys.argv[1])
    dist = init_distributed("cpu")
    x, y = tiny_data(256)
    sink, lines = RecordingSink(), []
    res = train_gan(CFG, MODEL, x, y, CLASSES, out / f"ckpt_rank{dist.rank}", sink, dist=dist, log=lines.append,
                    score_fn=lambda G: float(dist.rank))
    torch.save({"G": res.raw_generator.state_dict(), "ema": res.generator.state_dict(),
                "D": res.discriminator.state_dict()}, out / f"rank{dist.rank}.pt")
    report = {"rank": dist.rank, "world_size": dist.world_size, "log": lines, "metric_steps": sink.metrics,
              "images": sink.images, "steps": res.metrics["steps"], "history_rows": len(res.history)}
    (out / f"rank{dist.rank}.json").write_text(json.dumps(report))
    cleanup_distributed()


if __name__ == "__main__":
    main()
