"""Shared building blocks: the size plan, DCGAN init, and the convolutional trunk.

The discriminator and the autoencoder's encoder both use `ConvTrunk`, so an
autoencoder's `encoder.trunk.*` weights load into `D.trunk` by name. Generator and
decoder are the same class (`Generator`), so `decoder.*` loads into G by name.

Size plan (b = base resolution, n = number of 2× steps):
    28: 7 → 14 → 28                 (b=7, n=2)
    32: 4 → 8 → 16 → 32             (b=4, n=3)
    64: 4 → 8 → 16 → 32 → 64        (b=4, n=4)
Channels double on every 2× step down (D) and halve on every step up (G), so the
deepest feature map has width·2^(n-1) channels at b×b. `depth` adds that many 3×3
convolutions after every 2× step of D and at every resolution of G below the output
(depth 0 is plain DCGAN and keeps its state-dict keys).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ganops.choices import CHANNELS, IMAGE_SIZES, UPSAMPLES

_PLAN = {28: (7, 2), 32: (4, 3), 64: (4, 4)}  # image_size -> (base resolution, 2× steps)
assert set(_PLAN) == set(IMAGE_SIZES), "a size in choices.IMAGE_SIZES needs its plan here"


def size_plan(image_size: int, channels: int) -> tuple[int, int]:
    """(base resolution, number of 2× steps) for a supported image; ValueError otherwise."""
    if image_size not in _PLAN:
        *rest, last = IMAGE_SIZES
        raise ValueError(f"image_size {image_size} not supported; use {', '.join(map(str, rest))} or {last}")
    if channels not in CHANNELS:
        raise ValueError(f"channels {channels} not supported; use 1 (grayscale) or 3 (RGB)")
    return _PLAN[image_size]


def conditional_classes(conditional: bool, num_classes: int) -> int:
    """The classes a network is conditioned on: `num_classes` when `model.conditional`, else 0."""
    if not conditional:
        return 0
    if num_classes < 1:
        raise ValueError(f"model.conditional needs labelled data (num_classes >= 1), got {num_classes}")
    return num_classes


def check_positive(**values: int) -> None:
    """ValueError naming the first argument that is not a positive int."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def check_depth(depth: int) -> None:
    """ValueError unless `depth` (3×3 convs added per resolution) is an int in 0..MAX_DEPTH."""
    from ganops.config import MAX_DEPTH

    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be an integer in 0..{MAX_DEPTH}, got {depth!r}")


def _raw_weight(m: nn.Module) -> torch.Tensor:
    # A spectral-norm module's `.weight` is computed; the trainable tensor is `.original`.
    if parametrize.is_parametrized(m, "weight"):
        return m.parametrizations.weight.original  # type: ignore[union-attr,return-value]
    return m.weight  # type: ignore[return-value]


@torch.no_grad()
def init_weights(module: nn.Module) -> nn.Module:
    """DCGAN init of every layer inside `module`, in place; returns `module`.

    Conv / ConvTranspose / Linear weights ~ N(0, 0.02), their biases 0;
    BatchNorm (1d, 2d) weight ~ N(1, 0.02), bias 0. Embeddings are left to their owners
    (G keeps N(0, 1) so labels weigh like z; D's projection sets its own scale).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(_raw_weight(m), 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral norm on every conv / linear / embedding inside `module`, in place.

    Call after `init_weights`: registration runs power iteration on the current weight.
    State-dict keys change from `<layer>.weight` to `<layer>.parametrizations.weight.original`
    (plus `...weight.0._u` / `._v`).
    """
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)) and not parametrize.is_parametrized(m):
            _spectral_norm(m)
    return module


