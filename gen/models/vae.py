"""Variational autoencoder (Kingma & Welling, 2014) with a decoder over the data's levels.

The conv encoder / decoder and the per-pixel likelihood here are shared with the plain and the
adversarial autoencoders (gen/models/ae.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gen.capabilities import Capabilities
from gen.config import checked, positive
from gen.data import DataMeta, to_unit
from gen.models.base import GenerativeModel, ModelConfig, randn
from gen.nn import categorical_log_prob, sample_categorical


@dataclass
class VAEConfig(ModelConfig):
    """The conv encoder / decoder's sizes, which the autoencoders (ae.py) share."""

    latent_dim: int = checked(16, positive())
    # Feature maps of the first conv layer; doubled at each downsampling.
    hidden: int = checked(32, positive())


def _downsamplings(size: int) -> int:
    """How many stride-2 halvings take `size` down to at most 4 while staying whole."""
    n = 0
    while size > 4 and size % 2 == 0:
        size //= 2
        n += 1
    return n


# ------------------------------------------------------------- shared by the autoencoders
def conv_encoder(meta: DataMeta, hidden: int) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """Conv layers halving the image down to at most 4x4, flattened; also the shape of that map."""
    c, h, w = meta.shape
    n = min(_downsamplings(h), _downsamplings(w))
    ch = [hidden * 2**i for i in range(n + 1)]
    enc: list[nn.Module] = [nn.Conv2d(c, ch[0], 3, padding=1), nn.ReLU()]
    for a, b in zip(ch[:-1], ch[1:], strict=True):
        enc += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
    return nn.Sequential(*enc, nn.Flatten()), (ch[-1], h // 2**n, w // 2**n)


def conv_decoder(meta: DataMeta, hidden: int) -> nn.Sequential:
    """The encoder's mirror: from its last feature map to pixel logits (see `pixel_logits`)."""
    n = min(_downsamplings(meta.height), _downsamplings(meta.width))
    ch = [hidden * 2**i for i in range(n + 1)]
    dec: list[nn.Module] = []
    for a, b in zip(ch[::-1][:-1], ch[::-1][1:], strict=True):
        dec += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
    dec += [nn.Conv2d(ch[0], ch[0], 3, padding=1), nn.ReLU()]
    dec += [nn.Conv2d(ch[0], meta.channels * outputs_per_pixel(meta.levels), 1)]
    return nn.Sequential(*dec)


def outputs_per_pixel(levels: int) -> int:
    """One Bernoulli logit for binarised data, else one logit per level."""
    return 1 if levels == 2 else levels


def pixel_logits(h: torch.Tensor, meta: DataMeta) -> torch.Tensor:
    """Decoder output -> (B, C, levels, H, W) logits, or (B, C, H, W) Bernoulli logits."""
    if outputs_per_pixel(meta.levels) == 1:
        return h
    b, _, hh, ww = h.shape
    return h.view(b, meta.channels, meta.levels, hh, ww)


def pixel_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | logits) per image, in nats, for either kind of `pixel_logits`."""
    if logits.dim() == 4:
        bce = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
        return -bce.flatten(1).sum(1)
    return categorical_log_prob(logits, x)


def pixel_mode(logits: torch.Tensor) -> torch.Tensor:
    """The most likely level of every pixel, as uint8 images: the decoder's sharpest picture."""
    if logits.dim() == 4:
        return (logits > 0).to(torch.uint8)
    return logits.argmax(2).to(torch.uint8)


def pixel_sample(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw of every pixel from its distribution, as uint8 images."""
    if logits.dim() == 4:
        probs = torch.sigmoid(logits.float()).cpu()
        return torch.bernoulli(probs, generator=generator).to(torch.uint8).to(logits.device)
    b, c, lv, h, w = logits.shape
    rows = logits.permute(0, 1, 3, 4, 2).reshape(-1, lv)
    return sample_categorical(rows, generator).view(b, c, h, w).to(torch.uint8)


class DecodesPixels:
    """Shared by the autoencoders: decoding codes into images, given `encode`, `decode` and
    `sample_latent`."""

    @torch.no_grad()
    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """The most likely image for each code (no pixel noise, unlike `sample`)."""
        return pixel_mode(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_latent(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws from p(x) = p(z) p(x|z): codes from `sample_latent`, then every pixel."""
        return pixel_sample(self.decode(self.sample_latent(n, generator)), generator)


class VAE(DecodesPixels, GenerativeModel):
    """q(z|x) Gaussian, p(z) = N(0, I), p(x|z) a categorical per pixel (Bernoulli for 2 levels)."""

    name = "vae"
    family = "latent-variable"
    capabilities = Capabilities(likelihood="bound", reconstructs=True, latent=True)
    Config = VAEConfig

    def __init__(self, cfg: VAEConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        self.out_per_pixel = outputs_per_pixel(meta.levels)
        self.enc, self.code_shape = conv_encoder(meta, cfg.hidden)
        flat = math.prod(self.code_shape)
        self.to_stats = nn.Linear(flat, 2 * cfg.latent_dim)
        self.from_z = nn.Sequential(nn.Linear(cfg.latent_dim, flat), nn.ReLU())
        self.dec = conv_decoder(meta, cfg.hidden)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x)."""
        mu, logvar = self.to_stats(self.enc(to_unit(x, self.meta.levels))).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic codes: the posterior mean."""
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder logits: (B, C, levels, H, W), or (B, C, H, W) Bernoulli logits for 2 levels."""
        return pixel_logits(self.dec(self.from_z(z).view(-1, *self.code_shape)), self.meta)

    def log_px_given_z(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return pixel_log_likelihood(logits, x)

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Evidence lower bound on log p(x) per image, in nats (one reparameterised sample)."""
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = self.log_px_given_z(self.decode(z), x)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return rec - kl

    @torch.no_grad()
    def iwae_bound(self, x: torch.Tensor, k: int, chunk: int = 64) -> torch.Tensor:
        """Importance-weighted bound (Burda et al., 2016), `k` samples: tighter than the ELBO."""
        mu, logvar = self.posterior(x)
        std = (0.5 * logvar).exp()
        log_w = []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            eps = torch.randn(m, *mu.shape, device=mu.device)
            z = mu + eps * std  # (m, B, D)
            flat = z.reshape(-1, z.shape[-1])
            xs = x.unsqueeze(0).expand(m, *x.shape).reshape(-1, *x.shape[1:])
            log_px = self.log_px_given_z(self.decode(flat), xs).view(m, -1)
            log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
            log_qz = -0.5 * (eps.pow(2) + math.log(2 * math.pi) + logvar).sum(-1)
            log_w.append(log_px + log_pz - log_qz)
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = self.log_px_given_z(self.decode(z), x).mean()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
        dims = self.meta.dims
        return {"loss": (kl - rec) / dims, "rec_nats": -rec, "kl_nats": kl}

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` draws from the prior N(0, I)."""
        return randn((n, self.cfg.latent_dim), generator, self.device)
