"""Inception FID at small N for several generators, side by side: a pruning score that is the
decision metric's own network (FID10k's), at a fraction of its cost.

    python benchmarks/fid_small.py GEN.pt|exp:NAME [...] [--n 2000] [--seed 42]

Each generator (a shipped `models/generator.pt` or a training checkpoint) draws N seeded samples
exactly as `ganops evaluate` does; their TF-Inception features are compared with the cached test
statistics (`stats/test_inception.safetensors`, the evaluate stage's reference). FID at N < 10k is
biased upward by an amount that depends mostly on N (the real-data floor is 8.1 at N = 2k vs 2.5
at 10k), so compare only numbers with the same N. ~3 minutes per generator at N = 2000 on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _exp import resolve

from ganops.metrics.fid import FeatureStats, frechet_distance
from ganops.metrics.inception import extract_features
from ganops.models.generator import load_generator
from ganops.models.seeded_samples import sample_stream


def fid_small(path: Path, ref: FeatureStats, n: int, seed: int) -> tuple[float, float]:
    """(FID of n samples of the generator at `path` vs `ref`, seconds)."""
    t0 = time.perf_counter()
    G, config = load_generator(path)
    stream = (images for images, _ in sample_stream(G, config, n, seed=seed, batch_size=500))
    feats = extract_features(stream, total=n)  # (n, 2048) float64
    return frechet_distance(FeatureStats.from_features(feats), ref), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("generators", nargs="+", help="generator files, or exp:NAME for a DVC experiment's")
    ap.add_argument("--reference", type=Path, default=Path("stats/test_inception.safetensors"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=42, help="sampling seed (evaluate uses params.yaml seed: 42)")
    args = ap.parse_args()
    ref = FeatureStats.load(args.reference)
    for name, path in (resolve(g) for g in args.generators):
        fid, secs = fid_small(path, ref, args.n, args.seed)
        print(f"{name}: fid{args.n // 1000}k {fid:.2f} ({secs:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
