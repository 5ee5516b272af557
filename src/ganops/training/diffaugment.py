"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random, differentiable transforms go on real and fake images before D, so D
cannot tell them apart by the augmentation and G still gets gradients through it.
Formulas follow the authors' `DiffAugment_pytorch.py`; the only change is that every
random number comes from a `torch.Generator` the loop owns (and checkpoints), drawn on
that generator's device (CPU) and then moved, so a resumed run draws the same numbers.

    x = diff_augment(x, ("color", "translation", "cutout"), gen)   # (B, C, H, W) in, same out
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ganops.choices import DIFFAUG_OPS


def _rand(n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """(n, 1, 1, 1) uniform [0, 1) from `gen`, on `like`'s device and dtype."""
    return torch.rand(n, 1, 1, 1, generator=gen, device=gen.device).to(like.device, like.dtype)


def rand_brightness(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Add one offset in [-0.5, 0.5) per image."""
    return x + (_rand(x.size(0), gen, x) - 0.5)


def rand_saturation(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Scale each pixel's distance from its channel mean by a factor in [0, 2) (RGB only)."""
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    return (x - mean) * (_rand(x.size(0), gen, x) * 2) + mean


def rand_contrast(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Scale each image's distance from its mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=[1, 2, 3], keepdim=True)  # (B, 1, 1, 1)
    return (x - mean) * (_rand(x.size(0), gen, x) + 0.5) + mean


def rand_translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio·size pixels per axis, filling with zeros."""
    B, _, H, W = x.shape
    sh, sw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (B, 1, 1), generator=gen, device=gen.device).to(x.device)
    ty = torch.randint(-sw, sw + 1, (B, 1, 1), generator=gen, device=gen.device).to(x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(B, device=x.device), torch.arange(H, device=x.device),
                                torch.arange(W, device=x.device), indexing="ij")  # each (B, H, W)
    gx = torch.clamp(gx + tx + 1, 0, H + 1)
    gy = torch.clamp(gy + ty + 1, 0, W + 1)
    x_pad = F.pad(x, [1, 1, 1, 1])  # (B, C, H+2, W+2)  the zero border is what shifted-in pixels read
    return x_pad.permute(0, 2, 3, 1)[gb, gx, gy].permute(0, 3, 1, 2)  # (B, C, H, W), NHWC in memory


def rand_cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio·size per image at a random centre (may overhang the border)."""
    B, _, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    ox = torch.randint(0, H + (1 - ch % 2), (B, 1, 1), generator=gen, device=gen.device).to(x.device)
    oy = torch.randint(0, W + (1 - cw % 2), (B, 1, 1), generator=gen, device=gen.device).to(x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(B, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")  # each (B, ch, cw)
    gx = torch.clamp(gx + ox - ch // 2, min=0, max=H - 1)
    gy = torch.clamp(gy + oy - cw // 2, min=0, max=W - 1)
    mask = torch.ones(B, H, W, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)  # (B, C, H, W)


_FNS: dict[str, list[Callable[[torch.Tensor, torch.Generator], torch.Tensor]]] = {
    "color": [rand_brightness, rand_saturation, rand_contrast],
    "translation": [rand_translation],
    "cutout": [rand_cutout],
}
assert set(_FNS) == set(DIFFAUG_OPS), "an op in choices.DIFFAUG_OPS needs its functions here"


def diff_augment(x: torch.Tensor, ops: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """Apply `ops` (in order) to x (B, C, H, W); each image gets its own random parameters.

    Saturation is skipped for 1-channel images: with one channel it is the identity and
    would only consume random numbers.
    """
    for op in ops:
        if op not in _FNS:
            raise ValueError(f"unknown DiffAugment op {op!r}; use {', '.join(DIFFAUG_OPS)}")
        for fn in _FNS[op]:
            if fn is rand_saturation and x.size(1) == 1:
                continue
            x = fn(x, gen)
    return x
