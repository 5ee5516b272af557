"""`ganops sample`: a PNG grid (and optionally single PNGs) from a registered or local generator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from pipelines.common import DebugOpt, check_writable, run

MAX_N = 4096  # images in one grid: 4096 28×28 images make a 2k×2k PNG; more is a typo, not a request


def check_options(n: int, nrow: int, seed: int) -> None:
    """Refuse option values the command cannot use, in one line each (typer's own range check prints a usage box)."""
    from ganops.config import check_seed
    from ganops.errors import GanopsError

    if not 1 <= n <= MAX_N:
        raise GanopsError(f"-n/--num: must be >= 1 and <= {MAX_N}, got {n}")
    if nrow < 1:
        raise GanopsError(f"--nrow: must be >= 1, got {nrow}")
    try:
        check_seed(seed, "--seed")
    except ValueError as e:
        raise GanopsError(str(e)) from None


def main(
    model: Annotated[str, typer.Option(help="models:/<name>@<alias>, models:/<name>/<version>, or a .pt file")] = (
        "models:/ganops-generator@champion"),
    n: Annotated[int, typer.Option("-n", "--num", help=f"number of images (1..{MAX_N})")] = 64,
    out: Annotated[Path, typer.Option(help="PNG grid to write")] = Path("samples.png"),
    seed: Annotated[int, typer.Option(help="seed of the latents, 0..2**63-1 (same seed, same images)")] = 0,
    class_id: Annotated[int | None, typer.Option("--class", help="class to draw (conditional models)")] = None,
    interpolate: Annotated[bool, typer.Option("--interpolate", help="n frames between two latents")] = False,
    individual: Annotated[Path | None, typer.Option(help="also write one PNG per image into this directory")] = None,
    nrow: Annotated[int, typer.Option(help="images per grid row (>= 1)")] = 8,
    debug: DebugOpt = False,
) -> None:
    """Draw images from a generator into a PNG grid; pickle-free for registry models."""

    def go() -> None:
        check_options(n, nrow, seed)
        check_writable(out, dirs=[individual])
        from ganops.checkpoint import key_from_env
        from ganops.errors import GanopsError
        from ganops.models.generator import load_generator
        from ganops.models.seeded_samples import sample_images
        from ganops.sampling import interpolate as interp
        from ganops.sampling import write_grid, write_pngs

        key = key_from_env(os.environ)  # a registered generator is held to the same signature as a file
        if model.startswith("models:/"):
            from ganops.tracking.model_registry import load_registered_generator

            G, config = load_registered_generator(model, key=key)
        else:
            G, config = load_generator(model, key=key)
        try:
            if interpolate:
                images = interp(G, config, n, seed, class_id)
            else:
                images, _ = sample_images(G, config, n, seed, class_id)
        except ValueError as e:
            raise GanopsError(f"{model}: {e}") from None
        write_grid(out, images, nrow=n if interpolate and n <= 16 else nrow)
        extra = ""
        if individual is not None:
            extra = f" and {len(write_pngs(individual, images))} PNGs in {individual}"
        typer.echo(f"sample: wrote {out}{extra} ({n} images, seed {seed}, from {model})")

    run(go, debug)
