"""GAN family: DCGAN (Radford et al., 2016), the seeds' two generator losses and k D steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gen.config import require
from gen.data import DataMeta, from_unit, to_unit
from gen.models.base import GenerativeModel, ModelConfig, randn

DCGAN_SIZES = (8, 16, 32, 64)


@dataclass
class GANConfig(ModelConfig):
    steps: int = 2000
    lr: float = 2e-4
    beta1: float = 0.5
    z_dim: int = 32
    g_channels: int = 64
    d_channels: int = 64
    # "minimax": G minimises log(1 - D(G(z))), the original objective, whose gradient vanishes
    # when D wins early; "non_saturating": G maximises log D(G(z)) instead (the seeds' flip).
    gan_loss: Literal["non_saturating", "minimax"] = "non_saturating"
    d_steps: int = 1  # k: discriminator steps per generator step

    def validate(self, section: str) -> None:
        super().validate(section)
        for key in ("z_dim", "g_channels", "d_channels", "d_steps"):
            require(getattr(self, key) > 0, f"{section}.{key}={getattr(self, key)} must be > 0")


class AdversarialModel(GenerativeModel):
    """Shared GAN mechanics: phases ("d",)*k + ("g",), D/G losses, sampling through tanh."""

    family = "adversarial"
    Config = GANConfig
    generator_net: nn.Module
    discriminator_net: nn.Module

    def __init__(self, cfg: GANConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        self.phases = ("d",) * cfg.d_steps + ("g",)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "d": list(self.discriminator_net.parameters()),
            "g": list(self.generator_net.parameters()),
        }

    def real_input(self, x: torch.Tensor) -> torch.Tensor:
        """Real images in [-1, 1] with uniform noise of one level's width, so D cannot tell real
        from fake just by the real images sitting on the discrete levels."""
        y = to_unit(x, self.meta.levels)
        step = 2.0 / (self.meta.levels - 1)
        return y + (torch.rand_like(y) - 0.5) * step

    def generate(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = randn((n, self.cfg.z_dim), generator, self.device)
        return self.generator_net(z)

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        n = len(x)
        if phase == "d":
            with torch.no_grad():
                fake = self.generate(n)
            real_logit = self.discriminator_net(self.real_input(x))
            fake_logit = self.discriminator_net(fake)
            loss = F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
            return {
                "loss": loss,
                "d_real": torch.sigmoid(real_logit).mean().detach(),
                "d_fake": torch.sigmoid(fake_logit).mean().detach(),
            }
        if phase == "g":
            fake_logit = self.discriminator_net(self.generate(n))
            if self.cfg.gan_loss == "non_saturating":
                loss = F.softplus(-fake_logit).mean()  # -log D(G(z))
            else:
                loss = -F.softplus(fake_logit).mean()  # log(1 - D(G(z)))
            return {"loss": loss, "d_fake_for_g": torch.sigmoid(fake_logit).mean().detach()}
        raise ValueError(f"unknown phase {phase!r}; {self.name} has phases {self.phases}")

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return from_unit(self.generate(n, generator), self.meta.levels)


class DCGAN(AdversarialModel):
    """Transposed-conv generator and strided-conv discriminator, sized from the image."""

    name = "dcgan"

    def __init__(self, cfg: GANConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        c, h, w = meta.shape
        require(
            h == w and h in DCGAN_SIZES,
            f"dcgan cannot take {h}x{w} images; allowed sizes: "
            f"{', '.join(f'{s}x{s}' for s in DCGAN_SIZES)} (set data.image_size)",
        )
        n_up = {8: 1, 16: 2, 32: 3, 64: 4}[h]
        g = [cfg.g_channels * 2 ** (n_up - i) for i in range(n_up + 1)]  # e.g. 128, 64 for 8x8
        layers: list[nn.Module] = [
            nn.Unflatten(1, (cfg.z_dim, 1, 1)),
            nn.ConvTranspose2d(cfg.z_dim, g[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(g[0]),
            nn.ReLU(),
        ]
        for a, b in zip(g[:-1], g[1:], strict=True):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        layers += [nn.Conv2d(g[-1], c, 3, padding=1), nn.Tanh()]
        self.generator_net = nn.Sequential(*layers)

        d = [cfg.d_channels * 2**i for i in range(n_up + 1)]  # e.g. 64, 128 for 8x8
        dl: list[nn.Module] = [nn.Conv2d(c, d[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for a, b in zip(d[:-1], d[1:], strict=True):
            dl += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]
        dl += [nn.Conv2d(d[-1], 1, 4, 1, 0), nn.Flatten(), nn.Flatten(0)]
        self.discriminator_net = nn.Sequential(*dl)
        self.apply(_dcgan_init)


def _dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
