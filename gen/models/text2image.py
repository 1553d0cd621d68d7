"""Text-to-image GAN (Reed et al., 2016, "Generative adversarial text to image synthesis", the
seeds' Text2Image): a DCGAN whose generator and discriminator both see a learned embedding of the
caption.

The discriminator is matching-aware (GAN-CLS): besides real and fake images it is shown real
images with a caption that belongs to another image, scored as fake, so it must judge whether the
image fits the text and not only whether it looks real; the generator then has to obey the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gen.captions import PAD, check_vocab
from gen.conditions import caption
from gen.config import checked, positive
from gen.data import DataMeta, from_unit
from gen.models.base import randn
from gen.models.gan import (
    AdversarialModel,
    GANConfig,
    d_loss_terms,
    dcgan_discriminator_body,
    dcgan_generator,
    dcgan_init,
    dcgan_start,
    g_loss_terms,
)


@dataclass
class Text2ImageConfig(GANConfig):
    z_dim: int = 32
    g_channels: int = 32
    d_channels: int = 32
    embed_dim: int = checked(32, positive())  # word embedding size
    # Size of the caption embedding each of G and D computes.
    text_dim: int = checked(32, positive())


class TextEncoder(nn.Module):
    """Word ids (N, L), 0 = padding -> (N, text_dim): mean of the non-padding word embeddings,
    then a small MLP. Word order is ignored: a bag of words is all these captions need."""

    def __init__(self, vocab_size: int, embed_dim: int, text_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, text_dim), nn.LeakyReLU(0.2), nn.Linear(text_dim, text_dim)
        )

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        mask = (words != PAD).unsqueeze(-1).float()
        pooled = (self.embed(words) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.mlp(pooled)


class TextGenerator(nn.Module):
    """A DCGAN generator on [z, text embedding]."""

    def __init__(self, cfg: Text2ImageConfig, meta: DataMeta, vocab_size: int) -> None:
        super().__init__()
        self.text = TextEncoder(vocab_size, cfg.embed_dim, cfg.text_dim)
        self.net = dcgan_generator(cfg.z_dim + cfg.text_dim, cfg.g_channels, meta)

    def forward(self, z: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.text(words)], dim=1))


class TextDiscriminator(nn.Module):
    """A DCGAN body down to its start map (4x4 for 8x8); the text embedding, copied to every
    position, joins that map; a 1x1 conv mixes image and text features and a conv the size of
    the map gives the logit."""

    def __init__(self, cfg: Text2ImageConfig, meta: DataMeta, vocab_size: int) -> None:
        super().__init__()
        self.text = TextEncoder(vocab_size, cfg.embed_dim, cfg.text_dim)
        layers, top = dcgan_discriminator_body(cfg.d_channels, meta)
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Conv2d(top + cfg.text_dim, top, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(top, 1, dcgan_start(meta)[1], 1, 0),
            nn.Flatten(0),
        )

    def forward(self, x: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        t = self.text(words)[:, :, None, None].expand(-1, -1, *h.shape[2:])
        return self.head(torch.cat([h, t], dim=1))


def mismatched(words: torch.Tensor) -> torch.Tensor:
    """Each image's 'wrong' caption: the next image's caption in the batch (rolled by one)."""
    return words.roll(1, dims=0)


def matching_aware_d_loss(
    real_logit: torch.Tensor, wrong_logit: torch.Tensor, fake_logit: torch.Tensor
) -> dict[str, torch.Tensor]:
    """GAN-CLS: -log D(real, its caption) - 0.5 [log(1 - D(real, wrong caption)) +
    log(1 - D(fake, its caption))]. The mean over [wrong; fake] (same sizes) is that average."""
    terms = d_loss_terms(real_logit, torch.cat([wrong_logit, fake_logit]))
    terms["d_fake"] = torch.sigmoid(fake_logit).mean().detach()
    terms["d_wrong"] = torch.sigmoid(wrong_logit).mean().detach()
    return terms


class Text2Image(AdversarialModel):
    """GAN-CLS on word-id captions: `sample(n, generator, condition)` draws one image per
    caption."""

    name = "text2image"
    family = "conditional"
    Config = Text2ImageConfig
    condition = caption.KIND
    generator_net: TextGenerator
    discriminator_net: TextDiscriminator

    def __init__(self, cfg: Text2ImageConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        self.vocab_size = len(check_vocab(meta.extra.get("vocab")))
        self.generator_net = TextGenerator(cfg, meta, self.vocab_size)
        self.discriminator_net = TextDiscriminator(cfg, meta, self.vocab_size)
        self.apply(dcgan_init)

    def _words(self, words: Any, n: int | None = None) -> torch.Tensor:
        if words is None:
            raise ValueError(
                f"{self.name} needs captions to sample: pass condition = word ids (n, L) int64"
            )
        words = torch.as_tensor(words)
        if words.dim() != 2 or (n is not None and len(words) != n):
            raise ValueError(
                f"{self.name}: condition must be word ids of shape ({n}, L), got "
                f"{tuple(words.shape)}"
            )
        return words.long().to(self.device)

    def generate(
        self, words: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One fake in [-1, 1] per caption, differentiable with respect to the generator."""
        return self.generator_net(self.sample_latent(len(words), generator), words)

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        words = self._words(y, len(x))
        d = self.discriminator_net
        if phase == "d":
            with torch.no_grad():
                fake = self.generate(words)
            real = self.real_input(x)
            return matching_aware_d_loss(d(real, words), d(real, mismatched(words)), d(fake, words))
        if phase == "g":
            return g_loss_terms(d(self.generate(words), words), self.cfg.gan_loss)
        raise ValueError(f"unknown phase {phase!r}; {self.name} has phases {self.phases}")

    @torch.no_grad()
    def decode_latent(self, z: torch.Tensor, words: Any = None) -> torch.Tensor:
        """Generator inputs z with their captions -> uint8 images in the data's levels."""
        return from_unit(self.generator_net(z, self._words(words, len(z))), self.meta.levels)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, condition: Any = None
    ) -> torch.Tensor:
        words = self._words(condition, n)
        if words.numel() and (int(words.min()) < 0 or int(words.max()) >= self.vocab_size):
            raise ValueError(f"{self.name}: word ids must be in [0, {self.vocab_size})")
        return self.decode_latent(randn((n, self.cfg.z_dim), generator, self.device), words)
