"""StarGAN (Choi et al., 2018): unpaired translation among all of the data's domains with one
generator.

One generator G(x, c) conditioned on the target domain and a discriminator that also
classifies the domain; gen/models/translation.py holds the nets and losses it shares with
CycleGAN, gen/conditions/domain.py what it trains on, how it is sampled, drawn and scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gen.config import at_least, checked
from gen.data import DataMeta, to_unit
from gen.models.gan import dcgan_init
from gen.models.translation import (
    ConvGenerator,
    TranslationConfig,
    TranslationModel,
    TwoHeadDiscriminator,
    adversarial_loss,
    cross_entropy,
    jitter,
    l1,
    realness,
)


@dataclass
class StarGANConfig(TranslationConfig):
    # lambda_cls: domain classification, of reals in D and fakes in G.
    cls_weight: float = checked(1.0, at_least(0))
    # lambda_rec: L1 of G(G(x, target), source) against x.
    rec_weight: float = checked(10.0, at_least(0))


class StarGAN(TranslationModel):
    """One generator G(x, c) for every target domain c (a one-hot map beside the image), and a
    discriminator that also classifies the domain; a reconstruction G(G(x, c), c_x) ~ x keeps
    what the translation should not change. With the semantic term D's class head also reads
    the digit (k domain logits, then the data's class logits)."""

    name = "stargan"
    Config = StarGANConfig
    discriminator_net: TwoHeadDiscriminator

    def __init__(self, cfg: StarGANConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        self.domain_ids = list(range(len(self.domain_names)))
        k, c = len(self.domain_ids), meta.channels
        self.generator_net = ConvGenerator(
            c, cfg.g_channels, cfg.res_blocks, self.g_down, k, cfg.edit
        )
        heads = k + (meta.n_classes if self.uses_labels else 0)
        self.discriminator_net = TwoHeadDiscriminator(c, cfg.d_channels, self.n_down, heads, meta)
        self.apply(dcgan_init)

    def judge(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """D's real/fake logits, domain logits and (with the semantic term) digit logits."""
        adv, cls = self.discriminator_net(u)
        k = len(self.domain_ids)
        return adv, cls[:, :k], cls[:, k:]

    def generate(self, u: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """G(x, target): images in [-1, 1] with the target's one-hot broadcast over the image."""
        one_hot = F.one_hot(target, len(self.domain_ids)).to(u.dtype)
        maps = one_hot[:, :, None, None].expand(-1, -1, *u.shape[2:])
        return self.generator_net(u, maps)

    def translate_unit(self, u: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.generate(u, target)

    def random_targets(self, source: torch.Tensor) -> torch.Tensor:
        """A uniformly drawn other domain for each image."""
        k = len(self.domain_ids)
        shift = torch.randint(1, k, source.shape, device=source.device)
        return (source + shift) % k

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        cfg, kind = self.cfg, self.cfg.gan_loss
        source = self.check_domains(y)
        real = to_unit(x, self.meta.levels)
        target = self.random_targets(source)
        labels = self.class_labels(y) if self.uses_labels else None
        if phase == "d":
            with torch.no_grad():
                fake = self.generate(real, target)
            real_adv, real_cls, real_digit = self.judge(self.real_input(x))
            fake_adv, _, _ = self.judge(fake)
            adv = adversarial_loss(real_adv, True, kind) + adversarial_loss(fake_adv, False, kind)
            cls = F.cross_entropy(real_cls.float(), source)
            terms = {
                "loss": adv + cfg.cls_weight * cls,
                "adv": adv.detach(),
                "cls_real": cls.detach(),
                "cls_accuracy": (real_cls.argmax(1) == source).float().mean(),
                "d_real": realness(real_adv, kind),
                "d_fake": realness(fake_adv, kind),
            }
            if labels is not None:
                digit = cross_entropy(real_digit, labels)
                terms["loss"] = terms["loss"] + cfg.semantic_weight * digit
                terms["digit_real"] = digit.detach()
            return terms
        if phase == "g":
            fake = self.generate(real, target)
            fake_adv, fake_cls, fake_digit = self.judge(fake)
            adv = adversarial_loss(fake_adv, True, kind)
            cls = F.cross_entropy(fake_cls.float(), target)
            rec = l1(self.generate(jitter(fake, cfg.cycle_noise), source), real)
            loss = adv + cfg.cls_weight * cls + cfg.rec_weight * rec
            terms = {
                "adv": adv.detach(),
                "cls_fake": cls.detach(),
                "rec": rec.detach(),
                "cls_accuracy_fake": (fake_cls.argmax(1) == target).float().mean(),
            }
            if labels is not None:  # the translation should read as its source's digit
                semantic = cross_entropy(fake_digit, labels)
                loss = loss + cfg.semantic_weight * semantic
                terms["semantic"] = semantic.detach()
            return {"loss": loss, **terms}
        raise self.unknown_phase(phase)