class SNLinear(nn.Linear):
    """nn.Linear that, under `apply_spectral_norm`, divides its output by σ instead of its weight: (B, in) -> (B, out).

    x·(W/σ)ᵀ = (x·Wᵀ)/σ, with torch's own σ = uᵀWv, power iteration (training mode only), u/v buffers and
    state-dict keys, so weights and checkpoints are interchangeable with a plain spectral-norm nn.Linear. Why:
    W/σ costs passes over the whole (out, in) weight forward and backward (the division, and its gradient's mul, neg,
    sum), where the output is (B, out). For D's FC-1024 (6.4 M weights, 2 × 1,024 values per image) those passes
    were about half of a batch-32 train step on a 2-core CPU (torch.profiler: aten::div/mul/neg). The rounding
    differs (bf16 matmuls see W, not W/σ), so a trained D is not bit-identical to the weight-divided one.
    Without a spectral norm it is nn.Linear.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not parametrize.is_parametrized(self, "weight"):
            return super().forward(x)
        chain = self.parametrizations.weight  # type: ignore[union-attr]
        sn = chain[0]
        if len(chain) != 1 or not isinstance(sn, _SpectralNorm):
            return super().forward(x)  # some other parametrization: its own weight
        w = chain.original  # (out, in), what W/σ would divide
        if sn.training:
            sn._power_method(w, sn.n_power_iterations)  # updates u, v in place, as the weight path does
        u = sn._u.clone(memory_format=torch.contiguous_format)  # clones: see _SpectralNorm.forward
        v = sn._v.clone(memory_format=torch.contiguous_format)
        sigma = torch.vdot(u, torch.mv(w, v))  # () the same σ as the weight path
        y = F.linear(x, w) / sigma  # (B, out)
        return y if self.bias is None else y + self.bias.to(y.dtype)  # bias in y's dtype, as F.linear adds it


def refine_layers(ch: int, depth: int, batchnorm: bool, leaky: bool) -> list[nn.Module]:
    """`depth` × [Conv 3×3 stride 1, [BatchNorm], (Leaky)ReLU]: (B, ch, h, w) -> (B, ch, h, w).

    The capacity knob (`model.depth`): more layers at a resolution without another 2× step.
    Bias only without BatchNorm (BN's shift makes it redundant).
    """
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers.append(nn.Conv2d(ch, ch, 3, 1, 1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(ch))
        layers.append(nn.LeakyReLU(0.2, inplace=True) if leaky else nn.ReLU(inplace=True))
    return layers


class UpConv(nn.Module):
    """(B, in_ch, h, w) -> (B, out_ch, 2h, 2w): nearest-neighbour 2× upsampling, then a 3×3 conv.

    Every output pixel sees the same number of input taps, unlike a stride-2 transposed conv whose
    uneven kernel overlap draws checkerboards (Odena et al. 2016, "Deconvolution and Checkerboard
    Artifacts"); the upsampling generators of SNGAN and BigGAN do this.
    """

    def __init__(self, in_ch: int, out_ch: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, out, 2h, 2w)


def up_layer(in_ch: int, out_ch: int, upsample: str, bias: bool) -> nn.Module:
    """One 2× step up, (B, in_ch, h, w) -> (B, out_ch, 2h, 2w): ConvT 4×4 stride 2 or `UpConv`."""
    if upsample not in UPSAMPLES:
        raise ValueError(f"upsample must be one of {', '.join(UPSAMPLES)}, got {upsample!r}")
    return nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=bias) if upsample == "convt" else UpConv(in_ch, out_ch, bias)


def up_block(in_ch: int, out_ch: int, depth: int = 0, upsample: str = "convt") -> nn.Sequential:
    """(B, in_ch, h, w) -> (B, out_ch, 2h, 2w): 2× up (`up_layer`), BatchNorm, ReLU [+ depth 3×3 convs].

    Indices are fixed (0 up, 1 BN, 2 ReLU): the generator's conditional BatchNorm addresses them."""
    return nn.Sequential(
        up_layer(in_ch, out_ch, upsample, bias=False),  # bias is redundant before BN
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        *refine_layers(out_ch, depth, batchnorm=True, leaky=False),
    )


def down_block(in_ch: int, out_ch: int, batchnorm: bool, depth: int = 0) -> nn.Sequential:
    """(B, in_ch, h, w) -> (B, out_ch, h/2, w/2): Conv 4×4 stride 2, [BatchNorm], LeakyReLU(0.2)
    [+ depth 3×3 convs]."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    layers += refine_layers(out_ch, depth, batchnorm=batchnorm, leaky=True)
    return nn.Sequential(*layers)


class ConvTrunk(nn.Module):
    """Strided-conv feature extractor shared by D and the AE encoder: (B, C, H, W) -> (B, F).

    No normalisation on the input layer (DCGAN); BatchNorm after the later layers unless
    `spectral_norm`, which replaces BatchNorm everywhere (BN would undo the Lipschitz bound)
    and wraps every conv. F = width·2^(n-1)·b·b, e.g. 2·64·7·7 = 6272 for 28×28, width 64.
    """

    def __init__(self, channels: int, image_size: int, width: int, spectral_norm: bool = False,
                 depth: int = 0) -> None:
        super().__init__()
        base, steps = size_plan(image_size, channels)
        check_positive(width=width)
        check_depth(depth)
        widths = [width * 2**i for i in range(steps)]  # e.g. [w, 2w] for 28×28
        blocks = [down_block(channels, widths[0], batchnorm=False, depth=depth)]
        pairs = zip(widths[:-1], widths[1:], strict=True)  # (in, out) channels of the later layers
        blocks += [down_block(a, b, batchnorm=not spectral_norm, depth=depth) for a, b in pairs]
        self.layers = nn.Sequential(*blocks)
        self.out_shape = (widths[-1], base, base)
        self.out_features = widths[-1] * base * base
        init_weights(self)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1] -> features (B, F)."""
        h = self.layers(x)  # (B, w·2^(n-1), b, b)
        return h.flatten(1)  # (B, F)  flatten copies if channels_last; F is in C, H, W order either way
