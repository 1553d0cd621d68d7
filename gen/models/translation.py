"""What CycleGAN (gen/models/cyclegan.py) and StarGAN (gen/models/stargan.py) share: the
config fields, the conv nets (a residual encoder-decoder generator, a PatchGAN-like
discriminator), the adversarial loss, the semantic term's class labels and the uint8 plumbing.

Both train on images of several domains mixed in each batch (y = each image's domain id, in the
data's numbering, `meta.extra["domains"]`) and are sampled by translating given source images
to given target domains: gen/conditions/domain.py says what they train on, how they are sampled,
drawn and scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gen.conditions import domain
from gen.config import at_least, checked, positive, require, require_data
from gen.data import DataMeta, from_unit, to_unit
from gen.models.base import GenerativeModel, ModelConfig
from gen.models.gan import AdversarialModel

GAN_LOSSES = ("least_squares", "non_saturating")


@dataclass
class TranslationConfig(ModelConfig):
    """What both translation models share: the nets' sizes, the adversarial loss and k."""

    steps: int = 2000
    lr: float = 2e-4
    beta1: float = 0.5
    # "least_squares" (LSGAN, CycleGAN's choice): D regresses real -> 1, fake -> 0 and G pushes
    # its fakes to 1; "non_saturating": the cross-entropy GAN with G maximising log D(G(x)).
    gan_loss: Literal["least_squares", "non_saturating"] = "least_squares"
    d_steps: int = checked(1, positive())  # k: discriminator steps per generator step
    # Generator feature maps at full resolution; doubled per downsampling.
    g_channels: int = checked(32, positive())
    # Discriminator feature maps at full resolution; doubled likewise.
    d_channels: int = checked(32, positive())
    # Residual blocks of the generator, at its lowest resolution.
    res_blocks: int = checked(2, at_least(0))
    # Stride-2 halvings in both nets (fewer on small images).
    max_downsamplings: int = checked(2, at_least(0))
    # The generator's own, if not max_downsamplings: 0 keeps its edits local (its receptive
    # field is then 5 + 4 * res_blocks pixels) while D still judges the whole image.
    g_downsamplings: int | None = checked(None, at_least(0, note="or null"))
    # G edits its input, tanh(atanh(x) + f(x)), instead of drawing the image anew (see
    # ConvGenerator): on digits it keeps the digit a translation shows.
    edit: bool = True
    # Std of Gaussian noise (in [-1, 1] units; one level of 17-level digits is 0.125) added to
    # a translation before it is translated back in the cycle / reconstruction loss. Without it
    # G can hide the source in faint pixels ("CycleGAN, a master of steganography", Chu et al.,
    # 2017) and come back from a relabelled digit; noise makes the way back need what is seen.
    cycle_noise: float = checked(0.0, at_least(0))
    # Semantic consistency (CyCADA, Hoffman et al., 2018): D also classifies the digits of real
    # images, and G is penalised when D reads another digit in a translation than its source's
    # label. The cycle cannot see a consistent relabelling (A's 4 -> B's 1 -> A's 4); this term
    # can, at the price of using the training images' class labels (the data's own, never the
    # evaluation classifier). 0 is the papers' label-free translation.
    semantic_weight: float = checked(0.0, at_least(0))


# ------------------------------------------------------------------------------------- nets
def downsamplings(height: int, width: int, most: int) -> int:
    """Stride-2 halvings that keep both sides whole and at least 4 (8x8 -> 1, 32x32 -> 2)."""
    n, h, w = 0, height, width
    while n < most and h % 2 == 0 and w % 2 == 0 and min(h, w) >= 8:
        h, w, n = h // 2, w // 2, n + 1
    return n


class ResidualBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), at constant size (CycleGAN's and StarGAN's block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConvGenerator(nn.Module):
    """Encoder (stride-2 convs) / residual blocks / decoder (transposed convs) with instance
    norm: images in [-1, 1] (plus `cond_channels` condition maps) -> images of the same size.

    With `edit=True` the net predicts a change to its input before the tanh,
    tanh(atanh(x) + f(x)), so it starts as (nearly) the identity and learns the smallest edit
    that fools D. Without it (the papers' generators) an unpaired translation of 8x8 digits is
    free to relabel them (a 4 -> a 1, one domain's 1 -> another's 7: the cycle is consistent),
    and does on digits.
    """

    def __init__(
        self,
        channels: int,
        width: int,
        res_blocks: int,
        n_down: int,
        cond_channels: int = 0,
        edit: bool = True,
    ) -> None:
        super().__init__()
        self.edit = edit

        def norm_relu(c: int) -> list[nn.Module]:
            return [nn.InstanceNorm2d(c, affine=True), nn.ReLU()]

        c = width
        layers: list[nn.Module] = [
            nn.Conv2d(channels + cond_channels, c, 3, padding=1, bias=False),
            *norm_relu(c),
        ]
        for _ in range(n_down):
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), *norm_relu(2 * c)]
            c *= 2
        layers += [ResidualBlock(c) for _ in range(res_blocks)]
        for _ in range(n_down):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), *norm_relu(c // 2)]
            c //= 2
        layers += [nn.Conv2d(c, channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, u: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.net(u if cond is None else torch.cat([u, cond], dim=1))
        if self.edit:
            # 0.995: atanh stays finite at +-1; the 0.5% shrink is below half a level of 8-bit data.
            h = h + torch.atanh(0.995 * u.float()).to(h.dtype)
        return torch.tanh(h)


def patch_discriminator_body(
    in_channels: int, channels: int, n_down: int
) -> tuple[nn.Sequential, int]:
    """Convs with leaky ReLUs down to a map whose every cell sees a patch of the image: the
    layers and that map's channels. A head on top scores each patch (PatchGAN)."""
    c = channels
    layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1), nn.LeakyReLU(0.2)]
    for _ in range(n_down):
        layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2)]
        c *= 2
    return nn.Sequential(*layers), c


def patch_discriminator(in_channels: int, channels: int, n_down: int) -> nn.Sequential:
    """A PatchGAN: one real/fake logit per patch, (N, 1, h, w)."""
    body, top = patch_discriminator_body(in_channels, channels, n_down)
    return nn.Sequential(*body, nn.Conv2d(top, 1, 3, padding=1))


class TwoHeadDiscriminator(nn.Module):
    """A shared conv body with two heads: real/fake per patch, and a class of the whole image
    (StarGAN's domain, or the digit for CycleGAN's semantic term)."""

    def __init__(self, channels: int, width: int, n_down: int, n_classes: int, meta: DataMeta):
        super().__init__()
        self.body, top = patch_discriminator_body(channels, width, n_down)
        h, w = meta.height // 2**n_down, meta.width // 2**n_down
        self.adv_head = nn.Conv2d(top, 1, 3, padding=1)
        self.cls_head = nn.Sequential(nn.Conv2d(top, n_classes, (h, w)), nn.Flatten())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.adv_head(h), self.cls_head(h)


# ------------------------------------------------------------------------------------- losses
def mean_or_zero(t: torch.Tensor) -> torch.Tensor:
    """The mean, or 0 (still in the graph) for an empty tensor: a batch may lack a domain."""
    return t.sum() / max(t.numel(), 1)


