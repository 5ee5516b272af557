"""Autoencoder pretraining throughput on full Fashion-MNIST, against this CPU's bf16 peak.

    python benchmarks/bench_pretrain.py [--epochs 1]

Measures, in one run: the bf16 matmul peak (GFLOP/s), the training FLOPs per image of
the default autoencoder (forward + backward, counted by torch), the loop's img/s over
full epochs (bf16 autocast + channels_last, the default) and the fraction of the peak
that is. Target: one epoch over 60k images in ≤ 60 s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _peak import count_flops, matmul_peak_gflops  # noqa: E402

from ganops import losses  # noqa: E402
from ganops.config import ModelConfig, PretrainConfig, load_section  # noqa: E402
from ganops.data.prepared import load_split  # noqa: E402
from ganops.models import build_autoencoder  # noqa: E402
from ganops.training.autoencoder import pretrain_autoencoder  # noqa: E402
from ganops.training.common import NullSink  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    cfg = load_section(args.params, "pretrain", PretrainConfig)
    model_cfg = load_section(args.params, "model", ModelConfig)
    cfg = PretrainConfig(**{**cfg.__dict__, "epochs": args.epochs})
    train_x, _ = load_split(Path(args.data), "train")
    test_x, _ = load_split(Path(args.data), "test")

    peak = matmul_peak_gflops(torch.bfloat16)
    peak32 = matmul_peak_gflops(torch.float32)
    _, c, h, _ = train_x.shape
    ae = build_autoencoder(model_cfg, h, c)
    x = torch.randn(cfg.batch_size, c, h, h)

    def step() -> None:
        loss = losses.reconstruction(ae(x).recon, x, cfg.loss)
        loss.backward()

    flops_per_img = count_flops(step) / cfg.batch_size
    res = pretrain_autoencoder(cfg, model_cfg, train_x, test_x, NullSink(), log=lambda s: None)
    ips = res.metrics["img_per_s"]
    achieved = ips * flops_per_img / 1e9
    print(f"threads {torch.get_num_threads()}; bf16 matmul peak {peak:.0f} GFLOP/s, fp32 {peak32:.0f} GFLOP/s")
    print(f"autoencoder train FLOPs/img (fwd+bwd) {flops_per_img / 1e6:.1f} MFLOP")
    for _, r in res.history.iterrows():
        print(f"epoch {int(r.epoch)}: {r.img_per_s:.0f} img/s, {r.seconds:.1f} s for {len(train_x)} images")
    print(f"pretrain: {ips:.0f} img/s = {achieved:.0f} GFLOP/s = {100 * achieved / peak:.1f}% of bf16 peak; "
          f"epoch of 60k in {60000 / ips:.1f} s (target 60 s: {60 / (60000 / ips):.1f}x headroom)")


if __name__ == "__main__":
    main()
