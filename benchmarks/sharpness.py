"""How much fine detail generators draw, against the real test images: a cheap check of the
"clean silhouettes, blurred interiors" reading of the sample grids (docs/results.md).

    python benchmarks/sharpness.py GEN.pt|exp:NAME [...] [--n 10000] [--data data/prepared]

Per image set, on uint8 pixels scaled to [0, 1]:
- grad: mean |finite-difference gradient| (edges and texture);
- lap:  mean |discrete Laplacian| (the finest detail; blur removes it first);
- hf:   share of the spectral power (DC removed) above half the Nyquist frequency;
- ink:  mean pixel value (so a sharper score is not just more or brighter garment);
- with --judge: the judge's class coverage of the same images, "min share" (weakest class share × K,
  the gate's coverage rule) and "H" (normalised entropy), one judge for every row.
Each generator's row also shows the ratio to the test set. Seconds per generator, N = 10k: ~2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _exp import resolve

from ganops.data.prepared import load_split
from ganops.metrics.judge import class_coverage, judge_predict, load_judge
from ganops.models.generator import load_generator
from ganops.models.seeded_samples import sample_images


def detail(x: torch.Tensor) -> dict[str, float]:
    """x: uint8 (N, C, H, W) -> the statistics in the module docstring."""
    x = x.float() / 255  # (N, C, H, W) in [0, 1]
    gx, gy = x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]
    grad = 0.5 * (gx.abs().mean() + gy.abs().mean())
    lap = (x[..., 1:-1, :-2] + x[..., 1:-1, 2:] + x[..., :-2, 1:-1] + x[..., 2:, 1:-1]
           - 4 * x[..., 1:-1, 1:-1]).abs().mean()
    power = torch.fft.fftshift(torch.fft.fft2(x - x.mean(dim=(-2, -1), keepdim=True)).abs() ** 2,
                               dim=(-2, -1))  # (N, C, H, W), zero frequency at the centre
    h, w = x.shape[-2:]
    fy = torch.fft.fftshift(torch.fft.fftfreq(h)).abs()[:, None]  # (H, 1) cycles/pixel, Nyquist 0.5
    fx = torch.fft.fftshift(torch.fft.fftfreq(w)).abs()[None, :]  # (1, W)
    high = (torch.maximum(fy, fx) > 0.25).float()  # (H, W): above half-Nyquist on either axis
    hf = (power * high).sum() / power.sum()
    return {"grad": float(grad), "lap": float(lap), "hf": float(hf), "ink": float(x.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("generators", nargs="+", help="generator files, or exp:NAME for a DVC experiment's")
    ap.add_argument("--data", type=Path, default=Path("data/prepared"))
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--judge", type=Path, help="judge checkpoint (models/judge.pt): add class coverage")
    args = ap.parse_args()
    torch.manual_seed(0)
    test, _ = load_split(args.data, "test")
    judge = load_judge(args.judge) if args.judge else None

    def stats(images: torch.Tensor) -> dict[str, float]:
        d = detail(images)
        if judge is not None:
            cov = class_coverage(judge_predict(judge, images), judge.num_classes)
            d |= {"min share": cov["min_share_ratio"], "H": cov["normalized_entropy"]}
        return d

    real = stats(test[: args.n])
    keys = list(real)
    print(f"| images | {' | '.join(keys)} | {' | '.join(k + ' / test' for k in keys)} |")
    print(f"|---|{'---|' * 2 * len(keys)}")
    print(f"| test (real, {min(args.n, len(test))}) | {' | '.join(f'{real[k]:.4f}' for k in keys)} |"
          f"{' 1 |' * len(keys)}")
    train, _ = load_split(args.data, "train")
    rows = [("train (real)", lambda: train[: args.n])]  # the real-vs-real control: ratios ~1
    rows += [(name, lambda p=p: sample_images(*load_generator(p), args.n, seed=args.seed)[0])
             for name, p in map(resolve, args.generators)]
    for name, images in rows:
        d = stats(images())
        print(f"| {name} ({args.n}) | {' | '.join(f'{d[k]:.4f}' for k in keys)} | "
              f"{' | '.join(f'{d[k] / real[k]:.2f}' for k in keys)} |")


if __name__ == "__main__":
    main()
