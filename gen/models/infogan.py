"""InfoGAN (Chen et al., 2016): a GAN whose generator also takes codes c (one categorical, a few
uniform continuous ones) that an auxiliary head Q on the discriminator must recover from the fakes.
Maximising this lower bound on the mutual information I(c; G(z, c)) makes the codes name
interpretable factors, without labels: on digits the categorical code tends to pick the digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gen.capabilities import Capabilities
from gen.config import at_least, checked, positive
from gen.data import DataMeta
from gen.models.base import randn
from gen.models.gan import (
    AdversarialModel,
    GANConfig,
    d_loss_terms,
    dcgan_discriminator_body,
    dcgan_generator,
    dcgan_init,
    dcgan_start,
    g_loss,
)


@dataclass
class InfoGANConfig(GANConfig):
    z_dim: int = 8  # incompressible noise; the generator input is z_dim + n_categories + n_cont.
    g_channels: int = 32
    d_channels: int = 32
    n_categories: int = checked(10, at_least(2))  # size of the categorical code
    n_continuous: int = checked(2, at_least(0))  # continuous codes, each uniform on [-1, 1]
    # lambda: weight of the mutual-information term in both G and D/Q.
    info_weight: float = checked(1.0, at_least(0))
    # Width of Q's hidden layer on top of the shared discriminator body.
    q_hidden: int = checked(128, positive())


class InfoDiscriminator(nn.Module):
    """A shared conv body with two heads: D's real/fake logit and Q's code predictions."""

    def __init__(self, cfg: InfoGANConfig, meta: DataMeta) -> None:
        super().__init__()
        layers, top = dcgan_discriminator_body(cfg.d_channels, meta)
        self.body = nn.Sequential(*layers, nn.Flatten())
        h, w = dcgan_start(meta)[1]
        flat = top * h * w
        self.d_head = nn.Sequential(nn.Linear(flat, 1), nn.Flatten(0))
        self.q_head = nn.Sequential(
            nn.Linear(flat, cfg.q_hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(cfg.q_hidden, cfg.n_categories + cfg.n_continuous),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.d_head(h), self.q_head(h)


class InfoGAN(AdversarialModel):
    """DCGAN-like nets; G input = [noise, one-hot categorical code, continuous codes]."""

    name = "infogan"
    Config = InfoGANConfig
    capabilities = Capabilities(codes=True, latent=True, traversal=True)
    discriminator_net: InfoDiscriminator

    def __init__(self, cfg: InfoGANConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        self.input_dim = cfg.z_dim + cfg.n_categories + cfg.n_continuous
        self.generator_net = dcgan_generator(self.input_dim, cfg.g_channels, meta)
        self.discriminator_net = InfoDiscriminator(cfg, meta)
        self.apply(dcgan_init)

    # ------------------------------------------------------------------------------ codes
    def sample_codes(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Noise (n, z_dim), categorical codes (n,) int64, continuous codes (n, n_continuous)."""
        cfg = self.cfg
        noise = randn((n, cfg.z_dim), generator, self.device)
        cat = torch.randint(0, cfg.n_categories, (n,), generator=generator).to(self.device)
        cont = (torch.rand((n, cfg.n_continuous), generator=generator) * 2 - 1).to(self.device)
        return noise, cat, cont

    def latent(self, noise: torch.Tensor, cat: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        """The generator input for these codes."""
        one_hot = F.one_hot(cat, self.cfg.n_categories).to(noise.dtype)
        return torch.cat([noise, one_hot, cont.to(noise.dtype)], dim=1)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` full generator inputs: noise, one-hot categorical code, continuous codes."""
        return self.latent(*self.sample_codes(n, generator))

    def info_terms(
        self, q: torch.Tensor, cat: torch.Tensor, cont: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The variational bound on I(c; G(z, c)), up to constants, as losses: cross-entropy for
        the categorical code and a unit-variance Gaussian NLL (half the squared error, summed
        over codes) for the continuous ones."""
        k = self.cfg.n_categories
        logits, mean = q[:, :k].float(), q[:, k:].float()
        ce = F.cross_entropy(logits, cat)
        nll = 0.5 * (mean - cont.float()).pow(2).sum(1).mean()
        return {
            "info": ce + nll,
            "info_cat": ce.detach(),
            "info_cont": nll.detach(),
            "q_accuracy": (logits.argmax(1) == cat).float().mean().detach(),
        }

    # ----------------------------------------------------------------------------- losses
    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        n, w = len(x), self.cfg.info_weight
        if phase == "d":
            noise, cat, cont = self.sample_codes(n)
            with torch.no_grad():
                fake = self.generator_net(self.latent(noise, cat, cont))
            real_logit, _ = self.discriminator_net(self.real_input(x))
            fake_logit, q = self.discriminator_net(fake)
            terms = d_loss_terms(real_logit, fake_logit)
            info = self.info_terms(q, cat, cont)
            terms["loss"] = terms["loss"] + w * info["info"]
            return {**terms, **{k: v.detach() for k, v in info.items()}}
        if phase == "g":
            noise, cat, cont = self.sample_codes(n)
            fake_logit, q = self.discriminator_net(
                self.generator_net(self.latent(noise, cat, cont))
            )
            adv = g_loss(fake_logit, self.cfg.gan_loss)
            info = self.info_terms(q, cat, cont)
            return {
                "loss": adv + w * info["info"],
                "adv": adv.detach(),
                "d_fake_for_g": torch.sigmoid(fake_logit).mean().detach(),
                **{k: v.detach() for k, v in info.items()},
            }
        raise ValueError(f"unknown phase {phase!r}; {self.name} has phases {self.phases}")

    # --------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_with_codes(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` uint8 images and the categorical code (int64, in [0, n_categories)) of each."""
        noise, cat, cont = self.sample_codes(n, generator)
        return self.decode_latent(self.latent(noise, cat, cont)), cat

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample_with_codes(n, generator)[0]

    @torch.no_grad()
    def traversal(self, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 images (n_categories * steps, C, H, W): row r has categorical code r, columns
        sweep the first continuous code from -1 to 1 (the others at 0). One noise vector is used
        for the whole grid, so rows differ only in their categorical code."""
        cfg = self.cfg
        k = cfg.n_categories
        noise = randn((1, cfg.z_dim), generator, self.device).expand(k * steps, -1)
        cat = torch.arange(k, device=self.device).repeat_interleave(steps)
        cont = torch.zeros(k * steps, cfg.n_continuous, device=self.device)
        if cfg.n_continuous > 0:
            cont[:, 0] = torch.linspace(-1, 1, steps, device=self.device).repeat(k)
        return self.decode_latent(self.latent(noise, cat, cont))
