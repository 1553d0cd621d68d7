"""A mixture of K per-pixel categorical models, trained by gradient descent on its exact
likelihood: p(x) = sum_k pi_k prod_i Cat(x_i; theta_ki).

The smallest model that is more than genbench's `baseline` (one component, fitted by counting):
each component learns a template of its own (a digit's shape), so samples look like digits.
Everything genbench needs is declared on the class, as the built-in models do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gen.capabilities import Capabilities
from gen.config import checked, positive
from gen.data import DataMeta
from gen.models.base import GenerativeModel, ModelConfig


@dataclass
class PixelMixtureConfig(ModelConfig):
    """Its `pixel_mixture:` section in params.yaml (the fields of ModelConfig, and these)."""

    steps: int = 500
    lr: float = 0.05  # logits of a mixture move slowly at Adam's usual 1e-3
    components: int = checked(10, positive())


class PixelMixture(GenerativeModel):
    """K components, each an independent categorical per pixel and channel."""

    name = "pixel_mixture"  # the entry point's name: checkpoints rebuild the model by it
    family = "latent-variable"  # a discrete latent: which component drew the image
    capabilities = Capabilities(likelihood="exact")  # log_prob: exact bits/dim
    Config = PixelMixtureConfig

    def __init__(self, cfg: PixelMixtureConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        k = cfg.components
        self.mix_logits = nn.Parameter(torch.zeros(k))
        # Small random logits break the symmetry between components (genbench seeds this).
        self.pixel_logits = nn.Parameter(0.1 * torch.randn(k, meta.dims, meta.levels))

    def _joint(self, x: torch.Tensor) -> torch.Tensor:
        """log pi_k + log p(x | k) for uint8 images x (n, C, H, W): (n, K)."""
        pixels = x.flatten(1).long().to(self.pixel_logits.device)  # (n, D)
        logp = self.pixel_logits.log_softmax(-1)  # (K, D, L)
        picked = logp[:, torch.arange(pixels.shape[1], device=pixels.device), pixels]  # (K, n, D)
        return self.mix_logits.log_softmax(0) + picked.sum(-1).T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats per image: (n,)."""
        return self._joint(x).logsumexp(1)

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return {"loss": -self.log_prob(x).mean() / self.meta.dims}  # nats per dimension

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, condition: Any = None
    ) -> torch.Tensor:
        """A component per image, then every pixel from it; drawn on the CPU from `generator`,
        so a seed gives the same images on any device."""
        mix = self.mix_logits.softmax(0).float().cpu()
        k = torch.multinomial(mix, n, replacement=True, generator=generator)  # (n,)
        probs = self.pixel_logits.softmax(-1).float().cpu()[k]  # (n, D, L)
        flat = torch.multinomial(probs.reshape(-1, self.meta.levels), 1, generator=generator)
        images = flat.reshape(n, *self.meta.shape).to(torch.uint8)
        return images.to(self.device)
