"""Make the README's pictures from the outputs of the last `dvc repro`:

    .venv/bin/python docs/figures.py    # → docs/champion_grid.png, docs/training_curves.png

The grid is 64 samples (seed 0) of `models/generator.pt` (16 per class, one row each, for a conditional
generator), the same pixels `ganops sample` draws; the
curves are `plots/train.csv` (D/G loss, D(x)/D(G(z))) and the per-epoch judge FID.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ganops.models.generator import load_generator
from ganops.models.seeded_samples import sample_images  # noqa: E402
from ganops.sampling import write_grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    G, config = load_generator(ROOT / "models/generator.pt")
    if config["model"].get("conditional"):  # one row of 16 per class, the class order of the data
        images = torch.cat([sample_images(G, config, 16, seed=0, class_id=c)[0]
                            for c in range(int(config["num_classes"]))])
    else:
        images, _ = sample_images(G, config, 64, seed=0)
    write_grid(ROOT / "docs/champion_grid.png", images, nrow=16)

    df = pd.read_csv(ROOT / "plots/train.csv")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    axes[0].plot(df["step"], df["d_loss"], label="D loss", lw=0.8)
    axes[0].plot(df["step"], df["g_loss"], label="G loss", lw=0.8)
    axes[1].plot(df["step"], df["d_real"], label="D(x)", lw=0.8)
    axes[1].plot(df["step"], df["d_fake"], label="D(G(z))", lw=0.8)
    axes[1].axhline(0.5, color="gray", lw=0.5, ls="--")
    epochs = df.dropna(subset=["score"])
    axes[2].plot(epochs["epoch"], epochs["score"], marker="o", ms=3)
    axes[2].set(xlabel="epoch", ylabel="judge FID (2k samples)", yscale="log")
    for ax in axes[:2]:
        ax.set(xlabel="step")
        ax.legend(frameon=False)
    axes[0].set_title("losses")
    axes[1].set_title("D's outputs")
    axes[2].set_title("judge FID per epoch (EMA G)")
    fig.tight_layout()
    fig.savefig(ROOT / "docs/training_curves.png", dpi=90)
    print("wrote docs/champion_grid.png and docs/training_curves.png")


if __name__ == "__main__":
    main()
