"""FLOPs of the training step ganops takes, counted by torch's FlopCounterMode.

    flops = step_flops(game, batches)         # FLOPs of that G step (its d_steps D updates included)
    total = flops * steps                     # every step has the same shapes

FlopCounterMode counts matrix products and convolutions, forward and backward (2·m·n·k per
m×k by k×n product): the work that bounds a step. Elementwise ops, losses, the optimiser and the
EMA update (which follows the step) are not counted. Counting around `Game.train_step` itself, not a re-enactment of it,
keeps the figure true to what ganops runs: G's update passes B fakes through a spectral-norm D,
but 2B images (the reals beside the fakes) through a D with BatchNorm. The counts depend on
shapes only, not on the CPU, the precision or the values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
    from ganops.training.game import Game

T = TypeVar("T")


def counted(fn: Callable[[], T]) -> tuple[T, int]:
    """(fn(), the FLOPs FlopCounterMode saw while it ran, forward and backward). Counting only
    observes: the result is the same as fn()'s uncounted, so a loop can count its real first step."""
    with _TotalFlopCounter() as fc:
        out = fn()
    return out, int(fc.get_total_flops())


class _NoModules:
    """Stands in for FlopCounterMode's ModuleTracker: every count goes to the total only."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _NoModules:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _TotalFlopCounter(FlopCounterMode):
    """FlopCounterMode without per-module attribution. Its ModuleTracker hooks every module's backward,
    which breaks `torch.autograd.grad` inside the step (gradient penalty, R1: "a leaf node was passed to
    _will_engine_execute_node"); ganops needs the total only."""

    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _NoModules()


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs FlopCounterMode sees while `fn` runs (forward and backward)."""
    return counted(fn)[1]


def step_flops(game: Game, batches: list[torch.Tensor]) -> int:
    """FLOPs of `game.train_step(batches)`: d_steps D updates on the index batches, then the G update.

    The step is taken (weights, optimisers and RNG streams move on), so count a run's first
    step rather than an extra one, or use a game built for counting.
    """
    return count_flops(lambda: game.train_step(batches))
