"""How well a generator's stored BatchNorm statistics describe its own activations: the check behind the
standing statistics (training/ema.py standing_stats). Shared by tests/test_gan_training.py and
benchmarks/standing_stats.py, so it imports no pytest."""

from __future__ import annotations

import torch
from torch import nn

from ganops.models.latent import sample_latent
from ganops.training.ema import STANDING_SAMPLES


@torch.no_grad()
def stats_error(G: nn.Module, latent_dist: str, seed: int, n: int = STANDING_SAMPLES) -> tuple[float, float]:
    """How well G's stored BatchNorm statistics describe its own activations: G in eval mode on `n` fresh
    seeded latents (uniform labels when conditional); worst channel over all BatchNorms of
    |input mean − running mean| in running sd, and |input var / running var − 1|. G's mode is restored."""
    bns = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    seen: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].detach().float()))
             for i, m in enumerate(bns)]
    gen, was, device = torch.Generator().manual_seed(seed), G.training, next(G.parameters()).device
    try:
        z = sample_latent(n, G.latent_dim, latent_dist, generator=gen)  # (n, L)
        y = torch.randint(0, G.num_classes, (n,), generator=gen) if G.num_classes else None  # (n,)
        G.eval()(z.to(device), y.to(device) if y is not None else None)
    finally:
        for h in hooks:
            h.remove()
        G.train(was)
    worst_mean = worst_var = 0.0
    for i, m in enumerate(bns):
        x = seen[i].transpose(0, 1).flatten(1)  # (C, N·H·W)
        worst_mean = max(worst_mean, float(((x.mean(1) - m.running_mean).abs() / m.running_var.sqrt()).max()))
        worst_var = max(worst_var, float((x.var(1) / m.running_var - 1).abs().max()))
    return worst_mean, worst_var
