"""The GAN's losses as small pure functions (what `train.loss` names). Inputs are logits or images; outputs scalars.

The autoencoder's reconstruction and KL losses live with its loop (training/autoencoder.py): a GAN loss edit
reruns train only.

Computed in fp32 even under autocast: the mixed-precision forward pass hands its
outputs here and `.float()` keeps the reductions exact enough to compare runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# D's output is a logit (no sigmoid). d_loss is what D minimises, g_loss what G minimises.
#   bce      D: −log σ(r)·t − log(1 − σ(f))            G: −log σ(f)   (non-saturating)
#   lsgan    D: ½(r − t)² + ½f²                        G: ½(f − 1)²    (Mao et al. 2017, a=0, b=c=1)
#   hinge    D: relu(1 − r) + relu(1 + f)              G: −f
#   wgan-gp  D: f − r  (+ gp_weight · gradient_penalty) G: −f           (Gulrajani et al. 2017)
# t is the real target (1 − label smoothing); hinge and wgan-gp have no target and ignore it.

GAN_LOSSES = ("bce", "lsgan", "hinge", "wgan-gp")


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor,
           real_target: float = 1.0) -> torch.Tensor:
    """Discriminator loss (scalar, fp32) from logits on real (B,) and fake (B,) images."""
    r, f = real_logits.float(), fake_logits.float()
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(r, torch.full_like(r, real_target))
                + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)))
    if kind == "lsgan":
        return 0.5 * ((r - real_target).pow(2).mean() + f.pow(2).mean())
    if kind == "hinge":
        return F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()
    if kind == "wgan-gp":
        return f.mean() - r.mean()
    raise ValueError(f"unknown GAN loss {kind!r}; use one of {', '.join(GAN_LOSSES)}")


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss (scalar, fp32) from D's logits on fakes (B,): make D call them real."""
    f = fake_logits.float()
    if kind == "bce":  # non-saturating: −log D(G(z)), not log(1 − D(G(z)))
        return F.binary_cross_entropy_with_logits(f, torch.ones_like(f))
    if kind == "lsgan":
        return 0.5 * (f - 1.0).pow(2).mean()
    if kind in ("hinge", "wgan-gp"):
        return -f.mean()
    raise ValueError(f"unknown GAN loss {kind!r}; use one of {', '.join(GAN_LOSSES)}")


def _input_grad(D: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """∂ΣD(x)/∂x (B, C, H, W), kept in the graph so the penalty trains D."""
    x = x.detach().requires_grad_(True)
    out = D(x, y).float()  # (B,)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.float()


def gradient_penalty(D: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: E[(‖∇D(x̂)‖₂ − 1)²] at x̂ = α·real + (1 − α)·fake, α ~ U(0, 1) per image.

    `real`, `fake` (B, C, H, W); `y` labels for a conditional D (the real ones); α comes
    from `generator` (drawn on its device, then moved) for reproducible runs.
    """
    gen_device = generator.device if generator is not None else real.device
    alpha = torch.rand(real.size(0), 1, 1, 1, generator=generator, device=gen_device)  # (B, 1, 1, 1)
    alpha = alpha.to(real.device, real.dtype)
    x_hat = alpha * real.detach() + (1 - alpha) * fake.detach().to(real.dtype)  # (B, C, H, W)
    grad = _input_grad(D, x_hat, y)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def r1_penalty(D: torch.nn.Module, real: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[‖∇D(x)‖₂²] on real images; the loop adds r1_weight/2 × this."""
    grad = _input_grad(D, real, y)
    return grad.flatten(1).pow(2).sum(1).mean()
