"""Issue 13's recipe knobs, for real: D's and G's hidden FC layers, class-conditional BatchNorm and upsample+conv
in G, and the linear learning-rate decay (including exact resume in the middle of the decay)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ganops.checkpoint import load_checkpoint
from ganops.config import ModelConfig, TrainConfig
from ganops.models.autoencoder import (
    build_autoencoder,
    load_autoencoder_into_discriminator,
    load_autoencoder_into_generator,
)
from ganops.models.discriminator import build_discriminator
from ganops.models.generator import build_generator
from ganops.params import from_dict
from ganops.training.common import NullSink
from ganops.training.flops import count_flops
from ganops.training.gan import GanResult, lr_factor, train_gan

from .gan_worker import tiny_data

B, L, W, K = 4, 16, 8, 10
CFG = ModelConfig(latent_dim=L, g_width=W, d_width=W, conditional=True, spectral_norm=True, d_hidden=0)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _x(size: int = 28, channels: int = 1) -> torch.Tensor:
    return torch.rand(B, channels, size, size) * 2 - 1  # (B, C, H, W)


# ---------------------------------------------------------------- D's hidden layer

def test_d_hidden_adds_a_spectral_norm_fc_layer_that_the_autoencoder_leaves_at_init() -> None:
    plain = build_discriminator(CFG, 28, 1, K)
    wide = build_discriminator(dataclasses.replace(CFG, d_hidden=32), 28, 1, K)
    fc = wide.hidden[0]
    assert isinstance(fc, nn.Linear) and (fc.in_features, fc.out_features) == (2 * W * 7 * 7, 32)
    assert parametrize.is_parametrized(fc, "weight")  # SN like every other layer of this D
    assert wide.head.in_features == 32 and wide.cond_embed.embedding_dim == 32  # head and projection see h
    assert isinstance(plain.hidden, nn.Identity) and plain.head.in_features == 2 * W * 7 * 7
    y = torch.randint(0, K, (B,))
    assert wide(_x(), y).shape == (B,)
    ae = build_autoencoder(dataclasses.replace(CFG, d_hidden=32), 28, 1)
    left = load_autoencoder_into_discriminator(wide, ae.state_dict())
    assert {k.split(".")[0] for k in left} == {"hidden", "head", "cond_embed"}
    more = count_flops(lambda: wide(_x(), y).sum().backward())
    less = count_flops(lambda: plain(_x(), y).sum().backward())
    assert more > less  # the FC layer is counted in the budget


# ---------------------------------------------------------------- G's hidden layer

def test_g_hidden_puts_an_fc_layer_before_the_projection_that_pretrain_fills_and_labels_enter() -> None:
    cfg = dataclasses.replace(CFG, g_hidden=32)
    G = build_generator(cfg, 28, 1, K)
    assert (G.hidden_fc.in_features, G.hidden_fc.out_features) == (L, 32) and G.project.in_channels == 32
    assert G.cond_hidden.in_features == L and not hasattr(G, "cond_project")  # labels join z at the first layer
    ae = build_autoencoder(cfg, 28, 1).eval()
    assert ae.decoder.project.in_channels == 32  # the decoder has the layer too, so pretraining fills it
    assert load_autoencoder_into_generator(G, ae.state_dict()) == ["cond_embed.weight", "cond_hidden.weight"]
    z, y = torch.randn(B, L), torch.randint(0, K, (B,))
    G.eval()
    with torch.no_grad():
        assert G(z, y).shape == (B, 1, 28, 28)
        G.cond_hidden.weight.zero_()  # without the label term G is the decoder it was loaded from
        assert torch.equal(G(z, y), ae.decode(z))
    plain = build_autoencoder(CFG, 28, 1)
    with pytest.raises(ValueError):  # a decoder without the layer does not fit
        load_autoencoder_into_generator(build_generator(cfg, 28, 1, K), plain.state_dict())
    more = count_flops(lambda: build_generator(cfg, 28, 1, K)(z, y).sum().backward())
    less = count_flops(lambda: build_generator(CFG, 28, 1, K)(z, y).sum().backward())
    assert more > less  # counted in the budget


# ---------------------------------------------------------------- conditional BatchNorm in G

def test_conditional_batchnorm_starts_as_the_plain_generator_then_steers_by_class() -> None:
    plain = build_generator(CFG, 28, 1, K)
    cbn = build_generator(dataclasses.replace(CFG, g_cond_bn=True), 28, 1, K)
    missing = cbn.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["cond_bn_gain.0.weight", "cond_bn_gain.1.weight",
                               "cond_bn_shift.0.weight", "cond_bn_shift.1.weight"]
    plain.eval(), cbn.eval()
    z, y = torch.randn(B, L), torch.zeros(B, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(plain(z, y), cbn(z, y))  # zero-initialised tables: same network at init
        cbn.cond_bn_shift[1].weight[3] += 1.0  # class 3's shift at the 14×14 BatchNorm
        assert torch.equal(plain(z, y), cbn(z, y))  # other classes unchanged ...
        assert not torch.allclose(plain(z, y + 3), cbn(z, y + 3))  # ... class 3 moved
    ae = build_autoencoder(dataclasses.replace(CFG, g_cond_bn=True), 28, 1)
    left = load_autoencoder_into_generator(cbn, ae.state_dict())
    assert all(k.startswith("cond_") for k in left) and len(left) == 6
    # Without labels to condition on, the knob does nothing (an unconditional G has no tables).
    uncond = build_generator(dataclasses.replace(CFG, conditional=False, g_cond_bn=True), 28, 1, K)
    assert not any("cond_" in k for k in uncond.state_dict())


# ---------------------------------------------------------------- upsample + 3×3 conv in G

@pytest.mark.parametrize(("size", "channels"), [(28, 1), (32, 3), (64, 3)])
def test_nearest_upsampling_replaces_every_transposed_stride2_conv_and_transfers(size: int, channels: int) -> None:
    cfg = dataclasses.replace(CFG, g_upsample="nearest", conditional=False)
    G = build_generator(cfg, size, channels)
    strided = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2)]
    assert strided == []  # only the 1×1 → b×b projection stays a transposed conv
    assert G(torch.randn(B, L)).shape == (B, channels, size, size)
    ae = build_autoencoder(cfg, size, channels).eval()
    assert load_autoencoder_into_generator(G, ae.state_dict()) == []
    z = torch.randn(B, L)
    with torch.no_grad():
        assert torch.equal(G.eval()(z), ae.decode(z))
    convt = build_autoencoder(dataclasses.replace(cfg, g_upsample="convt"), size, channels)
    with pytest.raises(ValueError):  # other layers: the decoder of a convt AE does not fit
        load_autoencoder_into_generator(G, convt.state_dict())


@pytest.mark.parametrize(("field", "bad"), [("g_upsample", "bilinear"), ("d_hidden", -1), ("d_hidden", 10**6),
                                            ("d_hidden", True), ("g_cond_bn", 1), ("g_upsample", 2),
                                            ("g_hidden", -1), ("g_hidden", 10**6), ("g_hidden", "1024")])
def test_params_refuse_bad_recipe_fields(field: str, bad: object) -> None:
    with pytest.raises(ValueError, match=f"params.yaml.*{field}|{field}"):
        from_dict(ModelConfig, {field: bad}, "params.yaml: model")


# ---------------------------------------------------------------- learning-rate decay

def test_lr_factor_is_flat_then_linear_to_the_last_step() -> None:
    assert [lr_factor(s, 10, 0.0) for s in (0, 9)] == [1.0, 1.0]
    assert [lr_factor(s, 10, 0.4) for s in range(10)] == [1, 1, 1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25]
    assert lr_factor(0, 10, 1.0) == 1.0 and lr_factor(9, 10, 1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(lr_decay=1.5)


FAST = TrainConfig(epochs=2, batch_size=16, log_every=2, ema_decay=0.9, seed=1, num_threads=1, lr_decay=0.5, loss="bce",
                   init_from_autoencoder=False)
TINY = ModelConfig(latent_dim=8, g_width=4, d_width=4, conditional=True, spectral_norm=True, g_cond_bn=True,
                   g_upsample="nearest", d_hidden=16)


def _train(tmp: Path, cfg: TrainConfig, **kw: Any) -> GanResult:
    x, y = tiny_data(128)
    return train_gan(cfg, TINY, x, y, 10, tmp, NullSink(), log=lambda s: None, **kw)


def test_lr_decay_sets_both_optimisers_and_a_resume_mid_decay_is_exact(tmp_path: Path) -> None:
    """16 G steps, decay over the last 8: stop at step 11 (inside the decay), resume, match the full run."""
    n = torch.get_num_threads()
    try:
        full = _train(tmp_path / "full", FAST)
        _train(tmp_path / "cut", dataclasses.replace(FAST, max_steps=11))
        resumed = _train(tmp_path / "cut", FAST, resume=True)
        flat = _train(tmp_path / "flat", dataclasses.replace(FAST, lr_decay=0.0))
    finally:
        torch.set_num_threads(n)
    for a, b in ((full.generator, resumed.generator), (full.discriminator, resumed.discriminator)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    # the decay changed the training (same seed, same steps, other learning rates)
    assert not all(torch.equal(p, q) for p, q in zip(full.discriminator.parameters(), flat.discriminator.parameters(),
                                                     strict=True))
    state, _ = load_checkpoint(tmp_path / "full" / "last.pt", kind="gan")
    lrs = [g["lr"] for g in state["opt_g"]["param_groups"]] + [g["lr"] for g in state["opt_d"]["param_groups"]]
    assert lrs == pytest.approx([FAST.g_lr / 8, FAST.d_lr / 8])  # the last step's: factor 1/8
