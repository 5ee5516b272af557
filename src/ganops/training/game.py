"""The DCGAN game's mathematics: G, D, their optimisers and RNG streams, and one training step.

`ganops.training.gan.train_gan` is the loop around it (schedule, EMA, scoring, checkpoints, reports). One G
step is d_steps D updates, each on a fresh real batch, then one G update; each update touches only its own
network's weights (the other's grads are never stepped).
"""

from __future__ import annotations

import torch

from ganops import losses, runtime
from ganops.config import ModelConfig, TrainConfig
from ganops.models.discriminator import build_discriminator
from ganops.models.generator import build_generator
from ganops.models.latent import sample_latent
from ganops.runtime import autocast
from ganops.training.diffaugment import diff_augment
from ganops.training.distributed import DistInfo
from ganops.training.state import STREAMS, stream_generator

STATS = ("d_loss", "g_loss", "d_real", "d_fake")  # what a step returns, in this order


class Game:
    """G, D, their optimisers and the RNG streams the step draws from; one training step."""

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, train_x: torch.Tensor, train_y: torch.Tensor,
                 num_classes: int, device: torch.device, amp: torch.dtype | None, dist: DistInfo) -> None:
        _, c, h, _ = train_x.shape
        self.cfg, self.model_cfg, self.device, self.amp = cfg, model_cfg, device, amp
        self.cond, self.num_classes = model_cfg.conditional, num_classes
        self.x = train_x.to(device)  # uint8 (N, C, H, W); a no-op on CPU
        self.y = train_y.to(device)  # (N,)
        self.G = build_generator(model_cfg, h, c, num_classes).to(device)
        self.D = build_discriminator(model_cfg, h, c, num_classes).to(device)
        if cfg.channels_last:
            self.G = self.G.to(memory_format=torch.channels_last)
            self.D = self.D.to(memory_format=torch.channels_last)
        self.G_train: torch.nn.Module = self.G  # DDP wrappers when distributed
        self.D_train: torch.nn.Module = self.D
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.g_lr, betas=betas, fused=True)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr, betas=betas, fused=True)
        self.streams = {name: stream_generator(cfg.seed, name, dist.rank) for name in STREAMS}
        self.ops = cfg.diffaugment_ops
        self.real_target = 1.0 - cfg.label_smoothing if cfg.loss == "bce" else 1.0
        self.d_batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.D.modules())

    def wrap_ddp(self, dist: DistInfo) -> None:
        """DDP wrappers for the training forwards (built while every parameter trains); a no-op alone."""
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # forward_sync_buffers is torch 2.14's name for broadcast_buffers: rank 0's BN stats each forward
            self.G_train = DDP(self.G.requires_grad_(True), device_ids=ids, forward_sync_buffers=True)
            self.D_train = DDP(self.D.requires_grad_(True), device_ids=ids, forward_sync_buffers=True)

    def latent(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z (n, L) and, when conditional, uniformly drawn fake labels (n,), from the latent stream."""
        gen = self.streams["latent"]
        z = sample_latent(n, self.model_cfg.latent_dim, self.model_cfg.latent_dist, generator=gen)
        y = torch.randint(0, self.num_classes, (n,), generator=gen) if self.cond else None
        return z.to(self.device), (y.to(self.device) if y is not None else None)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.ops, self.streams["augment"]) if self.ops else x

    def train_step(self, batches: list[torch.Tensor]) -> torch.Tensor:
        """d_steps D updates (one per index batch), then one G update. (len(STATS),) on device."""
        cfg, amp, dev = self.cfg, self.amp, self.device
        # (1) update D: maximise log D(x) + log(1 - D(G(z)))  (the bce form; other losses alike)
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        for idx in batches:
            real = runtime.to_model_input(self.x[idx], dev, cfg.channels_last)  # (B, C, H, W) in [-1, 1]
            y_real = self.y[idx] if self.cond else None  # (B,)
            B = real.size(0)
            z, y_fake = self.latent(B)
            with torch.no_grad(), autocast(dev, amp):
                fake = self.G(z, y_fake)  # (B, C, H, W)
            # Real and fake in ONE forward: BatchNorm sees one batch, and DDP's buffer broadcast
            # happens once per backward (two forwards raise an in-place error under DDP).
            x = self.augment(torch.cat([real, fake.to(real.dtype)]))  # (2B, C, H, W)
            y = torch.cat([y_real, y_fake]) if y_real is not None and y_fake is not None else None
            with autocast(dev, amp):
                logits = self.D_train(x, y).float()  # (2B,)
                real_logits, fake_logits = logits[:B], logits[B:]
                loss_d = losses.d_loss(cfg.loss, real_logits, fake_logits, self.real_target)
                if cfg.loss == "wgan-gp" and cfg.gp_weight > 0:
                    gp = losses.gradient_penalty(self.D, x[:B], x[B:], y_real, generator=self.streams["latent"])
                    loss_d = loss_d + cfg.gp_weight * gp
                if cfg.r1_weight > 0:
                    loss_d = loss_d + 0.5 * cfg.r1_weight * losses.r1_penalty(self.D, x[:B], y_real)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        # (2) update G: maximise log D(G(z)), with D frozen (no grads into D's weights)
        self.D.requires_grad_(False)
        self.G.requires_grad_(True)
        z, y_fake = self.latent(B)
        with autocast(dev, amp):
            fake = self.augment(self.G_train(z, y_fake))  # (B, C, H, W)
            if self.d_batchnorm:
                # D's BatchNorm learnt on real+fake batches; a fakes-only batch would be normalised
                # differently and D would call it real whatever G does. Same mix, grads from the fake half.
                real_x = x[:B].detach()  # (B, C, H, W) the last D step's (augmented) reals
                y = torch.cat([y_real, y_fake]) if y_real is not None and y_fake is not None else None
                fake_logits_g = self.D(torch.cat([real_x, fake.to(real_x.dtype)]), y)[B:]  # (B,)
            else:
                fake_logits_g = self.D(fake, y_fake)  # (B,)
            loss_g = losses.g_loss(cfg.loss, fake_logits_g.float())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return torch.stack([loss_d.detach(), loss_g.detach(),
                            real_logits.detach().sigmoid().mean(), fake_logits.detach().sigmoid().mean()])
