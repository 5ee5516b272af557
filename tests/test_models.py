"""Networks: shapes for every size, AE -> G/D transfer by name, init, bf16 + channels_last, latents."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganops.config import ModelConfig
from ganops.models.autoencoder import (
    AEOutput,
    Autoencoder,
    build_autoencoder,
    load_autoencoder_into_discriminator,
    load_autoencoder_into_generator,
)
from ganops.models.blocks import SNLinear, init_weights
from ganops.models.discriminator import Discriminator, build_discriminator
from ganops.models.generator import Generator, build_generator
from ganops.models.latent import sample_latent

SIZES = (28, 32, 64)
CHANNELS = (1, 3)
B, L, W, K = 4, 16, 8, 10  # batch, latent_dim, width, classes: small so the file stays fast


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _images(size: int, channels: int, n: int = B) -> torch.Tensor:
    return torch.rand(n, channels, size, size) * 2 - 1


def _labels(n: int = B) -> torch.Tensor:
    return torch.randint(0, K, (n,))


def _trained_ae(ae: Autoencoder, size: int, channels: int) -> Autoencoder:
    """Move BN running stats (and spectral-norm u, v) off their init so the transfer is not vacuous."""
    ae.train()
    with torch.no_grad():
        for _ in range(2):
            ae(_images(size, channels))
    return ae.eval()


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
def test_generator_and_discriminator_shapes_for_every_size(size: int, channels: int,
                                                           conditional: bool) -> None:
    k = K if conditional else 0
    G, D = Generator(L, channels, size, W, num_classes=k), Discriminator(channels, size, W, num_classes=k)
    y = _labels() if conditional else None
    x = G(torch.randn(B, L), y)
    assert x.shape == (B, channels, size, size) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    logits = D(x, y)
    assert logits.shape == (B,) and logits.dtype == torch.float32
    assert D.features(x).shape == (B, D.trunk.out_features)


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
def test_spectral_norm_discriminator_has_no_batchnorm_and_gives_logits(size: int, channels: int) -> None:
    D = Discriminator(channels, size, W, num_classes=K, spectral_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    assert any("parametrizations.weight.original" in k for k in D.state_dict())
    assert D(_images(size, channels), _labels()).shape == (B,)


@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
def test_autoencoder_output_shapes(size: int, channels: int, variational: bool) -> None:
    ae = Autoencoder(L, channels, size, W, W, variational=variational)
    out = ae(_images(size, channels))
    assert isinstance(out, AEOutput)
    assert out.recon.shape == (B, channels, size, size) and out.z.shape == (B, L)
    assert out.recon.min() >= -1 and out.recon.max() <= 1
    if variational:
        assert out.mu is not None and out.logvar is not None
        assert out.mu.shape == out.logvar.shape == (B, L)
    else:
        assert out.mu is None and out.logvar is None


def test_vae_samples_in_training_and_uses_the_mean_at_eval() -> None:
    ae = Autoencoder(L, 1, 28, W, W, variational=True)
    x = _images(28, 1)
    out = ae.train()(x)
    assert out.mu is not None and not torch.allclose(out.z, out.mu)
    ae.eval()
    out = ae(x)
    assert out.mu is not None and torch.equal(out.z, out.mu)
    assert torch.equal(ae.encode(x), out.mu)
    assert torch.allclose(ae.decode(out.z), out.recon)


def test_conditioning_changes_outputs_and_requires_labels() -> None:
    G, D = Generator(L, 1, 28, W, num_classes=K).eval(), Discriminator(1, 28, W, num_classes=K).eval()
    z, x = torch.randn(B, L), _images(28, 1)
    y0, y1 = torch.zeros(B, dtype=torch.long), torch.ones(B, dtype=torch.long)
    assert not torch.allclose(G(z, y0), G(z, y1))
    assert not torch.allclose(D(x, y0), D(x, y1))
    with pytest.raises(ValueError, match="labels"):
        G(z)
    with pytest.raises(ValueError, match="labels"):
        D(x)
    assert Generator(L, 1, 28, W)(z, y0).shape == (B, 1, 28, 28)  # unconditional ignores y


# ---------------------------------------------------------------- AE -> G / D transfer


@pytest.mark.parametrize("depth", [0, 2])
@pytest.mark.parametrize("spectral_norm", [False, True])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
def test_transfer_makes_g_equal_decoder_and_d_trunk_equal_encoder_trunk(
    size: int, channels: int, spectral_norm: bool, depth: int
) -> None:
    cfg = ModelConfig(latent_dim=L, g_width=W, d_width=W, spectral_norm=spectral_norm, depth=depth, conditional=False,
                      d_hidden=0)
    ae = _trained_ae(build_autoencoder(cfg, size, channels, variational=True), size, channels)
    G, D = build_generator(cfg, size, channels).eval(), build_discriminator(cfg, size, channels).eval()
    z, x = torch.randn(B, L), _images(size, channels)
    with torch.no_grad():
        assert not torch.allclose(G(z), ae.decode(z))  # guards against a vacuous pass

        assert load_autoencoder_into_generator(G, ae.state_dict()) == []
        left = load_autoencoder_into_discriminator(D, ae.state_dict())
        assert left and all(k.startswith("head.") for k in left)

        assert torch.equal(G(z), ae.decode(z))
        assert torch.equal(D.features(x), ae.encoder.trunk(x))


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_depth_adds_3x3_layers_and_keeps_depth0_keys(spectral_norm: bool) -> None:
    plain = ModelConfig(latent_dim=L, g_width=W, d_width=W, spectral_norm=spectral_norm, conditional=False, d_hidden=0)
    deep = ModelConfig(latent_dim=L, g_width=W, d_width=W, spectral_norm=spectral_norm, depth=2, conditional=False,
                       d_hidden=0)
    for build in (build_generator, build_discriminator):
        a, b = build(plain, 28, 1), build(deep, 28, 1)
        convs = [m for m in b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        # G: 2 at 7×7 + 2 at 14×14; D: 2 after each of its two stride-2 convs
        assert len(convs) == 4 and not any(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
                                           for m in a.modules())
        assert set(a.state_dict()) < set(b.state_dict())  # depth 0 keys unchanged: old checkpoints load
    G, D = build_generator(deep, 28, 1), build_discriminator(deep, 28, 1)
    assert G(torch.randn(B, L)).shape == (B, 1, 28, 28) and D(_images(28, 1)).shape == (B,)


@pytest.mark.parametrize("bad", [-1, 5, True, 1.5])
def test_model_config_rejects_bad_depth(bad: object) -> None:
    with pytest.raises(ValueError, match="depth"):
        ModelConfig(depth=bad)  # type: ignore[arg-type]


def test_transfer_into_conditional_models_leaves_only_conditioning_and_head_at_init() -> None:
    cfg = ModelConfig(latent_dim=L, g_width=W, d_width=W, conditional=True, spectral_norm=False, d_hidden=0)
    ae = build_autoencoder(cfg, 28, 1)
    G, D = build_generator(cfg, 28, 1, K), build_discriminator(cfg, 28, 1, K)
    assert load_autoencoder_into_generator(G, ae.state_dict()) == ["cond_embed.weight", "cond_project.weight"]
    assert load_autoencoder_into_discriminator(D, ae.state_dict()) == ["cond_embed.weight", "head.bias",
                                                                       "head.weight"]
    # The same contract through plain load_state_dict: only the conditioning keys are missing.
    dec = {k.removeprefix("decoder."): v for k, v in ae.state_dict().items() if k.startswith("decoder.")}
    result = G.load_state_dict(dec, strict=False)
    assert sorted(result.missing_keys) == ["cond_embed.weight", "cond_project.weight"]
    assert not result.unexpected_keys


def test_transfer_refuses_mismatched_spectral_norm() -> None:
    plain = ModelConfig(latent_dim=L, d_width=W, conditional=False, spectral_norm=False, d_hidden=0)
    sn = ModelConfig(latent_dim=L, d_width=W, spectral_norm=True, conditional=False, d_hidden=0)
    for d_cfg, ae_cfg in [(sn, plain), (plain, sn)]:
        D, ae = build_discriminator(d_cfg, 28, 1), build_autoencoder(ae_cfg, 28, 1)
        with pytest.raises(ValueError, match="spectral_norm"):
            load_autoencoder_into_discriminator(D, ae.state_dict())


def test_transfer_refuses_mismatched_shapes_and_foreign_state_dicts() -> None:
    ae = Autoencoder(L, 1, 28, W, W)
    with pytest.raises(ValueError, match="shape"):
        load_autoencoder_into_generator(Generator(L, 1, 28, 2 * W), ae.state_dict())
    with pytest.raises(ValueError, match="no 'encoder.trunk.' weights for discriminator trunk key"):
        load_autoencoder_into_discriminator(Discriminator(1, 32, W), ae.state_dict())  # one layer more
    with pytest.raises(ValueError, match="no parameter"):
        load_autoencoder_into_discriminator(Discriminator(1, 28, W), Autoencoder(L, 1, 32, W, W).state_dict())
    with pytest.raises(ValueError, match="not an autoencoder"):
        load_autoencoder_into_generator(Generator(L, 1, 28, W), Generator(L, 1, 28, W).state_dict())


# ---------------------------------------------------------------- validation, builders, init


@pytest.mark.parametrize("make", [
    lambda: Generator(L, 1, 48, W),
    lambda: Discriminator(1, 48, W),
    lambda: Autoencoder(L, 1, 48, W, W),
])
def test_unsupported_image_size_raises_value_error(make) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="image_size 48 not supported; use 28, 32 or 64"):
        make()


def test_unsupported_channels_raises_value_error() -> None:
    with pytest.raises(ValueError, match="channels 2 not supported"):
        Generator(L, 2, 28, W)
    with pytest.raises(ValueError, match="channels 4 not supported"):
        Discriminator(4, 28, W)


def test_builders_use_num_classes_only_when_conditional() -> None:
    cfg = ModelConfig(latent_dim=L, g_width=W, d_width=W, conditional=False, spectral_norm=False, d_hidden=0)
    assert build_generator(cfg, 28, 1, K).num_classes == 0
    assert build_discriminator(cfg, 28, 1, K).num_classes == 0
    cond = ModelConfig(latent_dim=L, g_width=W, d_width=W, conditional=True, spectral_norm=True, d_hidden=0)
    assert build_generator(cond, 32, 3, K).num_classes == K
    D = build_discriminator(cond, 32, 3, K)
    assert D.num_classes == K and D.spectral_norm
    with pytest.raises(ValueError, match="num_classes"):
        build_generator(cond, 28, 1, 0)


def test_dcgan_init_has_std_002_and_batchnorm_near_one() -> None:
    G, D = Generator(64, 1, 28, 64), Discriminator(1, 28, 64)
    for m in [*G.modules(), *D.modules()]:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and m.weight.numel() > 1000:
            assert abs(m.weight.std().item() - 0.02) < 0.002
            assert abs(m.weight.mean().item()) < 0.002
        if isinstance(m, nn.BatchNorm2d):
            assert abs(m.weight.mean().item() - 1) < 0.01 and torch.all(m.bias == 0)
    lin = init_weights(nn.Linear(256, 256))
    assert abs(lin.weight.std().item() - 0.02) < 0.002 and torch.all(lin.bias == 0)


def test_bf16_autocast_and_channels_last_forward_backward() -> None:
    G = Generator(L, 1, 28, W, num_classes=K).to(memory_format=torch.channels_last)
    D = Discriminator(1, 28, W, num_classes=K).to(memory_format=torch.channels_last)
    x = _images(28, 1, 16).contiguous(memory_format=torch.channels_last)
    y = _labels(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake = G(torch.randn(16, L), y)
        loss = D(x, y).float().mean() - D(fake, y).float().mean()
    assert fake.shape == (16, 1, 28, 28) and fake.dtype == torch.bfloat16
    loss.backward()
    for p in [*G.parameters(), *D.parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all()


# ---------------------------------------------------------------- latents


def test_sample_latent_uniform_in_range_and_reproducible_with_seeded_generator() -> None:
    a = sample_latent(1000, L, "uniform", generator=torch.Generator().manual_seed(7))
    b = sample_latent(1000, L, "uniform", generator=torch.Generator().manual_seed(7))
    assert a.shape == (1000, L) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1 and a.min() < -0.99 and a.max() > 0.99
    n = sample_latent(1000, L, "normal", generator=torch.Generator().manual_seed(7))
    assert abs(n.mean().item()) < 0.05 and abs(n.std().item() - 1) < 0.05
    assert not torch.equal(n, sample_latent(1000, L, "normal", generator=torch.Generator().manual_seed(8)))
    with pytest.raises(ValueError, match="uniform"):
        sample_latent(2, L, "cauchy")


def _sn_pair(bias: bool) -> tuple[nn.Module, SNLinear]:
    """A spectral-norm nn.Linear (torch divides the weight) and an SNLinear holding the same state."""
    ref = nn.Linear(48, 32, bias=bias)
    with torch.no_grad():
        ref.weight.mul_(10)  # σ far from 1, so dividing the wrong thing cannot pass
        if bias:
            ref.bias.normal_()
    ref = spectral_norm(ref)
    ours = spectral_norm(SNLinear(48, 32, bias=bias))
    ours.load_state_dict(ref.state_dict())  # the same keys: weights and checkpoints interchange
    return ref, ours


@pytest.mark.parametrize("bias", [True, False])
def test_sn_linear_divides_its_output_as_spectral_norm_divides_the_weight(bias: bool) -> None:
    ref, ours = _sn_pair(bias)
    raw = ref.parametrizations.weight.original
    for _ in range(3):  # training mode: each forward runs one power iteration, on both
        x = torch.randn(6, 48, requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        y_ref, y = ref(x), ours(x2)
        assert (y_ref - nn.functional.linear(x, raw, ref.bias)).abs().max() > 1, "σ ≈ 1 would make this vacuous"
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        for name in ("_u", "_v"):
            torch.testing.assert_close(getattr(ours.parametrizations.weight[0], name),
                                       getattr(ref.parametrizations.weight[0], name), rtol=0, atol=0)
        g = torch.randn_like(y)
        y_ref.backward(g)
        y.backward(g)
        torch.testing.assert_close(x2.grad, x.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.parametrizations.weight.original.grad, raw.grad, rtol=1e-4, atol=1e-6)
        if bias:
            torch.testing.assert_close(ours.bias.grad, ref.bias.grad)
        ref.zero_grad(), ours.zero_grad()
    u = ours.parametrizations.weight[0]._u.clone()
    ref.eval(), ours.eval()
    x = torch.randn(6, 48)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(ours.parametrizations.weight[0]._u, u)  # eval: no power iteration
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 rounds W instead of W/σ: close, not equal
        y_ref, y = ref(x), ours(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=3e-2, atol=3e-2)


def test_sn_linear_without_spectral_norm_is_nn_linear() -> None:
    ref = nn.Linear(48, 32)
    ours = SNLinear(48, 32)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(6, 48)
    assert torch.equal(ours(x), ref(x))
    D = Discriminator(1, 28, W, num_classes=K, spectral_norm=True, hidden=32)
    assert isinstance(D.hidden[0], SNLinear) and isinstance(D.head, SNLinear)  # the layers that take the output path
