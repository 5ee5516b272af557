"""What the training loops share beyond the runtime (ganops.runtime): where they report to."""

from __future__ import annotations

from typing import Protocol

import torch


class MetricSink(Protocol):
    """Where loops report to; the pipeline passes an MLflow-backed one, tests a list."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_image_grid(self, images: torch.Tensor, key: str, step: int | None = None, nrow: int = 8) -> None: ...


class NullSink:
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_image_grid(self, images: torch.Tensor, key: str, step: int | None = None, nrow: int = 8) -> None:
        pass
