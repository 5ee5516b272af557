"""Speed of the FID network on this CPU, and what each speed-up does to FID.

    python benchmarks/bench_inception.py [--n 128] [--prepared data/prepared]

On N real Fashion-MNIST test images, side by side in one run:
  bare   the network alone on pre-resized (N, 3, 299, 299) tensors (extract_features' settings)
  full   ganops.metrics.extract_features (uint8 → resize → network → float64), same settings
and candidate speed-ups, each against plain fp32 (NCHW, batch 32, default threads): img/s, the
features' max relative deviation, and the relative change of FID(first N/2 vs last N/2).
A speed-up may become a default only if it keeps FID within 0.1 %.

Variants run round-robin, one batch at a time, so load from other processes on the machine hits
them alike; besides overall img/s the best batch's rate is shown (the least disturbed by other
load), and the 1-minute load average before and after. About 3 minutes on an idle 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ganops.data.prepared import load_split
from ganops.metrics import inception
from ganops.metrics.fid import FeatureStats, frechet_distance

warnings.simplefilter("ignore", FutureWarning)  # torch.jit.* deprecation notices


def raw_network(channels_last: bool = False) -> torch.jit.ScriptModule:
    """A fresh copy (variants must not share an in-place-converted module)."""
    net = torch.jit.load(str(inception.network_path()), map_location="cpu").eval()
    return net.to(memory_format=torch.channels_last) if channels_last else net


@dataclass
class Variant:
    """One way of computing features; `step` does its next batch and records the time."""

    name: str
    net: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int = 32
    channels_last: bool = False
    threads: int | None = None
    bf16: bool = False
    prepared: bool = False  # True: input is already preprocessed (the "bare" timing)
    done: int = 0
    seconds: float = 0.0
    batch_rates: list[float] = field(default_factory=list)  # img/s of each timed batch
    feats: list[np.ndarray] = field(default_factory=list)

    def features_of(self, x: torch.Tensor) -> np.ndarray:
        """uint8 (b, 1, 28, 28), or float (b, 3, 299, 299) when `prepared`  →  float64 (b, 2048)."""
        old_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            if not self.prepared:
                x = inception.preprocess(x, self.channels_last)  # (b, 3, 299, 299)
            f = self.net(x).float().numpy().astype(np.float64)  # (b, 2048)
        torch.set_num_threads(old_threads)
        return f

    def step(self, images: torch.Tensor, pre: torch.Tensor) -> None:
        x = (pre if self.prepared else images)[self.done:self.done + self.batch_size]
        t0 = time.perf_counter()
        f = self.features_of(x)
        dt = time.perf_counter() - t0
        self.seconds += dt
        self.batch_rates.append(len(x) / dt)
        self.feats.append(f)
        self.done += len(x)

    @property
    def features(self) -> np.ndarray:
        return np.concatenate(self.feats)


class FullExtract(Variant):
    """The library function itself, with its defaults."""

    def features_of(self, x: torch.Tensor) -> np.ndarray:
        return inception.extract_features(x, batch_size=self.batch_size)


def half_fid(feats: np.ndarray) -> float:
    h = len(feats) // 2
    return frechet_distance(FeatureStats.from_features(feats[:h]), FeatureStats.from_features(feats[h:]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128, help="real test images (FID is first half vs second half)")
    ap.add_argument("--prepared", default="data/prepared")
    args = ap.parse_args()

    images, _ = load_split(args.prepared, "test")
    images = images[:args.n]  # (N, 1, 28, 28) uint8
    bs, cl = inception.DEFAULT_BATCH_SIZE, inception.DEFAULT_CHANNELS_LAST
    print(f"{args.n} Fashion-MNIST test images, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cpus; load avg {os.getloadavg()[0]:.2f}")
    print(f"extract_features defaults: batch_size={bs}, channels_last={cl}")

    ofi = torch.jit.optimize_for_inference(raw_network())
    variants = [
        Variant("fp32 (baseline)", raw_network()),
        Variant("bare: defaults, network only", inception.load_network(channels_last=cl),
                batch_size=bs, channels_last=cl, prepared=True),
        FullExtract("full: extract_features (defaults)", inception.load_network(channels_last=cl), batch_size=bs),
        Variant("threads=1", raw_network(), threads=1),
        Variant("channels_last", raw_network(channels_last=True), channels_last=True),
        Variant("bf16 autocast", raw_network(), bf16=True),
        Variant("jit.freeze", torch.jit.freeze(raw_network())),
        Variant("optimize_for_inference", ofi),
        Variant("channels_last + jit.freeze", torch.jit.freeze(raw_network(channels_last=True)), channels_last=True),
        Variant("batch 8", raw_network(), batch_size=8),
        Variant("batch 64", raw_network(), batch_size=64),
    ]
    # pre-resize outside the timed region for the bare variant
    pre = inception.preprocess(images, channels_last=cl)  # (N, 3, 299, 299)

    for v in variants:  # warm-up: first calls profile the TorchScript graph and build oneDNN primitives
        v.features_of((pre if v.prepared else images)[:v.batch_size])
    while any(v.done < args.n for v in variants):  # round-robin, one batch per variant per round
        for v in variants:
            if v.done < args.n:
                v.step(images, pre)
    print(f"load avg after: {os.getloadavg()[0]:.2f}\n")

    base = variants[0]
    base_feats, base_fid = base.features, half_fid(base.features)
    bare, full = variants[1], variants[2]
    print(f"{'variant':34s} {'img/s':>7s} {'vs fp32':>8s} {'best batch':>10s} {'vs fp32':>8s} "
          f"{'feat max rel dev':>17s} {'FID':>9s} {'FID rel':>9s}")
    base_best = max(base.batch_rates)
    for v in variants:
        feats = v.features
        dev = np.abs(feats - base_feats).max() / np.abs(base_feats).max()
        fid = half_fid(feats)
        ok = "" if abs(fid / base_fid - 1) <= 1e-3 else "  (> 0.1 %: not allowed as a default)"
        best = max(v.batch_rates)
        print(f"{v.name:34s} {args.n / v.seconds:7.2f} {base.seconds / v.seconds - 1:+8.1%} {best:10.2f} "
              f"{best / base_best - 1:+8.1%} {dev:17.2e} "
              f"{fid:9.4f} {fid / base_fid - 1:+9.2e}{ok}")
    overhead = full.seconds / bare.seconds - 1
    best_overhead = max(bare.batch_rates) / max(full.batch_rates) - 1
    print(f"\noverhead of extract_features (resize, copies, float64) over the bare network: {overhead:+.1%} "
          f"overall, {best_overhead:+.1%} best batch vs best batch (target within 10 %)")


if __name__ == "__main__":
    main()
