"""GAN family: the original fully connected GAN (Goodfellow et al., 2014) and DCGAN (Radford et
al., 2016), with the seeds' two generator losses and k discriminator steps per generator step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gen.capabilities import Capabilities
from gen.config import ConfigError, Rule, checked, in_half_open, positive
from gen.data import DataMeta, from_unit, to_unit
from gen.models.base import GenerativeModel, ModelConfig, randn
from gen.nn import halvings

_SIZES = Rule(  # layer widths
    lambda sizes: len(sizes) > 0 and all(s > 0 for s in sizes),
    "{section}.{key}={value} must be a non-empty list of sizes > 0",
)


@dataclass
class AdversarialConfig(ModelConfig):
    """What every GAN here shares: the noise size, the generator loss and k."""

    steps: int = 2000
    lr: float = 2e-4
    beta1: float = 0.5
    z_dim: int = checked(32, positive())
    # "minimax": G minimises log(1 - D(G(z))), the original objective, whose gradient vanishes
    # when D wins early; "non_saturating": G maximises log D(G(z)) instead (the seeds' flip).
    gan_loss: Literal["non_saturating", "minimax"] = "non_saturating"
    d_steps: int = checked(1, positive())  # k: discriminator steps per generator step
    # "fresh": every D step and the G step draw their own noise (the seeds' algorithm);
    # "shared": the G step reuses the last D step's fakes, made once with their graph, as the
    # PyTorch DCGAN example and PyTorch-GAN do: one generator forward per step fewer.
    fakes: Literal["fresh", "shared"] = "fresh"


@dataclass
class GANConfig(AdversarialConfig):
    """DCGAN: conv nets whose widths start from these channel counts."""

    g_channels: int = checked(64, positive())
    d_channels: int = checked(64, positive())


@dataclass
class MLPGANConfig(AdversarialConfig):
    """The original GAN: fully connected nets with these hidden layer widths."""

    steps: int = 3000
    gan_loss: Literal["non_saturating", "minimax"] = "minimax"  # the paper's objective
    g_hidden: tuple[int, ...] = checked((256, 512), _SIZES)
    d_hidden: tuple[int, ...] = checked((512, 256), _SIZES)
    # In the discriminator, as in Goodfellow et al.
    dropout: float = checked(0.3, in_half_open(0, 1))
    # BatchNorm after each hidden layer of G: not in the 2014 paper, but without it a fully
    # connected G collapses onto a few modes of the digits (FID 600-2000 vs ~25 with it).
    g_batchnorm: bool = True


def d_loss_terms(real_logit: torch.Tensor, fake_logit: torch.Tensor) -> dict[str, torch.Tensor]:
    """The discriminator's loss -log D(x) - log(1 - D(G(z))), and how it scores each side."""
    loss = F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
    return {
        "loss": loss,
        "d_real": torch.sigmoid(real_logit).mean().detach(),
        "d_fake": torch.sigmoid(fake_logit).mean().detach(),
    }


def g_loss(fake_logit: torch.Tensor, kind: str) -> torch.Tensor:
    """The generator's loss on D's logits for its fakes, `kind` as `AdversarialConfig.gan_loss`."""
    if kind == "non_saturating":
        return F.softplus(-fake_logit).mean()  # -log D(G(z))
    return -F.softplus(fake_logit).mean()  # log(1 - D(G(z)))


def g_loss_terms(fake_logit: torch.Tensor, kind: str) -> dict[str, torch.Tensor]:
    """The generator's loss (`g_loss`) and how D scores the fakes it was computed on."""
    return {
        "loss": g_loss(fake_logit, kind),
        "d_fake_for_g": torch.sigmoid(fake_logit).mean().detach(),
    }


