"""The judge: a small CNN classifier trained on the prepared train split, used to judge generated samples.

Three uses, all cheap on a CPU:
- class coverage: the judge labels generated images; a class it (almost) never sees is mode collapse;
- judge FID: Fréchet distance in the judge's penultimate features (F = 128), ~0.3 s for 2 000
  28×28 images on 2 free cores (~1 s when other jobs share them), so `train` can score every epoch
  to pick `checkpoints/best.pt`;
- its test accuracy, stored beside its weights so a weak judge is visible wherever its numbers go.
It is trained by `ganops.training.judge.train_judge`; this module holds the network, its checkpoint and
what scores with it.

Network (w = width; 28×28 shown, 32×32 ends at 8×8, 64×64 adds a 2× average pool after conv3):
    x (B, C, 28, 28) ─conv4×4/2─► (B, w, 14, 14) ─conv3×3─► (B, 2w, 14, 14) ─maxpool─► (B, 2w, 7, 7)
      ─conv3×3─► (B, 4w, 7, 7) ─flatten─► (B, 4w·49) ─linear, ReLU─► features (B, F)
      ─dropout, linear─► logits (B, K)
Every conv is conv-BN-ReLU. The stride-2 stem avoids full-resolution activations, which cost more than
the convolutions themselves on a CPU (BatchNorm/ReLU at 28×28 are memory-bound).

Judge numbers (FID, coverage) are comparable only between runs scored with the same judge weights.
Inference runs in fp32 (no autocast) so features do not depend on whether the CPU has bf16.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganops.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ganops.choices import IMAGE_SIZES
from ganops.metrics.fid import FeatureStats, frechet_distance
from ganops.models.seeded_samples import generate_batches, seeded_latents
from ganops.runtime import to_model_input, to_uint8

KIND = "judge"
ARCH_VERSION = 1  # bump when JudgeNet's layers change: old checkpoints are then refused, not misloaded
FEATURE_DIM = 128
COLLAPSE_FRACTION = 0.25  # a class is "collapsed" when its share < 0.25 × (1 / K)
_FINAL_HW = {28: 7, 32: 8, 64: 8}  # spatial size of the last feature map
assert set(_FINAL_HW) == set(IMAGE_SIZES), "a size in choices.IMAGE_SIZES needs its final size here"
# JudgeNet's constructor arguments, stored in the judge file so load_judge can rebuild the network.
NET_KEYS = ("channels", "image_size", "num_classes", "width", "feature_dim")


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class JudgeNet(nn.Module):
    """Classifier for (B, C, S, S) images in [-1, 1], S in {28, 32, 64}, C in {1, 3}."""

    def __init__(self, channels: int, image_size: int, num_classes: int, width: int = 32,
                 feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        if image_size not in _FINAL_HW:
            raise ValueError(f"image_size {image_size} not supported; use 28, 32 or 64")
        if channels not in (1, 3):
            raise ValueError(f"channels {channels} not supported; use 1 (grayscale) or 3 (RGB)")
        if num_classes < 2 or width < 1 or feature_dim < 1:
            raise ValueError(f"need num_classes >= 2, width >= 1, feature_dim >= 1; got "
                             f"{num_classes}, {width}, {feature_dim}")
        self.channels, self.image_size, self.num_classes = channels, image_size, num_classes
        self.width, self.feature_dim = width, feature_dim
        self.meta: dict[str, Any] = {}  # the checkpoint's config when loaded by `load_judge`
        hw = _FINAL_HW[image_size]
        self.trunk = nn.Sequential(
            *_conv_bn_relu(channels, width, kernel=4, stride=2),  # (B, w, S/2, S/2)
            *_conv_bn_relu(width, 2 * width),  # (B, 2w, S/2, S/2)
            nn.MaxPool2d(2),  # (B, 2w, S/4, S/4)
            *_conv_bn_relu(2 * width, 4 * width),  # (B, 4w, S/4, S/4)
            nn.AvgPool2d(2) if image_size == 64 else nn.Identity(),  # (B, 4w, hw, hw)
        )
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * hw * hw, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    @property
    def config(self) -> dict[str, int]:
        """What `JudgeNet(**config)` needs to rebuild this network."""
        return {k: int(getattr(self, k)) for k in NET_KEYS}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, S, S) in [-1, 1] → penultimate features (B, F), non-negative (post-ReLU)."""
        return self.embed(self.trunk(x))  # (B, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, S, S) in [-1, 1] → class logits (B, K)."""
        return self.head(self.features(x))  # (B, K)


# ---- checkpoint ----------------------------------------------------------------------------------

def save_judge(path: str | Path, model: JudgeNet, config: dict[str, Any], key: bytes | None = None) -> Path:
    """Write the judge's weights with `config` (class_names, test_accuracy, data_hash, ...) plus the
    architecture (channels, image_size, num_classes, width, feature_dim); returns the path. Signed
    when `key` is given (see `ganops.checkpoint`)."""
    arch = {**model.config, "arch_version": ARCH_VERSION}
    clash = {k: (config[k], v) for k, v in arch.items() if k in config and config[k] != v}
    if clash:
        raise ValueError(f"config disagrees with the model on {clash} (given, model)")
    names = config.get("class_names")
    if names is not None and len(names) != model.num_classes:
        raise ValueError(f"{len(names)} class_names for a {model.num_classes}-class judge")
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    return save_checkpoint(path, KIND, state, {**config, **arch}, key=key)


