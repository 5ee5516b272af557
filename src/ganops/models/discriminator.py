"""DCGAN discriminator: image (B, C, H, W) [+ label] -> logit (B,), no sigmoid.

`D.trunk` is a `ConvTrunk`, the same class as the autoencoder's `encoder.trunk`, so a
pretrained encoder loads into it by name. `D.head` and the projection embedding are
D's own and stay at their init after a transfer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ganops.models.blocks import ConvTrunk, SNLinear, apply_spectral_norm, conditional_classes, init_weights

if TYPE_CHECKING:
    from ganops.config import ModelConfig


class Discriminator(nn.Module):
    """trunk (B, C, H, W) -> (B, F) [-> hidden Linear(F, h), LeakyReLU -> (B, h)], head Linear -> (B,) logits.

    `hidden > 0` adds the fully connected layer of InfoGAN's D (Lucic et al. 2018 use FC-1024),
    capacity a two-conv trunk lacks at little cost: one F×h matrix product per image.

    With `num_classes > 0`: projection conditioning (Miyato & Koyama 2018),
    logit += <embed(y), features>. With `spectral_norm`: no BatchNorm anywhere and
    spectral norm on every conv / linear / embedding (trunk, head, projection); the linear layers
    (`SNLinear`) divide their output by σ rather than their weight, the same map at a fraction of the passes.
    """

    def __init__(self, channels: int, image_size: int, width: int, num_classes: int = 0,
                 spectral_norm: bool = False, depth: int = 0, hidden: int = 0) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.channels, self.image_size, self.num_classes = channels, image_size, num_classes
        self.spectral_norm = spectral_norm
        self.trunk = ConvTrunk(channels, image_size, width, spectral_norm=spectral_norm, depth=depth)
        F = self.trunk.out_features
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {hidden}")
        self.hidden = nn.Sequential(SNLinear(F, hidden), nn.LeakyReLU(0.2)) if hidden else nn.Identity()
        init_weights(self.hidden)
        F = hidden or F  # what the head and the projection see
        self.head = SNLinear(F, 1)
        init_weights(self.head)
        if num_classes:
            self.cond_embed = nn.Embedding(num_classes, F)
            # A linear map from one-hot labels: give it the head's scale, not N(0, 1),
            # else the projection term (a sum over F terms, ≈ 6k for the trunk) swamps the logit at init.
            nn.init.normal_(self.cond_embed.weight, 0.0, 0.02)
        if spectral_norm:
            apply_spectral_norm(self.hidden)
            apply_spectral_norm(self.head)
            if num_classes:
                apply_spectral_norm(self.cond_embed)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> trunk features (B, F)."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1], y (B,) int64 labels -> logits (B,).

        `y` is required when conditional and ignored otherwise (loops may always pass it).
        """
        f = self.hidden(self.trunk(x))  # (B, F) or (B, hidden)
        logit = self.head(f).squeeze(1)  # (B,)
        if self.num_classes:
            if y is None:
                raise ValueError("conditional discriminator needs labels y of shape (B,)")
            logit = logit + (self.cond_embed(y) * f).sum(1)  # (B,)  projection term
        return logit


def build_discriminator(cfg: ModelConfig, image_size: int, channels: int, num_classes: int = 0) -> Discriminator:
    """D from the `model:` config; `num_classes` counts only when `cfg.conditional`."""
    return Discriminator(channels, image_size, cfg.d_width, conditional_classes(cfg.conditional, num_classes),
                         cfg.spectral_norm, cfg.depth, cfg.d_hidden)
