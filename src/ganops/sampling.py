"""Drawing pictures from a generator for people: PNG grids, single PNGs, latent interpolations.

The pixels come from `ganops.models.seeded_samples` (the same seeded draw the evaluate stage and the served
model use); this module only arranges and writes them, atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganops.io import atomic_file


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of latents z0, z1 (Z,) at t (T,) → (T, Z): Gaussian latents keep their
    norm along the path (a straight line would pass through low-norm, atypical points)."""
    a, b = z0 / z0.norm(), z1 / z1.norm()
    omega = torch.arccos((a * b).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    t = t.view(-1, 1)  # (T, 1)
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)  # (T, Z)


@torch.inference_mode()
def interpolate(G: torch.nn.Module, config: dict[str, Any], n: int, seed: int,
                class_id: int | None = None) -> torch.Tensor:
    """n uint8 images (n, C, H, W) along a path between two seeded latents (slerp for normal latents,
    a straight line for uniform ones); a conditional G keeps one class (given, or drawn by the seed)."""
    from ganops.models.latent import sample_latent
    from ganops.models.seeded_samples import generate_batches
    from ganops.runtime import to_uint8

    if n < 2:
        raise ValueError(f"an interpolation needs n >= 2 frames, got {n}")
    model = config["model"]
    g = torch.Generator().manual_seed(seed)
    z = sample_latent(2, int(model["latent_dim"]), model["latent_dist"], generator=g)  # (2, Z)
    t = torch.linspace(0, 1, n)
    path = slerp(z[0], z[1], t) if model["latent_dist"] == "normal" else z[0] + t.view(-1, 1) * (z[1] - z[0])
    y = None
    if model.get("conditional"):
        k = int(config["num_classes"])
        cls = int(torch.randint(0, k, (1,), generator=g)) if class_id is None else class_id
        if not 0 <= cls < k:
            raise ValueError(f"class must be in [0, {k}), got {cls}")
        y = torch.full((n,), cls, dtype=torch.int64)
    elif class_id is not None:
        raise ValueError("class given, but this generator is unconditional")
    x = torch.cat(list(generate_batches(G, path, y, batch_size=n)))  # (n, C, H, W)
    return to_uint8(x).cpu()


def write_grid(path: str | Path, images: torch.Tensor, nrow: int = 8) -> Path:
    """uint8 images (N, C, H, W) as one PNG grid, `nrow` a row, written atomically."""
    from PIL import Image

    from ganops.tracking import image_grid

    with atomic_file(path) as f:
        Image.fromarray(image_grid(images, nrow=nrow)).save(f, format="PNG")
    return Path(path)


def write_pngs(directory: str | Path, images: torch.Tensor) -> list[Path]:
    """One PNG per uint8 image (N, C, H, W): 0000.png, 0001.png, ... (gray stays gray)."""
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        arr = img.permute(1, 2, 0).numpy()  # (H, W, C)
        path = directory / f"{i:04d}.png"
        with atomic_file(path) as f:
            Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(f, format="PNG")
        paths.append(path)
    return paths


def class_rows(images: torch.Tensor, labels: np.ndarray | torch.Tensor, num_classes: int,
               per_row: int) -> tuple[torch.Tensor, list[int]]:
    """Arrange uint8 images (N, C, H, W) as one row per class: the first `per_row` images of each label.

    Returns (images (R·per_row, C, H, W) with short rows padded by blank images, the class of each row);
    classes with no image are left out, so a collapsed mode is visible as a missing row.
    """
    labels = torch.as_tensor(np.asarray(labels)).long()  # (N,)
    rows, classes = [], []
    for k in range(num_classes):
        picked = images[labels == k][:per_row]  # (<= per_row, C, H, W)
        if len(picked) == 0:
            continue
        pad = torch.zeros((per_row - len(picked), *images.shape[1:]), dtype=images.dtype)
        rows.append(torch.cat([picked, pad]))
        classes.append(k)
    return (torch.cat(rows) if rows else images[:0]), classes
