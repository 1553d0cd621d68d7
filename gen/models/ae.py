"""Autoencoders that generate: a plain autoencoder with a Gaussian fitted to its codes after
training, and the adversarial autoencoder (Makhzani et al., 2015), whose codes are pushed towards
a chosen prior by a discriminator on the latent space.

Both reuse the VAE's conv encoder / decoder and its decoder over the data's levels, trained by the
reconstruction negative log-likelihood. Neither has a likelihood: their bits/dim are "n/a".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from gen.capabilities import Capabilities
from gen.config import checked, positive, require
from gen.data import DataMeta, to_unit
from gen.models.base import GenerativeModel, randn
from gen.models.gan import d_loss_terms, g_loss
from gen.models.vae import (
    DecodesPixels,
    VAEConfig,
    conv_decoder,
    conv_encoder,
    pixel_log_likelihood,
    pixel_logits,
)

PRIORS = ("gaussian", "mixture", "uniform")
MIXTURE_COMPONENTS = 10  # Gaussians evenly spaced on a circle in the first two latent dims
MIXTURE_RADIUS = 3.0
MIXTURE_STD = 0.5


@dataclass
class AEConfig(VAEConfig):
    """The VAE's sizes and recipe: the autoencoders reuse its conv encoder and decoder."""


class ConvAutoencoder(DecodesPixels, GenerativeModel):
    """Deterministic conv encoder x -> z and decoder z -> p(x|z), a categorical per pixel
    (Bernoulli for 2 levels). Subclasses say where the codes to decode come from."""

    family = "latent-variable"

    def __init__(self, cfg: AEConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        self.enc, self.code_shape = conv_encoder(meta, cfg.hidden)
        flat = math.prod(self.code_shape)
        self.to_code = nn.Linear(flat, cfg.latent_dim)
        self.from_z = nn.Sequential(nn.Linear(cfg.latent_dim, flat), nn.ReLU())
        self.dec = conv_decoder(meta, cfg.hidden)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.enc.parameters(), *self.to_code.parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [*self.from_z.parameters(), *self.dec.parameters()]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (B, latent_dim) of uint8 images."""
        return self.to_code(self.enc(to_unit(x, self.meta.levels)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder logits: (B, C, levels, H, W), or (B, C, H, W) Bernoulli logits for 2 levels."""
        return pixel_logits(self.dec(self.from_z(z).view(-1, *self.code_shape)), self.meta)

    def reconstruction_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """-log p(x | z = encode(x)): per dimension as the loss, per image in nats for the log."""
        rec = -pixel_log_likelihood(self.decode(self.encode(x)), x).mean()
        return {"loss": rec / self.meta.dims, "rec_nats": rec}

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError


class AE(ConvAutoencoder):
    """A plain autoencoder made generative after the fact: `finish_training` fits a Gaussian
    (mean and full covariance) to the codes of the training images, and samples decode draws
    from it. The Gaussian lives in buffers, so it is saved with the weights."""

    name = "ae"
    Config = AEConfig
    capabilities = Capabilities(reconstructs=True, latent=True)

    def __init__(self, cfg: AEConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        d = cfg.latent_dim
        # N(0, I) until fitted; prior_scale @ prior_scale.T == prior_cov.
        self.register_buffer("prior_mean", torch.zeros(d))
        self.register_buffer("prior_cov", torch.eye(d))
        self.register_buffer("prior_scale", torch.eye(d))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": list(self.parameters())}

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if phase != "model":
            raise ValueError(f"unknown phase {phase!r}; {self.name} has phases {self.phases}")
        return self.reconstruction_terms(x)

    @torch.no_grad()
    def finish_training(self, train_x: torch.Tensor, batch_size: int = 500) -> None:
        """Fit the sampling Gaussian to the codes of `train_x`."""
        codes = torch.cat(
            [self.encode(train_x[i : i + batch_size]) for i in range(0, len(train_x), batch_size)]
        ).double()
        mean = codes.mean(0)
        if len(codes) > 1:
            cov = torch.cov(codes.T, correction=1).reshape(len(mean), len(mean))
        else:
            cov = torch.zeros(len(mean), len(mean), dtype=codes.dtype, device=codes.device)
        # A symmetric square root that exists even for a singular covariance (fewer images than
        # latent dimensions): cov = V diag(w) V^T, scale = V diag(sqrt(w)).
        w, v = torch.linalg.eigh(cov)
        scale = v * w.clamp(min=0).sqrt()
        self.prior_mean.copy_(mean)
        self.prior_cov.copy_(cov)
        self.prior_scale.copy_(scale)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` draws from the Gaussian fitted to the training codes."""
        eps = randn((n, self.cfg.latent_dim), generator, self.device)
        return self.prior_mean + eps @ self.prior_scale.T


@dataclass
class AAEConfig(AEConfig):
    # The distribution the codes are matched to; it only has to be samplable.
    # gaussian: N(0, I); mixture: 10 Gaussians on a circle in dims 1-2 (N(0, 1) in the others);
    # uniform: U(-1, 1) in every dim.
    prior: Literal["gaussian", "mixture", "uniform"] = "gaussian"
    # Width of the latent discriminator's two hidden layers.
    disc_hidden: int = checked(64, positive())
    latent_dim: int = 8
    beta1: float = 0.5  # as for GANs: momentum makes the adversarial phases oscillate

    def validate(self, section: str) -> None:
        require(
            self.prior != "mixture" or self.latent_dim >= 2,
            f"{section}.latent_dim={self.latent_dim} must be >= 2 for prior: mixture",
        )


def prior_draws(
    prior: str, n: int, dim: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`n` draws (on CPU, from `generator`) of one of the AAE's `PRIORS` in `dim` dimensions."""
    if prior == "uniform":
        return torch.rand((n, dim), generator=generator) * 2 - 1
    z = torch.randn((n, dim), generator=generator)
    if prior == "mixture":
        k = torch.randint(0, MIXTURE_COMPONENTS, (n,), generator=generator)
        angle = 2 * math.pi * k.double() / MIXTURE_COMPONENTS
        centre = torch.stack([angle.cos(), angle.sin()], dim=1).float() * MIXTURE_RADIUS
        z[:, :2] = centre + MIXTURE_STD * z[:, :2]
    elif prior != "gaussian":
        raise ValueError(f"unknown prior {prior!r}; choose one of: {', '.join(PRIORS)}")
    return z


class AAE(ConvAutoencoder):
    """Adversarial autoencoder: each step reconstructs ("ae": encoder + decoder), trains a
    discriminator to tell prior draws (real) from codes of data (fake) ("d"), then trains the
    encoder to fool it ("g"). The encoder is in two phases, each with its own optimiser, as in
    the paper's reconstruction and regularisation phases."""

    name = "aae"
    Config = AAEConfig
    capabilities = Capabilities(reconstructs=True, latent=True, prior=True)
    phases = ("ae", "d", "g")

    def __init__(self, cfg: AAEConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        h = cfg.disc_hidden
        self.disc = nn.Sequential(
            nn.Linear(cfg.latent_dim, h),
            nn.LeakyReLU(0.2),
            nn.Linear(h, h),
            nn.LeakyReLU(0.2),
            nn.Linear(h, 1),
            nn.Flatten(0),
        )

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "ae": self.encoder_parameters() + self.decoder_parameters(),
            "d": list(self.disc.parameters()),
            "g": self.encoder_parameters(),
        }

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` draws from the prior the codes are matched to."""
        return prior_draws(self.cfg.prior, n, self.cfg.latent_dim, generator).to(self.device)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.prior_sample(n, generator)

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if phase == "ae":
            return self.reconstruction_terms(x)
        if phase == "d":
            with torch.no_grad():
                codes = self.encode(x)
            return d_loss_terms(self.disc(self.prior_sample(len(x))), self.disc(codes))
        if phase == "g":
            logit = self.disc(self.encode(x))
            return {
                "loss": g_loss(logit, "non_saturating"),
                "d_codes": torch.sigmoid(logit).mean().detach(),
            }
        raise ValueError(f"unknown phase {phase!r}; {self.name} has phases {self.phases}")
