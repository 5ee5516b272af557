"""Losses as small pure functions. Inputs are logits or [-1, 1] images; outputs scalars.

Computed in fp32 even under autocast: the mixed-precision forward pass hands its
outputs here and `.float()` keeps the reductions exact enough to compare runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction(recon: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean per-pixel reconstruction loss of images in [-1, 1]: mse, or bce on [0, 1]."""
    recon, x = recon.float(), x.float()
    if kind == "mse":
        return F.mse_loss(recon, x)
    if kind == "bce":
        p = ((recon + 1) / 2).clamp(1e-6, 1 - 1e-6)
        return F.binary_cross_entropy(p, (x + 1) / 2)
    raise ValueError(f"unknown reconstruction loss {kind!r}")


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), summed over latent dims, mean over the batch."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