def load_judge(path: str | Path, map_location: str | torch.device = "cpu", key: bytes | None = None) -> JudgeNet:
    """The judge saved at `path`, in eval mode, its checkpoint config in `.meta`; CheckpointError if the
    file is missing, altered, not a judge, of another architecture version, or (given `key`) not signed
    with `key`."""
    state, cfg = load_checkpoint(path, kind=KIND, map_location=map_location, key=key)
    if cfg.get("arch_version") != ARCH_VERSION:
        raise CheckpointError(f"{path}: judge architecture version {cfg.get('arch_version')}, expected "
                              f"{ARCH_VERSION}; retrain the judge")
    try:
        model = JudgeNet(**{k: int(cfg[k]) for k in NET_KEYS})
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: judge weights do not fit its config ({str(e).splitlines()[0][:200]})") from None
    model.meta = cfg
    return model.to(map_location).eval()


# ---- inference -----------------------------------------------------------------------------------

def _as_images(model: JudgeNet, images: Any) -> torch.Tensor:
    x = torch.as_tensor(images)
    want = (model.channels, model.image_size, model.image_size)
    if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise ValueError(f"judge expects uint8 images (N, {', '.join(map(str, want))}), "
                         f"got {x.dtype} {tuple(x.shape)}")
    return x


@torch.inference_mode()
def _run(model: JudgeNet, images: Any, batch_size: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """fn over uint8 images (N, C, S, S) in eval mode, fp32, `batch_size` at a time; concatenated on CPU."""
    x_all = _as_images(model, images)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [fn(to_model_input(x_all[s:s + batch_size], device, channels_last=False)).float().cpu()
               for s in range(0, len(x_all), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def judge_features(model: JudgeNet, images_uint8: Any, batch_size: int = 1000) -> np.ndarray:
    """uint8 images (N, C, S, S) → float64 penultimate features (N, F)."""
    return _run(model, images_uint8, batch_size, model.features).double().numpy().reshape(-1, model.feature_dim)


def judge_predict(model: JudgeNet, images_uint8: Any, batch_size: int = 1000) -> np.ndarray:
    """uint8 images (N, C, S, S) → predicted class int64 (N,)."""
    logits = _run(model, images_uint8, batch_size, model)  # (N, K)
    return logits.argmax(1).numpy().astype(np.int64) if len(logits) else np.empty(0, np.int64)


def class_coverage(pred_labels: Any, num_classes: int, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """How evenly predicted labels (N,) cover K classes.

    counts / shares: {class name: count / share}; normalized_entropy: H(shares) / log K (1.0 = uniform,
    0.0 = one class); min_share_ratio: min share × K (1.0 = uniform); collapsed: names of classes with
    share < 0.25 / K (the mode-collapse warning); n: number of predictions.
    """
    pred = np.asarray(pred_labels, dtype=np.int64).reshape(-1)  # (N,)
    names = [str(k) for k in range(num_classes)] if class_names is None else [str(s) for s in class_names]
    if num_classes < 2 or len(names) != num_classes:
        raise ValueError(f"need num_classes >= 2 and one name per class; got {num_classes}, {len(names)} names")
    if len(pred) == 0:
        raise ValueError("class_coverage of no predictions")
    if pred.min() < 0 or pred.max() >= num_classes:
        raise ValueError(f"predicted labels span [{pred.min()}, {pred.max()}], expected [0, {num_classes})")
    counts = np.bincount(pred, minlength=num_classes)  # (K,)
    shares = counts / counts.sum()  # (K,)
    nz = shares[shares > 0]
    entropy = float(-(nz * np.log(nz)).sum() / math.log(num_classes))
    return {
        "n": int(len(pred)),
        "counts": {name: int(c) for name, c in zip(names, counts, strict=True)},
        "shares": {name: float(s) for name, s in zip(names, shares, strict=True)},
        "normalized_entropy": min(max(0.0, entropy), 1.0),  # clip round-off (and -0.0)
        "min_share_ratio": float(shares.min() * num_classes),
        "collapsed": [name for name, s in zip(names, shares, strict=True) if s < COLLAPSE_FRACTION / num_classes],
    }


# ---- judge FID -----------------------------------------------------------------------------------

def judge_reference_stats(model: JudgeNet, ref_uint8: Any, meta: dict[str, Any] | None = None) -> FeatureStats:
    """Moments of the judge features of reference images (N, C, S, S), N >= 2; `meta` adds provenance."""
    return FeatureStats.from_features(judge_features(model, ref_uint8),
                                      meta={"network": "judge", "feature_dim": model.feature_dim, **(meta or {})})


def judge_fid(model: JudgeNet, gen_uint8: Any, ref_stats: FeatureStats) -> float:
    """Fréchet distance between judge features of generated images (N, C, S, S) and `ref_stats`.

    Biased upward at small N like any FID: compare only numbers with the same N, judge and reference.
    """
    return frechet_distance(FeatureStats.from_features(judge_features(model, gen_uint8)), ref_stats)


def judge_score_fn(model: JudgeNet, ref_uint8: Any, n: int, latent_dim: int, latent_dist: str,
                   num_classes: int, conditional: bool, seed: int,
                   batch_size: int = 500) -> Callable[[nn.Module], float]:
    """A score_fn for `train_gan`: judge FID of n samples from G vs all of `ref_uint8` (lower is better).

    Latents and labels are fixed (seeded) so successive epochs are compared on equal terms. Samples
    are rounded to uint8 like saved images. The reference features are computed once, here.
    """
    ref = judge_reference_stats(model, ref_uint8)
    z, y = seeded_latents(n, latent_dim, latent_dist, num_classes, conditional, seed)

    def score(G: nn.Module) -> float:
        imgs = [to_uint8(x).cpu() for x in generate_batches(G, z, y, batch_size)]  # each (b, C, S, S) uint8
        return judge_fid(model, torch.cat(imgs), ref)

    return score
