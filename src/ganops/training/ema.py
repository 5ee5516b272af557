"""Exponential moving average of the generator's weights (the G that gets shipped)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """A frozen copy of `model` whose parameters trail the live ones.

        ema = EMA(G, decay=0.999)
        ...; opt_g.step(); ema.update(G, step)

    Parameters: p_ema ← d·p_ema + (1 − d)·p with d = min(decay, (1 + step) / (10 + step)).
    The warm-up term (as in TensorFlow's ExponentialMovingAverage with num_updates) keeps
    early checkpoints from being mostly the random init: at decay 0.999 an epoch of 468
    steps would otherwise leave 63 % of the weight on the initial G.
    Buffers (BatchNorm running stats) are copied, not averaged. The copy stays in eval mode.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._src: nn.Module | None = None

    def _params(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if self._pairs is None or self._src is not model:  # cached: the lists never change
            ema = [p.detach() for p in self.model.parameters()]
            src = [p.detach() for p in model.parameters()]
            if len(ema) != len(src):
                raise ValueError("EMA.update: model does not match the averaged copy")
            self._pairs, self._src = (ema, src), model
        return self._pairs

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards `model` (the unwrapped G, not its DDP wrapper)."""
        ema, src = self._params(model)
        torch._foreach_lerp_(ema, src, 1.0 - self.decay_at(step))
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)
