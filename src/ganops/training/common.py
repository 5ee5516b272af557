"""What the training loops share beyond the runtime (ganops.runtime): where they report to, and the
shuffled index batches of the single-process loops (autoencoder, judge)."""

from __future__ import annotations

from typing import Protocol

import torch


class MetricSink(Protocol):
    """Where loops report to; the pipeline passes an MLflow-backed one, tests a list."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_image_grid(self, images: torch.Tensor, key: str, step: int | None = None, nrow: int = 8) -> None: ...


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """A permutation of range(n) drawn from `gen`, cut into index batches; a trailing partial batch is dropped
    when there is more than one batch (BatchNorm on a tiny last batch has noisy or undefined statistics)."""
    cuts = list(torch.randperm(n, generator=gen).split(batch_size))
    if len(cuts) > 1 and len(cuts[-1]) < batch_size:
        cuts.pop()
    return cuts


class NullSink:
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_image_grid(self, images: torch.Tensor, key: str, step: int | None = None, nrow: int = 8) -> None:
        pass
