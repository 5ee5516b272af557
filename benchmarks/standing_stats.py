"""Standing BatchNorm statistics, before and after, on one training checkpoint (issue 13).

    python benchmarks/standing_stats.py checkpoints/last.pt [--n 2000] [--seed 42]

The same averaged (EMA) weights twice: with the live G's BatchNorm buffers copied in (what the EMA
shipped before ganops recomputed them) and with the standing statistics the checkpoint holds. For
each it prints how far every BatchNorm's stored mean/var are from the statistics of that layer's
actual inputs on fresh seeded latents (worst channel), and Inception FID at N against the cached
test statistics (`stats/test_inception.safetensors`), drawn exactly as `ganops evaluate` draws.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.batchnorm_check: the check the tests run too

from ganops.checkpoint import load_checkpoint  # noqa: E402
from ganops.metrics.fid import FeatureStats, frechet_distance  # noqa: E402
from ganops.metrics.inception import extract_features  # noqa: E402
from ganops.models.generator import load_generator  # noqa: E402
from ganops.models.seeded_samples import sample_stream  # noqa: E402
from tests.batchnorm_check import stats_error  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="a GAN training checkpoint (checkpoints/last.pt)")
    ap.add_argument("--reference", type=Path, default=Path("stats/test_inception.safetensors"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=42, help="sampling seed (evaluate uses params.yaml seed: 42)")
    args = ap.parse_args()
    ref = FeatureStats.load(args.reference)
    standing, config = load_generator(args.checkpoint)
    copied, _ = load_generator(args.checkpoint)
    state, _ = load_checkpoint(args.checkpoint, kind="gan")
    live_buffers = {k: v for k, v in state["G"].items() if "running_" in k or "num_batches" in k}
    copied.load_state_dict({**copied.state_dict(), **live_buffers})
    for name, G in (("copied from the live G", copied), ("standing (recomputed)", standing)):
        worst_mean, worst_var = stats_error(G, config["model"]["latent_dist"], seed=12345)
        t0 = time.perf_counter()
        stream = (images for images, _ in sample_stream(G, config, args.n, seed=args.seed, batch_size=500))
        fid = frechet_distance(FeatureStats.from_features(extract_features(stream, total=args.n)), ref)
        print(f"{name}: BN stored vs actual, worst channel: mean {worst_mean:.3f} sd, var {100 * worst_var:.1f} %; "
              f"fid{args.n // 1000}k {fid:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
