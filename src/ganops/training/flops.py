"""FLOPs of the training step ganops takes, counted by torch's FlopCounterMode.

    flops = step_flops(game, batches, step)   # FLOPs of that G step (its d_steps D updates included)
    total = flops * steps                     # every step has the same shapes

FlopCounterMode counts matrix products and convolutions, forward and backward (2·m·n·k per
m×k by k×n product): the work that bounds a step. Elementwise ops, losses, the optimiser and the
EMA update are not counted. Counting around `Game.train_step` itself, not a re-enactment of it,
keeps the figure true to what ganops runs: G's update passes B fakes through a spectral-norm D,
but 2B images (the reals beside the fakes) through a D with BatchNorm. The counts depend on
shapes only, not on the CPU, the precision or the values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ganops.training.game import Game


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs FlopCounterMode sees while `fn` runs (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def step_flops(game: Game, batches: list[torch.Tensor], step: int = 1) -> int:
    """FLOPs of `game.train_step(batches, step)`: d_steps D updates on the index batches, then the G update.

    The step is taken (weights, optimisers, EMA and RNG streams move on), so count a run's first
    step rather than an extra one, or use a game built for counting.
    """
    return count_flops(lambda: game.train_step(batches, step))
