"""Autoencoder / VAE whose halves are G and D's trunk, and the by-name weight transfer.

    Autoencoder
    ├── encoder: Encoder
    │   ├── trunk: ConvTrunk      ── "encoder.trunk.*" ──►  Discriminator.trunk
    │   └── head:  Linear(F, L or 2L)   (AE-only)
    └── decoder: Generator        ── "decoder.*"       ──►  Generator

The transfer strips the prefix and calls `load_state_dict(strict=False)`; because the
modules are the same classes built from the same ModelConfig, names and shapes match and
no per-layer copying code exists. What G / D have beyond the AE (conditioning, D.head)
stays at its init and is returned so the caller can log it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ganops.config import ModelConfig
from ganops.errors import GanopsError
from ganops.models.blocks import ConvTrunk, check_positive, init_weights
from ganops.models.discriminator import Discriminator
from ganops.models.generator import Generator

DECODER_PREFIX = "decoder."
ENCODER_TRUNK_PREFIX = "encoder.trunk."
_SN_MARK = "parametrizations."  # spectral norm renames `weight` to `parametrizations.weight.original`


class AEOutput(NamedTuple):
    """recon (B, C, H, W) in [-1, 1]; z (B, L); mu, logvar (B, L) in VAE mode, else None."""

    recon: torch.Tensor
    z: torch.Tensor
    mu: torch.Tensor | None
    logvar: torch.Tensor | None


class Encoder(nn.Module):
    """x (B, C, H, W) -> (mu (B, L), logvar (B, L) | None). Plain AE: mu is the code itself."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int,
                 variational: bool = False, spectral_norm: bool = False, depth: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.variational = latent_dim, variational
        self.trunk = ConvTrunk(channels, image_size, width, spectral_norm=spectral_norm, depth=depth)
        self.head = nn.Linear(self.trunk.out_features, 2 * latent_dim if variational else latent_dim)
        init_weights(self.head)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.head(self.trunk(x))  # (B, 2L) VAE, (B, L) AE
        if not self.variational:
            return h, None
        mu, logvar = h.chunk(2, dim=1)  # (B, L), (B, L)
        # exp(logvar) overflows / underflows past these bounds; clamping keeps the KL finite.
        return mu, logvar.clamp(-30.0, 20.0)


class Autoencoder(nn.Module):
    """Autoencoder (or VAE) with a `ConvTrunk` encoder and a `Generator` decoder.

    `spectral_norm` builds the encoder trunk like a spectral-norm D's (no BatchNorm,
    spectral norm on its convs): only then does it transfer into such a D.
    """

    def __init__(self, latent_dim: int, channels: int, image_size: int, g_width: int, d_width: int,
                 variational: bool = False, spectral_norm: bool = False, depth: int = 0,
                 upsample: str = "convt", g_hidden: int = 0) -> None:
        super().__init__()
        check_positive(latent_dim=latent_dim)
        self.latent_dim, self.variational = latent_dim, variational
        self.encoder = Encoder(latent_dim, channels, image_size, d_width, variational, spectral_norm, depth)
        self.decoder = Generator(latent_dim, channels, image_size, g_width, depth=depth, upsample=upsample,
                                 hidden=g_hidden)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> z (B, L): a reparameterised sample when training a VAE, else mu."""
        mu, logvar = self.encoder(x)  # (B, L), (B, L) | None
        return self._sample(mu, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, L) -> reconstruction (B, C, H, W) in [-1, 1]."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> AEOutput:
        """x (B, C, H, W) in [-1, 1] -> AEOutput(recon, z, mu, logvar); mu, logvar None unless VAE."""
        mu, logvar = self.encoder(x)  # (B, L), (B, L) | None
        z = self._sample(mu, logvar)  # (B, L)
        recon = self.decoder(z)  # (B, C, H, W)
        if not self.variational:
            return AEOutput(recon, z, None, None)
        return AEOutput(recon, z, mu, logvar)

    def _sample(self, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        if logvar is None or not self.training:
            return mu  # plain AE, or VAE at eval time: the mean is the deterministic code
        eps = torch.randn_like(mu)  # (B, L)  from the global RNG: seed it for reproducible runs
        return mu + torch.exp(0.5 * logvar) * eps  # (B, L)  reparameterisation trick


# ---------------------------------------------------------------- weight transfer

def _load_prefixed(target: nn.Module, state: Mapping[str, torch.Tensor], prefix: str, what: str,
                   own_only: tuple[str, ...] = ()) -> set[str]:
    """Load the `prefix`-stripped part of `state` into `target`; the loaded target keys.

    Every source key must land, and every target key must be filled except those
    starting with one of `own_only` (layers the AE does not have by design).
    """
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise ValueError(f"no keys under {prefix!r}: not an autoencoder state_dict")
    own = target.state_dict()
    src_sn, dst_sn = any(_SN_MARK in k for k in sub), any(_SN_MARK in k for k in own)
    if src_sn != dst_sn:
        raise ValueError(
            f"{what} spectral_norm={dst_sn} but the autoencoder's {prefix!r} was built with "
            f"spectral_norm={src_sn}; build both from the same ModelConfig (build_autoencoder "
            f"passes cfg.spectral_norm)")
    unknown = sorted(set(sub) - set(own))
    if unknown:
        raise ValueError(f"{what} has no parameter for autoencoder key(s) "
                         f"{', '.join(prefix + k for k in unknown)}; were both built from the same config?")
    for k, v in sub.items():
        if v.shape != own[k].shape:
            raise ValueError(f"{prefix}{k}: autoencoder shape {tuple(v.shape)} != {what} "
                             f"{tuple(own[k].shape)}; image size, channels, widths and latent_dim must match")
    # Same shapes but fewer layers (e.g. a 28×28 trunk into a 32×32 one) would load "fine".
    unfilled = sorted(k for k in set(own) - set(sub) if not k.startswith(own_only))
    if unfilled:
        raise ValueError(f"autoencoder has no {prefix!r} weights for {what} key(s) {', '.join(unfilled)}; "
                         f"image size, channels, widths and latent_dim must match")
    result = target.load_state_dict(sub, strict=False)
    if result.unexpected_keys:  # unreachable after the checks above; guards against torch changes
        raise ValueError(f"{what}: autoencoder keys not consumed: {result.unexpected_keys}")
    return set(sub)


def load_autoencoder_into_generator(G: Generator, ae_state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy `decoder.*` of an AE state_dict into G; G's keys left at init (e.g. `cond_embed.weight`).

    ValueError if a decoder key has no match in G or differs in shape, or if a G layer other
    than conditioning has no decoder weight. Pass an unwrapped model's state_dict (no DDP
    `module.` or torch.compile `_orig_mod.` prefix).
    """
    loaded = _load_prefixed(G, ae_state_dict, DECODER_PREFIX, "generator", own_only=("cond_",))
    return sorted(k for k in G.state_dict() if k not in loaded)


