"""CycleGAN (Zhu et al., 2017): unpaired translation between two of the data's domains.

Two generators G_AB, G_BA and two PatchGAN discriminators D_A, D_B; gen/models/translation.py
holds the nets and losses it shares with StarGAN, gen/conditions/domain.py what it trains on,
how it is sampled, drawn and scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gen.config import at_least, checked, require
from gen.data import DataMeta, to_unit
from gen.models.gan import dcgan_init
from gen.models.translation import (
    ConvGenerator,
    TranslationConfig,
    TranslationModel,
    TwoHeadDiscriminator,
    adversarial_loss,
    apply,
    cross_entropy,
    jitter,
    l1,
    patch_discriminator,
    realness,
)


@dataclass
class CycleGANConfig(TranslationConfig):
    domain_a: str = "handwritten"  # names in the data's domains (meta.extra["domains"])
    domain_b: str = "serif"
    # Lambda of the L1 cycle-consistency loss, both directions.
    cycle_weight: float = checked(10.0, at_least(0))
    # Identity loss |G_AB(b) - b| + |G_BA(a) - a|, weighted identity_weight * cycle_weight as in
    # the paper (0.5 there for photo <-> painting); 0 disables it.
    identity_weight: float = checked(0.5, at_least(0))

    def validate(self, section: str) -> None:
        require(
            self.domain_a != self.domain_b,
            f"{section}.domain_a and domain_b are both {self.domain_a!r}; name two domains",
        )


class CycleGAN(TranslationModel):
    """Two generators G_AB, G_BA and two PatchGAN discriminators D_A, D_B; G is trained to
    fool D and to come back: G_BA(G_AB(a)) ~ a and G_AB(G_BA(b)) ~ b."""

    name = "cyclegan"
    Config = CycleGANConfig

    def __init__(self, cfg: CycleGANConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        self.domain_ids = [
            self.domain_id("domain_a", cfg.domain_a),
            self.domain_id("domain_b", cfg.domain_b),
        ]
        c = meta.channels

        def g() -> nn.Module:
            return ConvGenerator(c, cfg.g_channels, cfg.res_blocks, self.g_down, 0, cfg.edit)

        def d() -> nn.Module:
            if self.uses_labels:  # a class head beside the patch scores
                return TwoHeadDiscriminator(c, cfg.d_channels, self.n_down, meta.n_classes, meta)
            return patch_discriminator(c, cfg.d_channels, self.n_down)

        self.generator_net = nn.ModuleDict({"ab": g(), "ba": g()})
        self.discriminator_net = nn.ModuleDict({"a": d(), "b": d()})
        self.apply(dcgan_init)

    def masks(self, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Which images of a mixed batch are of domain A and which of B (either may be none)."""
        domain = self.check_domains(y)
        a, b = self.domain_ids
        return domain == a, domain == b

    def patch_logits(self, key: str, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D_key's real/fake logits for `u` and, with the semantic term, its class logits
        (else an empty placeholder, never used)."""
        out = self.discriminator_net[key](u)  # convs only: an empty batch gives empty logits
        return out if isinstance(out, tuple) else (out, u.new_empty(0))

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        cfg, kind = self.cfg, self.cfg.gan_loss
        G = self.generator_net
        in_a, in_b = self.masks(y)
        u = to_unit(x, self.meta.levels)
        real_a, real_b = u[in_a], u[in_b]
        if self.uses_labels:
            labels = self.class_labels(y)
            label_a, label_b = labels[in_a], labels[in_b]
        if phase == "d":
            with torch.no_grad():
                fake_b, fake_a = apply(G["ab"], real_a), apply(G["ba"], real_b)
            noisy = self.real_input(x)
            da_real, cls_a = self.patch_logits("a", noisy[in_a])
            db_real, cls_b = self.patch_logits("b", noisy[in_b])
            da_fake, _ = self.patch_logits("a", fake_a)
            db_fake, _ = self.patch_logits("b", fake_b)
            d_a = adversarial_loss(da_real, True, kind) + adversarial_loss(da_fake, False, kind)
            d_b = adversarial_loss(db_real, True, kind) + adversarial_loss(db_fake, False, kind)
            terms = {
                "loss": d_a + d_b,
                "d_a": d_a.detach(),
                "d_b": d_b.detach(),
                "d_real": realness(torch.cat([da_real, db_real]), kind),
                "d_fake": realness(torch.cat([da_fake, db_fake]), kind),
            }
            if self.uses_labels:
                cls = cross_entropy(cls_a, label_a) + cross_entropy(cls_b, label_b)
                terms["loss"] = terms["loss"] + cfg.semantic_weight * cls
                terms["cls_real"] = cls.detach()
            return terms
        if phase == "g":
            fake_b, fake_a = apply(G["ab"], real_a), apply(G["ba"], real_b)
            db_fake, cls_fake_b = self.patch_logits("b", fake_b)
            da_fake, cls_fake_a = self.patch_logits("a", fake_a)
            adv = adversarial_loss(db_fake, True, kind) + adversarial_loss(da_fake, True, kind)
            noise = cfg.cycle_noise
            cycle = l1(apply(G["ba"], jitter(fake_b, noise)), real_a) + l1(
                apply(G["ab"], jitter(fake_a, noise)), real_b
            )
            loss = adv + cfg.cycle_weight * cycle
            terms = {"adv": adv.detach(), "cycle": cycle.detach()}
            if cfg.identity_weight > 0:
                identity = l1(apply(G["ab"], real_b), real_b) + l1(apply(G["ba"], real_a), real_a)
                loss = loss + cfg.identity_weight * cfg.cycle_weight * identity
                terms["identity"] = identity.detach()
            if self.uses_labels:
                # A translation should read as its source's digit in the target domain.
                semantic = cross_entropy(cls_fake_b, label_a) + cross_entropy(cls_fake_a, label_b)
                loss = loss + cfg.semantic_weight * semantic
                terms["semantic"] = semantic.detach()
            return {"loss": loss, **terms}
        raise self.unknown_phase(phase)

    def translate_unit(self, u: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Target B -> G_AB, target A -> G_BA (the source is the other domain)."""
        to_b = target == self.domain_ids[1]
        out = torch.empty_like(u)
        out[to_b] = apply(self.generator_net["ab"], u[to_b]).to(u.dtype)
        out[~to_b] = apply(self.generator_net["ba"], u[~to_b]).to(u.dtype)
        return out