def adversarial_loss(logit: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    """Mean loss of pushing D's logits toward "real" (`real=True`) or "fake"; 0 when empty.

    D minimises adversarial_loss(D(x), True) + adversarial_loss(D(G(x')), False); G minimises
    adversarial_loss(D(G(x')), True). `kind` "least_squares" is LSGAN's (a - 1)^2 / a^2;
    "non_saturating" is -log D / -log(1 - D), as `gen.models.gan.d_loss_terms` / `g_loss`.
    """
    logit = logit.float()
    if kind == "least_squares":
        per = (logit - 1).pow(2) if real else logit.pow(2)
    else:
        per = F.softplus(-logit) if real else F.softplus(logit)
    return mean_or_zero(per)


def apply(net: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """`net(u)` for an image-to-image net; an empty batch passes through (instance norm cannot
    take one), so a batch that lacks a domain still has every term, at 0."""
    return net(u) if len(u) else u


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, or 0 for an empty batch (a batch may lack a domain)."""
    return mean_or_zero(F.cross_entropy(logits.float(), labels, reduction="none"))


def jitter(u: torch.Tensor, std: float) -> torch.Tensor:
    """`u` plus Gaussian noise of `std`, kept in [-1, 1] (no-op at 0): what the cycle's way
    back sees."""
    return (u + std * torch.randn_like(u)).clamp(-1, 1) if std > 0 else u


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return mean_or_zero((a.float() - b.float()).abs())


def realness(logit: torch.Tensor, kind: str) -> torch.Tensor:
    """How real D finds these images on average, in [0, 1] for the logged d_real / d_fake."""
    logit = logit.detach().float()
    per = logit.clamp(0, 1) if kind == "least_squares" else torch.sigmoid(logit)
    return mean_or_zero(per)


# ------------------------------------------------------------------------------ shared base
class TranslationModel(GenerativeModel):
    """Shared mechanics: phases ("d",)*k + ("g",), D/G parameter groups, domain checks, and
    uint8 `translate` / `reconstruct_cycle` / `sample` around a float `translate_unit`."""

    family = "translation"
    condition = domain.KIND
    Config = TranslationConfig
    generator_net: nn.Module
    discriminator_net: nn.Module
    domain_ids: list[int]  # the data's domain ids this model translates between

    def __init__(self, cfg: TranslationConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        require_data(
            "domains" in meta.extra,
            f"{self.name} translates between image domains but data set '{meta.name}' has "
            "none; set data.domains to typeset, cyclegan_folder, domain_folders or attribute_csv",
            "the data has no domains",
        )
        self.domain_names = list(meta.extra["domains"])
        require_data(
            len(self.domain_names) >= 2,
            f"{self.name} needs at least 2 domains; data set '{meta.name}' has "
            f"{len(self.domain_names)}: {', '.join(self.domain_names)}",
            "the data has fewer than 2 domains",
        )
        self.phases = ("d",) * cfg.d_steps + ("g",)
        self.n_down = downsamplings(meta.height, meta.width, cfg.max_downsamplings)
        g_most = cfg.max_downsamplings if cfg.g_downsamplings is None else cfg.g_downsamplings
        self.g_down = downsamplings(meta.height, meta.width, g_most)

    def domain_id(self, key: str, name: str) -> int:
        """The data's id of domain `name`, or a ConfigError naming `key` and the known names."""
        require(
            name in self.domain_names,
            f"{self.name}.{key}={name!r} is not a domain of data set '{self.meta.name}'; "
            f"known: {', '.join(self.domain_names)}",
        )
        return self.domain_names.index(name)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "d": list(self.discriminator_net.parameters()),
            "g": list(self.generator_net.parameters()),
        }

    # Real images for D get one level's width of uniform noise, exactly as in the GANs.
    real_input = AdversarialModel.real_input

    @property
    def uses_labels(self) -> bool:
        """Whether training needs each image's class label beside its domain id (then y is
        (n, 2): domain id, label; see gen/conditions/domain.py)."""
        return self.cfg.semantic_weight > 0

    def class_labels(self, y: torch.Tensor | None) -> torch.Tensor:
        """The batch's class labels, which the semantic term needs beside the domain ids."""
        if y is None or y.dim() != 2:
            raise ValueError(
                f"{self.name} with semantic_weight > 0 needs y = (domain id, class label) per "
                "image (see gen/conditions/domain.py)"
            )
        return y[:, 1]

    def check_domains(self, y: torch.Tensor | None) -> torch.Tensor:
        """The batch's domain ids, checked to be ones this model translates between."""
        if y is not None and y.dim() == 2:
            y = y[:, 0]
        if y is None:
            raise ValueError(
                f"{self.name} trains on images of several domains and needs their domain ids y "
                "(see gen/conditions/domain.py)"
            )
        known = torch.tensor(self.domain_ids, device=y.device)
        if not torch.isin(y, known).all():
            bad = sorted(set(y.tolist()) - set(self.domain_ids))
            raise ValueError(f"{self.name}: domain ids {bad} are not among {self.domain_ids}")
        return y

    def unknown_phase(self, phase: str) -> ValueError:
        return ValueError(f"unknown phase {phase!r}; {self.name} has phases {self.phases}")

    # --------------------------------------------------------------------------- translating
    def translate_unit(self, u: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> their translations to domain ids `target`, differentiable."""
        raise NotImplementedError

    @torch.no_grad()
    def translate(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """uint8 images (n, C, H, W) -> uint8 images in domains `target` (int64 (n,) ids)."""
        target = torch.as_tensor(target, dtype=torch.long, device=x.device)
        if target.dim() == 0:
            target = target.expand(len(x))
        if target.shape != (len(x),):
            raise ValueError(f"{len(x)} images but target ids of shape {tuple(target.shape)}")
        bad = sorted(set(target.tolist()) - set(self.domain_ids))
        if bad:
            raise ValueError(
                f"{self.name} cannot translate to domain ids {bad}; it has "
                f"{self.domain_ids} ({', '.join(self.names_of(self.domain_ids))})"
            )
        return from_unit(
            self.translate_unit(to_unit(x, self.meta.levels), target), self.meta.levels
        )

    def names_of(self, ids: list[int]) -> list[str]:
        return [self.domain_names[i] for i in ids]

    @torch.no_grad()
    def reconstruct_cycle(
        self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """uint8 images of domains `source`, translated to `target` and back: the round trip
        the cycle loss trains, through the quantised translation a user gets."""
        return self.translate(self.translate(x, target), source)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, condition: Any = None
    ) -> torch.Tensor:
        """Translations of `condition = (source images, target domain ids)`, n of each; the
        translation is deterministic, so `generator` is not used."""
        if condition is None:
            raise ValueError(
                f"{self.name} translates images: sample needs condition=(source uint8 images, "
                "target domain ids), e.g. from gen/conditions/domain.py"
            )
        x, target = condition
        if len(x) != n:
            raise ValueError(f"asked for {n} samples but the condition has {len(x)} images")
        return self.translate(x, target)
