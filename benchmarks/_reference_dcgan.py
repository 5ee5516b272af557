"""The reference: a DCGAN loop written the way pytorch/examples `dcgan/main.py` does it.

torchvision-style dataset (per-image PIL image → ToTensor → Normalize), a DataLoader with
the example's default 2 workers and shuffling, fp32, NCHW, the D step as two separate
forward/backward passes (real, then fake.detach()), then the G step through D again.
Same networks as ganops (built from the same ModelConfig), same batch size and step count.
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ganops.config import ModelConfig
from ganops.models.discriminator import build_discriminator
from ganops.models.generator import build_generator


class UInt8ImageDataset(Dataset):
    """What torchvision's FashionMNIST.__getitem__ does: PIL image from uint8, then transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels  # (N, C, H, W) uint8, (N,)
        c = images.shape[1]
        self.transform = T.Compose([T.ToTensor(), T.Normalize((0.5,) * c, (0.5,) * c)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        pil = Image.fromarray(img[0].numpy(), mode="L") if img.shape[0] == 1 else Image.fromarray(
            img.permute(1, 2, 0).numpy())
        return self.transform(pil), int(self.labels[i])


def reference_throughput(images: torch.Tensor, labels: torch.Tensor, model_cfg: ModelConfig, num_classes: int,
                         batch_size: int, steps: int, workers: int = 2, seed: int = 0) -> float:
    """img/s of `steps` reference DCGAN iterations (each: D on a real and a fake batch, then G).
    Labels go to G and D as in ganops; the builders use them only when model_cfg.conditional."""
    torch.manual_seed(seed)
    _, c, h, _ = images.shape
    netG = build_generator(model_cfg, h, c, num_classes)
    netD = build_discriminator(model_cfg, h, c, num_classes)
    criterion = nn.BCEWithLogitsLoss()  # ganops' D returns logits; dcgan uses Sigmoid + BCELoss
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = DataLoader(UInt8ImageDataset(images, labels), batch_size=batch_size, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    done, seen, t0 = 0, 0, 0.0
    while done < steps + 1:
        for real, y_real in loader:
            if done == 1:  # first iteration is warm-up (worker start, allocator)
                t0, seen = time.perf_counter(), 0
            b = real.size(0)
            # (1) update D: maximise log D(x) + log(1 - D(G(z)))
            netD.zero_grad()
            errD_real = criterion(netD(real, y_real), torch.full((b,), 1.0))
            errD_real.backward()
            noise = torch.randn(b, model_cfg.latent_dim)
            y_fake = torch.randint(0, num_classes, (b,))
            fake = netG(noise, y_fake)
            errD_fake = criterion(netD(fake.detach(), y_fake), torch.full((b,), 0.0))
            errD_fake.backward()
            optD.step()
            # (2) update G: maximise log D(G(z))
            netG.zero_grad()
            errG = criterion(netD(fake, y_fake), torch.full((b,), 1.0))
            errG.backward()
            optG.step()
            done += 1
            seen += b
            if done >= steps + 1:
                break
    return seen / (time.perf_counter() - t0)
