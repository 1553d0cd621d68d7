"""Puzzle-GAN: the whole image from a few key local patches (Lee et al., 2018, "Unsupervised
holistic image generation from key local patches", the seeds' Puzzle-GAN).

The key patches of an image are its most inked, non-overlapping squares, chosen the same way
for training and evaluation, so "error on the given patches" measures how faithfully the
generator keeps what it was given. The generator is an encoder-decoder over the patches, their
mask and noise; the discriminator judges whole images; a reconstruction term ties the generated
image to the one the patches came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gen.conditions import image
from gen.config import at_least, checked, positive, require
from gen.data import DataMeta, from_unit, to_unit
from gen.models.base import randn
from gen.models.gan import (
    AdversarialModel,
    GANConfig,
    d_loss_terms,
    dcgan_discriminator_body,
    dcgan_init,
    dcgan_start,
    g_loss,
)


@dataclass
class PuzzleGANConfig(GANConfig):
    steps: int = 1500
    z_dim: int = 16
    g_channels: int = 32
    d_channels: int = 32
    n_patches: int = checked(3, positive())  # key patches given to the generator
    patch_size: int = checked(2, positive())  # side of each square patch, in pixels
    # Weight of the L1 reconstruction of the whole image.
    rec_weight: float = checked(10.0, at_least(0))


def key_patch_mask(x: torch.Tensor, n_patches: int, size: int) -> torch.Tensor:
    """bool (N, 1, H, W): the `n_patches` non-overlapping `size` x `size` squares with the most
    ink (summed over channels), picked greedily; ties go to the top-left square."""
    ink = x.float().sum(1, keepdim=True)
    score = F.avg_pool2d(ink, size, stride=1)  # (N, 1, H-size+1, W-size+1): ink per square
    ones = torch.ones(1, 1, size, size, device=x.device)
    mask = torch.zeros_like(ink)
    for _ in range(n_patches):
        best = score.flatten(1).argmax(1, keepdim=True)
        onehot = torch.zeros_like(score).flatten(1).scatter_(1, best, 1.0).view_as(score)
        mask = torch.maximum(mask, F.conv_transpose2d(onehot, ones))
        # Squares overlapping the chosen one are out: positions within size-1 of it.
        near = F.max_pool2d(onehot, 2 * size - 1, stride=1, padding=size - 1)
        score = score.masked_fill(near > 0, float("-inf"))
    return mask > 0


class PatchGenerator(nn.Module):
    """Encoder-decoder from (patches, mask) down to the DCGAN start map (4x4 for 8x8, 7x7 for
    28x28), noise joined there, back up with skips."""

    def __init__(self, channels: int, width: int, z_dim: int, meta: DataMeta) -> None:
        super().__init__()
        n, _ = dcgan_start(meta)  # 8x8 -> one down/up sampling
        widths = [width * 2**i for i in range(n + 1)]
        self.stem = nn.Sequential(
            nn.Conv2d(channels + 1, widths[0], 3, padding=1), nn.LeakyReLU(0.2)
        )
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.LeakyReLU(0.2))
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        top = widths[-1]
        self.middle = nn.Sequential(
            nn.Conv2d(top + z_dim, top, 3, padding=1), nn.BatchNorm2d(top), nn.ReLU()
        )
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(2 * b, a, 4, 2, 1), nn.BatchNorm2d(a), nn.ReLU())
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.out = nn.Sequential(nn.Conv2d(2 * widths[0], channels, 3, padding=1), nn.Tanh())

    def forward(self, patches: torch.Tensor, mask: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.stem(torch.cat([patches, mask], 1))
        skips = [h]
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        z_map = z[:, :, None, None].expand(-1, -1, *h.shape[2:])
        h = self.middle(torch.cat([h, z_map], 1))
        for layer in reversed(self.up):
            h = layer(torch.cat([h, skips.pop()], 1))
        return self.out(torch.cat([h, skips.pop()], 1))


class PuzzleGAN(AdversarialModel):
    """Generates the whole image from its key patches; see the module docstring."""

    name = "puzzlegan"
    family = "conditional"
    condition = image.KIND
    Config = PuzzleGANConfig
    image_free_phases = ()  # G completes real images: every phase reads them

    def __init__(self, cfg: PuzzleGANConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        c, h, w = meta.shape
        require(
            cfg.n_patches * cfg.patch_size**2 < h * w,
            f"{self.name}.n_patches x patch_size^2 = {cfg.n_patches * cfg.patch_size**2} must "
            f"cover less than the {h}x{w} image",
        )
        self.generator_net = PatchGenerator(c, cfg.g_channels, cfg.z_dim, meta)
        body, top = dcgan_discriminator_body(cfg.d_channels, meta)
        self.discriminator_net = nn.Sequential(
            *body, nn.Conv2d(top, 1, dcgan_start(meta)[1], 1, 0), nn.Flatten(), nn.Flatten(0)
        )
        self.apply(dcgan_init)

    def patch_mask(self, x: torch.Tensor) -> torch.Tensor:
        """bool (N, 1, H, W): where the key patches of uint8 images `x` are."""
        return key_patch_mask(x, self.cfg.n_patches, self.cfg.patch_size)

    def complete(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole images in [-1, 1] from the key patches of uint8 images `x`, and the mask."""
        mask = self.patch_mask(x).float()
        patches = to_unit(x, self.meta.levels) * mask
        z = randn((len(x), self.cfg.z_dim), generator, x.device)
        return self.generator_net(patches, mask, z), mask

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if phase == "d":
            with torch.no_grad():
                fake, _ = self.complete(x)
            return d_loss_terms(
                self.discriminator_net(self.real_input(x)), self.discriminator_net(fake)
            )
        if phase == "g":
            fake, mask = self.complete(x)
            fake_logit = self.discriminator_net(fake)
            err = (fake - to_unit(x, self.meta.levels)).abs()
            rec = err.mean()
            adv = g_loss(fake_logit, self.cfg.gan_loss)
            return {
                "loss": adv + self.cfg.rec_weight * rec,
                "adversarial": adv.detach(),
                "reconstruction": rec.detach(),
                "patch_error": (
                    (err * mask).sum() / mask.sum().clamp_min(1) / err.shape[1]
                ).detach(),
            }
        raise ValueError(f"unknown phase {phase!r}; {self.name} has phases {self.phases}")

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Whole images from the key patches of `condition`, uint8 images (n, C, H, W)."""
        if condition is None:
            raise ValueError(f"{self.name} samples from the key patches of given images: pass them")
        fake, _ = self.complete(condition[:n].to(self.device), generator)
        return from_unit(fake, self.meta.levels)
