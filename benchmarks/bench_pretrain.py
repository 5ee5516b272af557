"""Autoencoder pretraining throughput on full Fashion-MNIST, against this CPU's matmul peak in the
precision pretraining runs in (bf16 autocast where the CPU has native bf16, else fp32).

    python benchmarks/bench_pretrain.py [--epochs 1]

Measures, in one run: the matmul peak (GFLOP/s) of the precision in use, the FLOPs of the loop's
own first step (FlopCounterMode around it, as `ganops pretrain` reports them), the loop's img/s over
full epochs and the share of the peak that is. Every figure is printed beside the CPU it ran on.
Target: one epoch over 60k images in ≤ 60 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _peak import machine, matmul_peak_gflops, precision_name  # noqa: E402

from ganops.config import ModelConfig, PretrainConfig  # noqa: E402
from ganops.data.prepared import load_split  # noqa: E402
from ganops.params import load_section  # noqa: E402
from ganops.runtime import setup_runtime  # noqa: E402
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
    cfg = dataclasses.replace(cfg, epochs=args.epochs)
    train_x, _ = load_split(Path(args.data), "train")
    test_x, _ = load_split(Path(args.data), "test")

    _, amp = setup_runtime(cfg)  # the precision `precision: auto` resolves to on this CPU
    where = f"[{machine()}]"
    peak = matmul_peak_gflops(amp or torch.float32)
    print(f"{precision_name(amp)} matmul peak {peak:.0f} GFLOP/s {where}", flush=True)
    res = pretrain_autoencoder(cfg, model_cfg, train_x, test_x, NullSink(), log=lambda s: None)
    flops_per_img = res.metrics["flops_per_step"] / cfg.batch_size
    print(f"autoencoder step FLOPs/img (fwd+bwd, counted on the loop's first step) {flops_per_img / 1e6:.1f} MFLOP")
    for _, r in res.history.iterrows():
        print(f"epoch {int(r.epoch)}: {r.img_per_s:.0f} img/s, {r.seconds:.1f} s for {len(train_x)} images {where}")
    ips = res.metrics["img_per_s"]
    achieved = ips * flops_per_img / 1e9
    print(f"pretrain: {ips:.0f} img/s = {achieved:.0f} GFLOP/s = {100 * achieved / peak:.1f}% of the "
          f"{precision_name(amp)} matmul peak; epoch of 60k in {60000 / ips:.1f} s "
          f"(target 60 s: {60 / (60000 / ips):.1f}x headroom) {where}")


if __name__ == "__main__":
    main()