def load_autoencoder_into_discriminator(D: Discriminator,
                                        ae_state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy `encoder.trunk.*` of an AE state_dict into D.trunk; D's keys left at init (`head.*`, ...).

    ValueError if a trunk key has no match or differs in shape, if D.trunk has a layer the AE
    lacks, or if spectral norm differs between AE and D (the weights would mean different
    things: W vs W / sigma(W)).
    """
    loaded = {"trunk." + k for k in _load_prefixed(D.trunk, ae_state_dict, ENCODER_TRUNK_PREFIX,
                                                    "discriminator trunk")}
    return sorted(k for k in D.state_dict() if k not in loaded)


# ---------------------------------------------------------------- builder

def build_autoencoder(cfg: ModelConfig, image_size: int, channels: int,
                      variational: bool = False) -> Autoencoder:
    """AE / VAE whose halves transfer into `build_generator` / `build_discriminator` of the same cfg."""
    return Autoencoder(cfg.latent_dim, channels, image_size, cfg.g_width, cfg.d_width,
                       variational=variational, spectral_norm=cfg.spectral_norm, depth=cfg.depth,
                       upsample=cfg.g_upsample, g_hidden=cfg.g_hidden)


# ---------------------------------------------------------------- the autoencoder file

KIND = "autoencoder"
# What load_autoencoder needs at the top level of the file's config (pretrain adds what made it: its section,
# variational, data_hash, run id, train_flops).
FILE_KEYS = ("model", "image_size", "channels")
# The model fields that must match between the pretrained autoencoder and the G and D it initialises (the rest
# may differ: conditioning, d_hidden and g_cond_bn add layers the AE lacks).
TRANSFER_KEYS = ("latent_dim", "g_width", "d_width", "spectral_norm", "depth", "g_upsample", "g_hidden")


def save_autoencoder(path: str | Path, model: Autoencoder, config: dict[str, Any], key: bytes | None = None) -> Path:
    """Write the autoencoder's weights with `config` (FILE_KEYS and what made it) as kind "autoencoder"; signed
    when `key` is given (see `ganops.checkpoint`). ValueError, before writing, when `config` lacks a FILE_KEY."""
    from ganops.checkpoint import save_checkpoint

    missing = [k for k in FILE_KEYS if k not in config]
    if missing:
        raise ValueError(f"autoencoder config lacks {', '.join(missing)}")
    return save_checkpoint(path, KIND, {"model": model.state_dict()}, config, key=key)


def load_autoencoder(path: str | Path, key: bytes | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state_dict, config) of the autoencoder file at `path`, on CPU: the weights as saved (no network is built,
    so loading draws nothing from the RNG). CheckpointError if the file is missing, altered, of another kind,
    (given `key`) not signed with `key`, or lacks the weights or a FILE_KEY."""
    from ganops.checkpoint import CheckpointError, load_checkpoint

    state, config = load_checkpoint(path, kind=KIND, key=key)
    missing = [k for k in FILE_KEYS if k not in config]
    if "model" not in state or missing:
        raise CheckpointError(f"{path}: not an autoencoder file (no {'weights' if 'model' not in state else missing})")
    return dict(state["model"]), config


def init_state(path: str | Path, model_cfg: ModelConfig, meta: Mapping[str, Any],
               key: bytes | None) -> tuple[dict[str, Any], float | None]:
    """The pretrained autoencoder's weights from `path`, after checking they fit this G and D (model_cfg) and
    the data (meta: image_size, channels), and the FLOPs its training took (None for a checkpoint that predates
    counting them): part of the recipe's budget."""
    from ganops.checkpoint import CheckpointError

    state, config = load_autoencoder(path, key=key)
    try:
        saved_cfg = ModelConfig.of_checkpoint(config["model"])  # fields the file predates: what they meant then
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: autoencoder config unreadable ({str(e).splitlines()[0][:200]})") from None
    for k in TRANSFER_KEYS:
        saved = getattr(saved_cfg, k)
        if saved != getattr(model_cfg, k):
            raise GanopsError(f"{path}: autoencoder has model.{k}={saved}, params say "
                              f"{getattr(model_cfg, k)}; rerun pretrain (dvc repro) or set "
                              "train.init_from_autoencoder: false")
    if (config["image_size"], config["channels"]) != (meta["image_size"], meta["channels"]):
        raise GanopsError(f"{path}: autoencoder is for {config['channels']}×{config['image_size']}² images, "
                          f"the data is {meta['channels']}×{meta['image_size']}²; rerun pretrain")
    return state, config.get("train_flops")
