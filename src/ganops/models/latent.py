"""Latent sampling: the noise G is fed, from one seeded `torch.Generator` for reproducibility."""

from __future__ import annotations

import torch

from ganops.choices import LATENT_DISTS


def sample_latent(
    n: int,
    latent_dim: int,
    dist: str = "normal",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """n latent vectors (n, latent_dim), float32: standard normal, or uniform in [-1, 1].

    `device` defaults to the generator's device (or the default device without one), so a
    seeded CPU generator gives the same numbers on every machine.
    """
    if device is None and generator is not None:
        device = generator.device
    if dist == "normal":
        return torch.randn(n, latent_dim, generator=generator, device=device)  # (n, latent_dim)
    if dist == "uniform":
        u = torch.rand(n, latent_dim, generator=generator, device=device)  # (n, latent_dim) in [0, 1)
        return u.mul_(2).sub_(1)  # (n, latent_dim) in [-1, 1)
    raise ValueError(f"latent dist {dist!r} not supported; use {' or '.join(LATENT_DISTS)}")
