"""The loop's measurements between log points: the step's STATS kept on device, throughput, epoch means."""

from __future__ import annotations

import math
import time

import torch

from ganops.training.distributed import DistInfo, all_reduce_mean
from ganops.training.game import STATS


class StepMeter:
    """Per-step STATS stay on the device; `flush` syncs once per log point (mean over ranks).

    Also keeps the run's throughput (real images consumed per second of training steps,
    not counting samples, scores and checkpoints) and the current epoch's sums.
    """

    def __init__(self, dist: DistInfo, images_per_step: int) -> None:
        self.dist, self.images_per_step = dist, images_per_step
        self.buf: list[torch.Tensor] = []
        self.mark = time.perf_counter()  # start of the interval being measured
        self.train_seconds, self.images = 0.0, 0
        self.epoch_sum, self.epoch_n = torch.zeros(len(STATS), dtype=torch.float64), 0

    def add(self, stats: torch.Tensor) -> None:
        self.buf.append(stats)  # (len(STATS),) on device: no sync

    def flush(self, step: int) -> tuple[dict[str, float], tuple[int, str, float] | None] | None:
        """(means of STATS and img_per_s since the last flush, first non-finite loss (step, name, value) or
        None); None when no step ran since the last flush. Collective when distributed."""
        if not self.buf:
            return None
        stats = all_reduce_mean(torch.stack(self.buf), self.dist).cpu()  # (k, len(STATS)): the one sync
        k, first = len(self.buf), step - len(self.buf) + 1
        self.buf.clear()
        bad = (~torch.isfinite(stats[:, :2])).nonzero()  # (n_bad, 2): rows, loss columns
        if len(bad):
            r, c = (int(i) for i in bad[0])
            return {}, (first + r, STATS[c], stats[r, c].item())
        now = time.perf_counter()
        seconds, self.mark = max(now - self.mark, 1e-9), now
        self.train_seconds += seconds
        self.images += k * self.images_per_step
        self.epoch_sum += stats.double().sum(0)
        self.epoch_n += k
        means = dict(zip(STATS, stats.mean(0).tolist(), strict=True))
        return {**means, "img_per_s": k * self.images_per_step / seconds}, None

    def epoch_means(self) -> dict[str, float]:
        """Means of STATS over the epoch so far (NaN if no step), and a reset."""
        means = (self.epoch_sum / self.epoch_n).tolist() if self.epoch_n else [math.nan] * len(STATS)
        self.epoch_sum.zero_()
        self.epoch_n = 0
        return dict(zip(STATS, means, strict=True))

    def throughput(self) -> float:
        return self.images / max(self.train_seconds, 1e-9)
