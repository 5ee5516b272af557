"""Make the README's pictures from the outputs of the last `dvc repro`, stamped with the generator they show:

    .venv/bin/python docs/figures.py [--root DIR]   # → docs/champion_grid.png, docs/training_curves.png

The grid is 16 samples (seed 0) per class of `models/generator.pt`, one row each (64 for an unconditional
generator), the same pixels `ganops sample` draws; the curves are `plots/train.csv` (D/G loss,
D(x)/D(G(z))) and `plots/train_epochs.csv` (the per-epoch judge FID), all written by the same train stage.

Each PNG carries the md5 of the generator file in a text chunk (`PROVENANCE_KEY`), the hash DVC records
for `models/generator.pt` in `dvc.lock`. The script refuses to draw a generator that is not the one
`dvc.lock` records (an uncommitted experiment in the workspace), and `tests/test_figures.py` fails when
the committed pictures carry another hash than the committed `dvc.lock`: the pictures are the shipped model's.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib
import pandas as pd
import torch
import yaml
from PIL import Image
from PIL.PngImagePlugin import PngInfo

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("docs/champion_grid.png", "docs/training_curves.png")
GENERATOR = "models/generator.pt"
PROVENANCE_KEY = "ganops:generator-md5"  # PNG tEXt key: md5 of the generator file the picture shows


def locked_md5(lock: Path, out: str = GENERATOR) -> str:
    """The md5 `dvc.lock` records for output `out` (the stage that writes it); SystemExit if not exactly one."""
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    md5s = {o["md5"] for st in stages.values() for o in st.get("outs", []) if o.get("path") == out}
    if len(md5s) != 1:
        raise SystemExit(f"{lock}: {len(md5s)} md5s recorded for output {out}, expected 1")
    return md5s.pop()


def stamped_md5(png: Path) -> str | None:
    """The generator md5 stamped in a PNG by this script, None if it has none."""
    with Image.open(png) as im:
        return im.text.get(PROVENANCE_KEY)  # type: ignore[attr-defined]


def save_png(path: Path, image: Image.Image, md5: str) -> None:
    info = PngInfo()
    info.add_text(PROVENANCE_KEY, md5)
    from ganops.io import atomic_file

    with atomic_file(path) as f:
        image.save(f, format="PNG", pnginfo=info)


def draw_grid(root: Path) -> Image.Image:
    from ganops.models.generator import load_generator
    from ganops.models.seeded_samples import sample_images
    from ganops.tracking import image_grid

    G, config = load_generator(root / GENERATOR)
    if config["model"].get("conditional"):  # one row of 16 per class, the class order of the data
        images = torch.cat([sample_images(G, config, 16, seed=0, class_id=c)[0]
                            for c in range(int(config["num_classes"]))])
    else:
        images, _ = sample_images(G, config, 64, seed=0)
    return Image.fromarray(image_grid(images, nrow=16))


def draw_curves(root: Path) -> Image.Image:
    df = pd.read_csv(root / "plots/train.csv")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    axes[0].plot(df["step"], df["d_loss"], label="D loss", lw=0.8)
    axes[0].plot(df["step"], df["g_loss"], label="G loss", lw=0.8)
    axes[1].plot(df["step"], df["d_real"], label="D(x)", lw=0.8)
    axes[1].plot(df["step"], df["d_fake"], label="D(G(z))", lw=0.8)
    axes[1].axhline(0.5, color="gray", lw=0.5, ls="--")
    epochs = pd.read_csv(root / "plots/train_epochs.csv")  # epoch, step, score, best_score
    axes[2].plot(epochs["epoch"], epochs["score"], marker="o", ms=3)
    axes[2].set(xlabel="epoch", ylabel="judge FID (2k samples)", yscale="log")
    for ax in axes[:2]:
        ax.set(xlabel="step")
        ax.legend(frameon=False)
    axes[0].set_title("losses")
    axes[1].set_title("D's outputs")
    axes[2].set_title("judge FID per epoch (EMA G)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose dvc repro outputs to draw")
    ap.add_argument("--out", type=Path, default=ROOT, help="checkout whose docs/ receives the pictures")
    args = ap.parse_args()
    from ganops.io import file_digest

    md5 = file_digest(args.root / GENERATOR, "md5")  # what DVC 3 records as `md5` for a file output
    locked = locked_md5(args.root / "dvc.lock")
    if md5 != locked:
        raise SystemExit(f"{args.root / GENERATOR}: md5 {md5} is not the {locked} that dvc.lock records; "
                         "draw the committed default run (`dvc checkout` or `dvc repro` first)")
    for name, image in zip(FIGURES, (draw_grid(args.root), draw_curves(args.root)), strict=True):
        save_png(args.out / name, image, md5)
    print(f"wrote {' and '.join(FIGURES)} of generator md5 {md5}")


if __name__ == "__main__":
    main()
