"""GAN losses and penalties against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganops.losses import GAN_LOSSES, d_loss, g_loss, gradient_penalty, r1_penalty
from ganops.training.autoencoder import kl_normal, reconstruction_loss

LN2 = math.log(2)


class LinearD(nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so the penalties have closed forms."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return x.flatten(1) @ self.w  # (B,)


def logits(*v: float) -> torch.Tensor:
    return torch.tensor(v)


def test_bce_at_zero_logits_is_log2_per_half() -> None:
    z = torch.zeros(4)
    assert d_loss("bce", z, z).item() == pytest.approx(2 * LN2)
    assert g_loss("bce", z).item() == pytest.approx(LN2)


def test_bce_label_smoothing_targets_one_minus_smoothing() -> None:
    r, f = logits(2.0), logits(-1.0)
    t = 0.9
    p = torch.sigmoid(r)
    expected = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)) - torch.log(1 - torch.sigmoid(f))
    assert d_loss("bce", r, f, real_target=t).item() == pytest.approx(expected.item(), rel=1e-5)


def test_generator_loss_is_non_saturating() -> None:
    """G's gradient does not vanish when D confidently rejects its fakes (logit -10)."""
    f = logits(-10.0).requires_grad_(True)
    g_loss("bce", f).backward()
    assert f.grad is not None and f.grad.item() == pytest.approx(-1.0, abs=1e-3)


@pytest.mark.parametrize("kind", GAN_LOSSES)
def test_d_loss_falls_as_d_separates_real_from_fake(kind: str) -> None:
    confused = d_loss(kind, logits(0.0, 0.0), logits(0.0, 0.0)).item()
    right = d_loss(kind, logits(0.9, 0.9), logits(-0.9, -0.9)).item()
    assert right < confused
    assert g_loss(kind, logits(0.9)).item() < g_loss(kind, logits(-0.9)).item()  # G wants fakes called real


def test_lsgan_hinge_wgan_values() -> None:
    r, f = logits(1.0, 3.0), logits(0.0, -2.0)
    assert d_loss("lsgan", r, f).item() == pytest.approx(0.5 * ((0 + 4) / 2 + (0 + 4) / 2))
    assert g_loss("lsgan", logits(1.0)).item() == 0.0
    assert d_loss("hinge", r, f).item() == pytest.approx((0 + 0) / 2 + (1 + 0) / 2)
    assert g_loss("hinge", f).item() == pytest.approx(1.0)
    assert d_loss("wgan-gp", r, f).item() == pytest.approx(-1.0 - 2.0)
    assert g_loss("wgan-gp", f).item() == pytest.approx(1.0)


def test_losses_are_fp32_scalars_for_bf16_logits() -> None:
    r, f = torch.randn(8).bfloat16(), torch.randn(8).bfloat16()
    for kind in GAN_LOSSES:
        for v in (d_loss(kind, r, f), g_loss(kind, f)):
            assert v.dtype == torch.float32 and v.dim() == 0


def test_unknown_loss_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown GAN loss 'wgan'"):
        d_loss("wgan", logits(0.0), logits(0.0))
    with pytest.raises(ValueError, match="unknown GAN loss"):
        g_loss("nope", logits(0.0))


def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared() -> None:
    w = torch.full((1 * 4 * 4,), 0.5)  # ‖w‖ = 0.5 · 4 = 2
    D = LinearD(w)
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    gp = gradient_penalty(D, real, fake, generator=torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx((2.0 - 1.0) ** 2, rel=1e-5)
    gp.backward()  # the penalty trains D: d/dw (‖w‖ − 1)² = 2(‖w‖ − 1) w / ‖w‖
    assert torch.allclose(D.w.grad, 2 * (2.0 - 1.0) * w / 2.0, atol=1e-5)
    unit = LinearD(w / 2.0)
    assert gradient_penalty(unit, real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_is_reproducible_with_a_generator() -> None:
    D = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))

    class Wrap(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            return torch.tanh(D(x)).squeeze(1) * 3

    real, fake = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    a = gradient_penalty(Wrap(), real, fake, generator=torch.Generator().manual_seed(1))
    b = gradient_penalty(Wrap(), real, fake, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_r1_penalty_is_squared_input_gradient_norm() -> None:
    w = torch.arange(16.0) / 10  # ‖w‖² = Σ i²/100
    D = LinearD(w)
    r1 = r1_penalty(D, torch.randn(4, 1, 4, 4))
    assert r1.item() == pytest.approx(float((w**2).sum()), rel=1e-5)
    r1.backward()
    assert torch.allclose(D.w.grad, 2 * w, atol=1e-5)


def test_reconstruction_and_kl_are_unchanged() -> None:
    x = torch.zeros(2, 1, 2, 2)
    assert reconstruction_loss(x, x, "mse").item() == 0.0
    assert kl_normal(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0
