"""GAN training throughput: ganops' loop vs a pytorch/examples-dcgan-style reference loop.

    python benchmarks/bench_train.py [--steps 150] [--rounds 2]

Side by side in one run (interleaved rounds, since these machines are noisy): the same
networks, batch size and number of steps, on real Fashion-MNIST from data/prepared.
Prints img/s of each, the ratio (target ≥ 3×), and ganops' achieved GFLOP/s as a share
of this CPU's measured bf16 matmul peak (target ≥ 60 %).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _peak import count_flops, matmul_peak_gflops  # noqa: E402
from _reference_dcgan import reference_throughput  # noqa: E402

from ganops import losses  # noqa: E402
from ganops.config import ModelConfig, TrainConfig, load_section  # noqa: E402
from ganops.data.prepared import load_split, read_meta  # noqa: E402
from ganops.models import build_discriminator, build_generator  # noqa: E402
from ganops.training.common import NullSink  # noqa: E402
from ganops.training.gan import train_gan  # noqa: E402


def step_flops(model_cfg: ModelConfig, c: int, h: int, batch: int, k: int) -> float:
    """FLOPs of one step as ganops does it: D on real+fake (fwd+bwd), then G through D, again on a
    real+fake batch so D's BatchNorm sees the statistics it was trained with (fwd+bwd)."""
    G, D = build_generator(model_cfg, h, c, k), build_discriminator(model_cfg, h, c, k)
    real = torch.randn(batch, c, h, h)
    y = torch.randint(0, k, (2 * batch,))

    def step() -> None:
        z = torch.randn(batch, model_cfg.latent_dim)
        with torch.no_grad():
            fake = G(z, y[batch:])
        logits = D(torch.cat([real, fake]), y)
        losses.d_loss("bce", logits[:batch], logits[batch:], 1.0).backward()
        losses.g_loss("bce", D(torch.cat([real, G(z, y[batch:])]), y)[batch:]).backward()

    return count_flops(step)


def ganops_throughput(cfg: TrainConfig, model_cfg: ModelConfig, x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    with tempfile.TemporaryDirectory() as ckpt:
        res = train_gan(cfg, model_cfg, x, y, k, Path(ckpt), NullSink(), log=lambda *_: None)
    return float(res.metrics["img_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers (dcgan's default: 2)")
    args = ap.parse_args()
    cfg = load_section(args.params, "train", TrainConfig)
    model_cfg = load_section(args.params, "model", ModelConfig)
    # the benchmark measures the training step: no EMA/score/sample overhead differences matter at 150 steps,
    # but ganops keeps its defaults (EMA on) so the figure is what users get
    cfg = dataclasses.replace(cfg, max_steps=args.steps, epochs=1, init_from_autoencoder=False)
    x, y = load_split(Path(args.data), "train")
    k = read_meta(Path(args.data))["num_classes"]  # as `ganops train` takes it; used only when conditional
    _, c, h, _ = x.shape

    peak = matmul_peak_gflops(torch.bfloat16)
    flops_img = step_flops(model_cfg, c, h, cfg.batch_size, k) / cfg.batch_size
    ours, ref = [], []
    for r in range(args.rounds):
        ref.append(reference_throughput(x, y, model_cfg, k, cfg.batch_size, args.steps, workers=args.workers))
        ours.append(ganops_throughput(cfg, model_cfg, x, y, k))
        print(f"round {r + 1}: reference {ref[-1]:.0f} img/s, ganops {ours[-1]:.0f} img/s")
    o, rf = statistics.median(ours), statistics.median(ref)
    achieved = o * flops_img / 1e9
    print(f"threads {torch.get_num_threads()}; bf16 matmul peak {peak:.0f} GFLOP/s; "
          f"GAN step FLOPs/img {flops_img / 1e6:.1f} MFLOP")
    print(f"ganops {o:.0f} img/s vs reference {rf:.0f} img/s: {o / rf:.2f}x (target >= 3x)")
    print(f"ganops achieves {achieved:.0f} GFLOP/s = {100 * achieved / peak:.1f}% of the bf16 matmul peak "
          f"(target >= 60%)")


if __name__ == "__main__":
    main()
