"""GAN training throughput: ganops' loop vs a pytorch/examples-dcgan-style reference loop.

    python benchmarks/bench_train.py [--steps 150] [--rounds 2]

Side by side in one run (interleaved rounds, since these machines are noisy): the same
networks, batch size and number of steps, on real Fashion-MNIST from data/prepared (random
images of its shape, 1×28×28 and 10 classes, when it has not been prepared yet).
Prints img/s of each and the ratio, the FLOPs of the step ganops takes (FlopCounterMode around
one real `Game.train_step`, built as `ganops train` builds it), and ganops' achieved GFLOP/s as
a share of this CPU's measured matmul peak in the precision training runs in (`precision: auto`
is bf16 on CPUs with native bf16, fp32 elsewhere). Every measured figure names the CPU model and
whether its bf16 is native.
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
from _peak import machine, matmul_peak_gflops, precision_name  # noqa: E402
from _reference_dcgan import reference_throughput  # noqa: E402

from ganops import runtime  # noqa: E402
from ganops.config import ModelConfig, TrainConfig  # noqa: E402
from ganops.data.prepared import load_split, read_meta  # noqa: E402
from ganops.params import load_section  # noqa: E402
from ganops.training.common import NullSink  # noqa: E402
from ganops.training.distributed import DistInfo  # noqa: E402
from ganops.training.flops import step_flops  # noqa: E402
from ganops.training.game import Game  # noqa: E402
from ganops.training.gan import EpochPlan, train_gan  # noqa: E402

# The default data's shape (meta.json of a prepared Fashion-MNIST), for a machine without it.
FALLBACK_SHAPE, FALLBACK_CLASSES, FALLBACK_N = (1, 28, 28), 10, 60_000


def load_data(data: Path) -> tuple[torch.Tensor, torch.Tensor, int, str]:
    """(images uint8 (N, C, H, W), labels (N,), classes, where they came from)."""
    if (data / "meta.json").is_file():
        x, y = load_split(data, "train")
        return x, y, int(read_meta(data)["num_classes"]), str(data)  # as `ganops train` takes it
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (FALLBACK_N, *FALLBACK_SHAPE), generator=g, dtype=torch.uint8)
    y = torch.arange(FALLBACK_N) % FALLBACK_CLASSES
    return x, y, FALLBACK_CLASSES, (f"random uint8 images {'×'.join(map(str, FALLBACK_SHAPE))}, "
                                    f"{FALLBACK_CLASSES} classes ({data} not prepared)")


def real_step_flops(cfg: TrainConfig, model_cfg: ModelConfig, x: torch.Tensor, y: torch.Tensor,
                    k: int) -> tuple[int, int, torch.dtype | None]:
    """(FLOPs of one G step, real images it consumes, its autocast dtype), counted around the first
    step of a Game built as `train_gan` builds it (same seed, device, precision, first batches)."""
    runtime.seed_everything(cfg.seed)
    device, amp = runtime.setup_runtime(cfg)
    dist = DistInfo()
    game = Game(cfg, model_cfg, x, y, k, device, amp, dist)
    game.wrap_ddp(dist)
    plan = EpochPlan(len(x), cfg, dist)
    batches = plan.epoch(0)[0]
    return step_flops(game, batches), sum(len(b) for b in batches), amp


def ganops_throughput(cfg: TrainConfig, model_cfg: ModelConfig, x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    with tempfile.TemporaryDirectory() as ckpt:
        res = train_gan(cfg, model_cfg, x, y, k, Path(ckpt), NullSink(), log=lambda *_: None)
    return float(res.metrics["img_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=150, help="G steps per loop and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--peak-seconds", type=float, default=3.0, help="time spent measuring the matmul peak")
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers (dcgan's default: 2)")
    args = ap.parse_args()
    cfg = load_section(args.params, "train", TrainConfig)
    model_cfg = load_section(args.params, "model", ModelConfig)
    # the benchmark measures the training step: no EMA/score/sample overhead differences matter at 150 steps,
    # but ganops keeps its defaults (EMA on) so the figure is what users get
    cfg = dataclasses.replace(cfg, max_steps=args.steps, epochs=1, init_from_autoencoder=False)
    x, y, k, source = load_data(Path(args.data))

    flops, images, amp = real_step_flops(cfg, model_cfg, x, y, k)
    flops_img = flops / images
    peak = matmul_peak_gflops(amp or torch.float32, seconds=args.peak_seconds)
    where = machine()
    prec = precision_name(amp)
    # printed as they come (flush): on a loaded machine a cut-short run still shows what it measured
    print(f"data: {source}; training precision {prec} (precision: {cfg.precision})", flush=True)
    print(f"GAN step FLOPs {flops / 1e6:.1f} MFLOP = {flops_img / 1e6:.1f} MFLOP per real image "
          f"(FlopCounterMode around one Game.train_step; counts do not depend on the CPU)", flush=True)
    print(f"{prec} matmul peak {peak:.0f} GFLOP/s [{where}]", flush=True)
    ours, ref = [], []
    for r in range(args.rounds):
        ref.append(reference_throughput(x, y, model_cfg, k, cfg.batch_size, args.steps, workers=args.workers))
        ours.append(ganops_throughput(cfg, model_cfg, x, y, k))
        print(f"round {r + 1}: reference {ref[-1]:.0f} img/s, ganops {ours[-1]:.0f} img/s [{where}]", flush=True)
    o, rf = statistics.median(ours), statistics.median(ref)
    achieved = o * flops_img / 1e9
    print(f"ganops {o:.0f} img/s vs reference {rf:.0f} img/s: {o / rf:.2f}x (target >= 3x) [{where}]")
    print(f"ganops achieves {achieved:.1f} GFLOP/s = {100 * achieved / peak:.1f}% of the {prec} matmul peak "
          f"(target >= 60%) [{where}]")


if __name__ == "__main__":
    main()
