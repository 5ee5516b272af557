"""Exponential moving average of the generator's weights (the G that gets shipped)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ganops.models.latent import sample_latent

STANDING_SAMPLES = 4096  # latents per recompute (16 batches, as BigGAN accumulates): channel means within ~0.01 sd
STANDING_BATCH = 256


class EMA:
    """A frozen copy of `model` whose parameters trail the live ones.

        ema = EMA(G, decay=0.999)
        ...; opt_g.step(); ema.update(G, step)

    Parameters: p_ema ← d·p_ema + (1 − d)·p with d = min(decay, (1 + step) / (10 + step)).
    The warm-up term (as in TensorFlow's ExponentialMovingAverage with num_updates) keeps
    early checkpoints from being mostly the random init: at decay 0.999 an epoch of 468
    steps would otherwise leave 63 % of the weight on the initial G.
    Buffers (BatchNorm running stats) are copied from the live G each step, which describes another
    network's activations: whoever uses or writes the averaged G first recomputes them with
    `standing_stats` (the training loop does at every epoch end). The copy stays in eval mode.
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


@torch.no_grad()
def standing_stats(G: nn.Module, latent_dist: str, seed: int, n: int = STANDING_SAMPLES,
                   batch: int = STANDING_BATCH) -> None:
    """Recompute every BatchNorm's running mean/var of generator `G` for its current weights, in place.

    BigGAN's "standing statistics" (also StudioGAN, OASIS): the averaged weights of an EMA G never ran
    in train mode, so copied buffers belong to the live G. Here G runs in train mode with momentum None
    (a cumulative average over equal batches) on `n` latents (and uniform labels when conditional)
    drawn from a generator seeded with `seed`, in fp32 as G is evaluated; G's mode is restored after.
    Deterministic for equal weights and seed; draws from no other RNG.
    """
    bns = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    momenta, was = [m.momentum for m in bns], G.training
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        G.train()
        for start in range(0, n, batch):
            b = min(batch, n - start)
            z = sample_latent(b, G.latent_dim, latent_dist, generator=gen)  # (b, L)
            y = torch.randint(0, G.num_classes, (b,), generator=gen) if G.num_classes else None  # (b,)
            G(z.to(device), y.to(device) if y is not None else None)
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        G.train(was)
