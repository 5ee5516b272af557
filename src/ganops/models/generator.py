"""DCGAN generator: z (B, latent_dim) [+ label] -> image (B, C, H, W) in [-1, 1], and its file.

Also the autoencoder's decoder (same class, unconditional), so a pretrained decoder's
state_dict loads into G by name. Conditioning lives in `cond_*` modules only, which the
decoder never has: they are the keys `load_state_dict(strict=False)` reports missing.

The generator file (`models/generator.pt`, kind "generator") is written and read here only:

    save_generator("models/generator.pt", G, config)   # config: model, image_size, channels, num_classes, ...
    G, config = load_generator("models/generator.pt")  # eval mode; also reads a training checkpoint's EMA G
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganops.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ganops.config import ModelConfig
from ganops.models.blocks import (
    check_depth,
    check_positive,
    conditional_classes,
    init_weights,
    refine_layers,
    size_plan,
    up_block,
    up_layer,
)

KIND = "generator"
# What load_generator needs at the top level of a generator file's config to rebuild G.
FILE_KEYS = ("model", "image_size", "channels", "num_classes")


class Generator(nn.Module):
    """DCGAN generator for 28×28, 32×32 or 64×64 images with 1 or 3 channels.

    z (B, latent_dim) -> ConvT to (B, w·2^(n-1), b, b) -> n-1 up blocks (ConvT, BN, ReLU)
    halving channels -> ConvT to (B, C, H, W) -> tanh. For 28×28: 7 → 14 → 28. `depth`
    3×3 conv layers (BN, ReLU) follow the projection and every up block.
    `hidden > 0` puts a fully connected layer (Linear, BN, ReLU) of that width before the projection: the
    FC-1024 of InfoGAN's G (Lucic et al. 2018), which the projection then reads instead of z.

    With `num_classes > 0` a label embedding e (B, E) is joined to z. The first layer of
    cat[z, e] is written as project(z) + cond_project(e) (the same linear map with its
    weight split in two), so `project` keeps the decoder's shape and key name.
    With `cond_bn` as well, every BatchNorm after the projection and the up steps is class-conditional
    (SNGAN / BigGAN generators): BN(x)·(1 + γ_y) + β_y with per-class γ, β from `cond_bn_gain` /
    `cond_bn_shift` embeddings, zero at init, so the labels steer every resolution, not the input alone.
    `upsample` "nearest" replaces each stride-2 transposed conv by 2× upsampling + 3×3 conv (`UpConv`).
    """

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int,
                 num_classes: int = 0, depth: int = 0, cond_bn: bool = False, upsample: str = "convt",
                 hidden: int = 0) -> None:
        super().__init__()
        base, steps = size_plan(image_size, channels)
        check_positive(latent_dim=latent_dim, width=width)
        check_depth(depth)
        if num_classes < 0 or hidden < 0:
            raise ValueError(f"num_classes and hidden must be >= 0, got {num_classes}, {hidden}")
        self.latent_dim, self.channels, self.image_size = latent_dim, channels, image_size
        self.num_classes, self.hidden = num_classes, hidden
        widths = [width * 2**i for i in reversed(range(steps))]  # e.g. [2w, w] for 28×28

        if hidden:  # no bias: the BatchNorm after it has one
            self.hidden_fc = nn.Linear(latent_dim, hidden, bias=False)
            self.hidden_bn = nn.BatchNorm1d(hidden)
        self.project = nn.ConvTranspose2d(hidden or latent_dim, widths[0], base, 1, 0, bias=False)
        self.project_bn = nn.BatchNorm2d(widths[0])
        # `depth` 3×3 convs at the base resolution and after every up block but the last (to_image)
        self.refine = nn.Sequential(*refine_layers(widths[0], depth, batchnorm=True, leaky=False))
        pairs = zip(widths[:-1], widths[1:], strict=True)  # (in, out) channels of each up block
        self.up = nn.Sequential(*[up_block(a, b, depth, upsample) for a, b in pairs])
        self.to_image = up_layer(widths[-1], channels, upsample, bias=True)
        self.cond_bn = bool(cond_bn and num_classes)
        if num_classes:
            embed_dim = latent_dim  # same size as z so neither input dominates at init
            self.cond_embed = nn.Embedding(num_classes, embed_dim)
            if hidden:
                self.cond_hidden = nn.Linear(embed_dim, hidden, bias=False)
            else:
                self.cond_project = nn.ConvTranspose2d(embed_dim, widths[0], base, 1, 0, bias=False)
        if self.cond_bn:  # one (γ, β) table per conditioned BatchNorm: project_bn, then each up block's
            self.cond_bn_gain = nn.ModuleList(nn.Embedding(num_classes, w) for w in widths)
            self.cond_bn_shift = nn.ModuleList(nn.Embedding(num_classes, w) for w in widths)
        init_weights(self)  # leaves cond_embed at N(0, 1), the same scale as z ~ N(0, 1)
        if self.cond_bn:
            for table in (*self.cond_bn_gain, *self.cond_bn_shift):
                nn.init.zeros_(table.weight)  # start as the unconditional BN (and as the pretrained decoder)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, latent_dim), y (B,) int64 labels -> images (B, C, H, W) in [-1, 1].

        `y` is required when conditional and ignored otherwise (loops may always pass it).
        """
        B = z.shape[0]
        if self.num_classes and y is None:
            raise ValueError("conditional generator needs labels y of shape (B,)")
        e = self.cond_embed(y) if self.num_classes else None  # (B, E)
        if self.hidden:
            h = self.hidden_fc(z)  # (B, hidden)
            if e is not None:
                h = h + self.cond_hidden(e)  # (B, hidden)  == first layer of cat[z, e]
            z = torch.relu(self.hidden_bn(h))  # (B, hidden): what the projection reads
        x = self.project(z.view(B, -1, 1, 1))  # (B, w·2^(n-1), b, b)
        if e is not None and not self.hidden:
            x = x + self.cond_project(e.view(B, -1, 1, 1))  # (B, w·2^(n-1), b, b)  == first layer of cat[z, e]
        x = torch.relu(self._condition(0, self.project_bn(x), y))  # (B, w·2^(n-1), b, b)
        x = self.refine(x)  # (B, w·2^(n-1), b, b)  identity when depth 0
        for i, block in enumerate(self.up):  # up_block: 0 up, 1 BN, 2 ReLU, then refine layers
            for j, layer in enumerate(block):
                x = layer(x)  # (B, c, 2h, 2w)
                if j == 1:  # right after the block's BatchNorm
                    x = self._condition(i + 1, x, y)
        return torch.tanh(self.to_image(x))  # (B, C, H, W)  x was (B, w, H/2, W/2)

    def _condition(self, i: int, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """x (B, c, h, w) after the i-th conditioned BatchNorm -> x·(1 + γ_y) + β_y; x itself without cond_bn."""
        if not self.cond_bn:
            return x
        gain = self.cond_bn_gain[i](y)[:, :, None, None]  # (B, c, 1, 1)
        shift = self.cond_bn_shift[i](y)[:, :, None, None]  # (B, c, 1, 1)
        return x * (1 + gain.to(x.dtype)) + shift.to(x.dtype)


def build_generator(cfg: ModelConfig, image_size: int, channels: int, num_classes: int = 0) -> Generator:
    """G from the `model:` config; `num_classes` counts only when `cfg.conditional`."""
    return Generator(cfg.latent_dim, channels, image_size, cfg.g_width,
                     conditional_classes(cfg.conditional, num_classes), cfg.depth,
                     cond_bn=cfg.g_cond_bn, upsample=cfg.g_upsample, hidden=cfg.g_hidden)


def save_generator(path: str | Path, G: Generator, config: dict[str, Any], key: bytes | None = None) -> Path:
    """Write G's weights with `config` (FILE_KEYS, plus what made it: train section, data_hash, ema, run id) as
    the generator file (kind "generator"); signed when `key` is given (see `ganops.checkpoint`). ValueError,
    before writing, when `config` lacks a key `load_generator` needs."""
    missing = [k for k in FILE_KEYS if k not in config]
    if missing:
        raise ValueError(f"generator config lacks {', '.join(missing)}: load_generator could not rebuild G")
    return save_checkpoint(path, KIND, {"model": G.state_dict()}, config, key=key)


def load_generator(path: str | Path, map_location: str | torch.device = "cpu",
                   key: bytes | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(G in eval mode, its config) from the generator file (kind "generator") or from a training
    checkpoint (kind "gan": its EMA G, else G), so `evaluate` can score `checkpoints/*.pt` too.

    The config always has model, image_size, channels and num_classes at top level. CheckpointError if
    the file is missing, altered, of another kind, (given `key`) not signed with `key`, or its weights
    do not fit its config.
    """
    state, config = load_checkpoint(path, kind=(KIND, "gan"), map_location=map_location, key=key)
    if "G" in state and "data" in config:  # a training checkpoint (`checkpoints/last.pt`, `best.pt`)
        weights = state["ema"] if state.get("ema") is not None else state["G"]
        config = {**config, **config["data"]}
    elif "model" in state:
        weights = state["model"]
    else:
        raise CheckpointError(f"{path}: not a generator (holds {sorted(state)[:4]})")
    try:
        model_cfg = ModelConfig.of_checkpoint(config["model"])
        G = build_generator(model_cfg, int(config["image_size"]), int(config["channels"]),
                            int(config["num_classes"]))
        G.load_state_dict(weights)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: generator weights do not fit its config "
                              f"({str(e).splitlines()[0][:200]})") from None
    return G.to(map_location).eval(), config