class AdversarialModel(GenerativeModel):
    """Shared GAN mechanics: phases ("d",)*k + ("g",), D/G losses, sampling through tanh."""

    family = "adversarial"
    Config = GANConfig
    image_free_phases = ("g",)  # G draws its own noise; only the batch size is read
    generator_net: nn.Module
    discriminator_net: nn.Module

    def __init__(self, cfg: AdversarialConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        self.phases = ("d",) * cfg.d_steps + ("g",)
        if cfg.fakes == "shared" and type(self).loss is not AdversarialModel.loss:
            raise ConfigError(
                f"{self.name}.fakes=shared is not allowed: {self.name} draws its own fakes in "
                "each phase; only gan and dcgan share them (use fresh)"
            )
        self._shared: torch.Tensor | None = None  # fakes=shared: the D step's, with graph

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

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` generator inputs z ~ N(0, I)."""
        return randn((n, self.cfg.z_dim), generator, self.device)

    def generate(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` fakes in [-1, 1], differentiable with respect to the generator."""
        return self.generator_net(self.sample_latent(n, generator))

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """D's logits for images in [-1, 1] (a growing D also needs to know its stage)."""
        return self.discriminator_net(x)

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        n = len(x)
        if phase == "d":
            if self.cfg.fakes == "shared":
                if torch.distributed.is_initialized():
                    raise ConfigError(f"{self.name}.fakes=shared is not supported with nproc > 1")
                self._shared = self.generate(n)  # kept, graph and all, for the G step
                # Under train.compile the generator is then a graph of its own, whose backward
                # is left for the G step when the D step's loss runs its own.
                torch._dynamo.graph_break()
                fake = self._shared.detach()
            else:
                with torch.no_grad():
                    fake = self.generate(n)
            return d_loss_terms(self.discriminate(self.real_input(x)), self.discriminate(fake))
        if phase == "g":
            fake, self._shared = self._shared, None
            fake = self.generate(n) if fake is None else fake
            return g_loss_terms(self.discriminate(fake), self.cfg.gan_loss)
        raise ValueError(f"unknown phase {phase!r}; {self.name} has phases {self.phases}")

    @torch.no_grad()
    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Generator inputs -> uint8 images in the data's levels."""
        return from_unit(self.generator_net(z), self.meta.levels)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.decode_latent(self.sample_latent(n, generator))


class GAN(AdversarialModel):
    """The original GAN: an MLP generator and an MLP discriminator on flattened images."""

    name = "gan"
    Config = MLPGANConfig
    capabilities = Capabilities(latent=True)

    def __init__(self, cfg: MLPGANConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        dims = meta.dims
        g: list[nn.Module] = []
        sizes = (cfg.z_dim, *cfg.g_hidden)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            g += [nn.Linear(a, b), *([nn.BatchNorm1d(b)] if cfg.g_batchnorm else []), nn.ReLU()]
        g += [nn.Linear(cfg.g_hidden[-1], dims), nn.Tanh(), nn.Unflatten(1, meta.shape)]
        self.generator_net = nn.Sequential(*g)
        d: list[nn.Module] = [nn.Flatten()]
        sizes = (dims, *cfg.d_hidden)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            d += [nn.Linear(a, b), nn.LeakyReLU(0.2), nn.Dropout(cfg.dropout)]
        d += [nn.Linear(cfg.d_hidden[-1], 1), nn.Flatten(0)]
        self.discriminator_net = nn.Sequential(*d)


def dcgan_start(meta: DataMeta) -> tuple[int, tuple[int, int]]:
    """The doublings between the nets' smallest map and the image, and that map's size: the
    image halved while both sides stay whole and at least 4 (8x8 -> 1 from 4x4, 28x28 -> 2
    from 7x7 as in the classic MNIST DCGAN, 32x32 -> 3 from 4x4; an odd size has no halving).
    Any size of at least 4 is taken as it is: nothing is resized."""
    _, h, w = meta.shape
    k = min(halvings(h), halvings(w))
    return k, (h // 2**k, w // 2**k)


def dcgan_generator(z_dim: int, channels: int, meta: DataMeta) -> nn.Sequential:
    """Transposed convs from a (z_dim,) vector to the start map (`dcgan_start`: 4x4 for 8x8),
    then doubling up to the image."""
    n_up, start = dcgan_start(meta)
    g = [channels * 2 ** (n_up - i) for i in range(n_up + 1)]  # e.g. 128, 64 for 8x8
    layers: list[nn.Module] = [
        nn.Unflatten(1, (z_dim, 1, 1)),
        nn.ConvTranspose2d(z_dim, g[0], start, 1, 0, bias=False),
        nn.BatchNorm2d(g[0]),
        nn.ReLU(),
    ]
    for a, b in zip(g[:-1], g[1:], strict=True):
        layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
    layers += [nn.Conv2d(g[-1], meta.channels, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


def dcgan_discriminator_body(channels: int, meta: DataMeta) -> tuple[list[nn.Module], int]:
    """Strided convs from the image down to the start map (`dcgan_start`: 4x4 for 8x8): the
    layers and that map's channels."""
    n_down, _ = dcgan_start(meta)
    d = [channels * 2**i for i in range(n_down + 1)]  # e.g. 64, 128 for 8x8
    layers: list[nn.Module] = [nn.Conv2d(meta.channels, d[0], 3, padding=1), nn.LeakyReLU(0.2)]
    for a, b in zip(d[:-1], d[1:], strict=True):
        layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]
    return layers, d[-1]


class DCGAN(AdversarialModel):
    """Transposed-conv generator and strided-conv discriminator, sized from the image."""

    name = "dcgan"
    capabilities = Capabilities(latent=True)

    def __init__(self, cfg: GANConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        self.generator_net = dcgan_generator(cfg.z_dim, cfg.g_channels, meta)
        body, top = dcgan_discriminator_body(cfg.d_channels, meta)
        self.discriminator_net = nn.Sequential(
            *body, nn.Conv2d(top, 1, dcgan_start(meta)[1], 1, 0), nn.Flatten(), nn.Flatten(0)
        )
        self.apply(dcgan_init)


def dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
