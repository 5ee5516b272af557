"""Seeded samples from a loaded generator: the latents and labels for (n, seed), and G's images for them.

One sampling path for every consumer — the evaluate stage (10k images streamed to Inception), the
registry's pyfunc model, and `ganops sample` — so an image drawn for (seed, index, class) is the
same pixels everywhere:

    G, config = load_generator("models/generator.pt")          # ganops.models.generator
    images, labels = sample_images(G, config, n=64, seed=0)    # uint8 (64, C, H, W), int64 (64,) or None
    for batch, labels in sample_stream(G, config, n=10_000, seed=0, batch_size=500): ...

Latents and labels come from one CPU `torch.Generator` seeded with `seed`, drawn for all n at once,
so the first k of n samples equal the n = k samples and CPU/CUDA runs see the same noise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ganops.models.latent import sample_latent
from ganops.runtime import to_uint8


def seeded_latents(n: int, latent_dim: int, latent_dist: str, num_classes: int, conditional: bool, seed: int,
                   class_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """z (n, Z) and labels (n,) or None, drawn in that order from one CPU generator seeded with `seed`:
    every consumer that draws "n samples for seed s" (sampling, the judge and pixel scorers) sees the same."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    z = sample_latent(n, latent_dim, latent_dist, generator=g)  # (n, Z)
    if not conditional:
        if class_id is not None:
            raise ValueError("class given, but this generator is unconditional")
        return z, None
    if class_id is not None:
        if not 0 <= class_id < num_classes:
            raise ValueError(f"class must be in [0, {num_classes}), got {class_id}")
        return z, torch.full((n,), class_id, dtype=torch.int64)
    return z, torch.randint(0, num_classes, (n,), generator=g)  # (n,) uniform over classes


@torch.inference_mode()
def generate_batches(G: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None,
             batch_size: int = 500) -> Iterator[torch.Tensor]:
    """G's float output (b, C, H, W) in [-1, 1] on G's device for z (n, Z) and labels (n,) or None, b <= batch_size.

    G runs in eval mode (BatchNorm's running statistics, no dropout) and gets its mode back however the
    loop ends; in fp32, so samples and the scores made from them do not depend on the CPU's bf16 support.
    """
    device = next(G.parameters()).device
    was_training = G.training
    G.eval()
    try:
        with torch.autocast(device.type, enabled=False):
            for s in range(0, len(z), batch_size):
                yb = y[s:s + batch_size].to(device) if y is not None else None
                yield G(z[s:s + batch_size].to(device), yb)  # (b, C, H, W)
    finally:
        G.train(was_training)


def sample_stream(G: torch.nn.Module, config: dict[str, Any], n: int, seed: int = 0, batch_size: int = 500,
                  class_id: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield (uint8 images (b, C, H, W) on CPU, labels (b,) or None) for n seeded samples, b <= batch_size.

    Images are rounded to uint8 exactly like the prepared data, so metrics see what a saved PNG holds.
    """
    model = config["model"]
    z, y = seeded_latents(n, int(model["latent_dim"]), model["latent_dist"], int(config["num_classes"]),
                          bool(model.get("conditional")), seed, class_id)
    for s, x in zip(range(0, n, batch_size), generate_batches(G, z, y, batch_size), strict=True):
        yield to_uint8(x).cpu(), (y[s:s + batch_size] if y is not None else None)


def sample_images(G: torch.nn.Module, config: dict[str, Any], n: int, seed: int = 0,
                  class_id: int | None = None, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All n seeded samples at once: uint8 (n, C, H, W) and labels (n,) or None."""
    parts = list(sample_stream(G, config, n, seed, batch_size, class_id))
    if not parts:
        c, s = int(config["channels"]), int(config["image_size"])
        return torch.empty(0, c, s, s, dtype=torch.uint8), None
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts]) if parts[0][1] is not None else None
    return images, labels
