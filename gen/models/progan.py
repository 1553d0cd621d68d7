"""Progressive GAN (Karras et al., 2018, the seeds' Progressive-GAN): both nets start at 4x4 and
grow, one doubling at a time, up to the data's size. A size that is not a power of two starts
from its own whole fraction instead, size / 2**k with k as large as keeps it whole and at least
4 (28x28 grows 7 -> 14 -> 28; an odd size does not grow), so no image is resized or padded.
Each new resolution is faded in: its output is blended with the previous resolution's
(upsampled) output, the blend weight alpha rising from 0 to 1, so the freshly added layers
never shock the ones already trained.

The paper's other three ingredients are here too: pixel norm after each generator conv (feature
vectors of unit length, instead of batch norm), a minibatch standard deviation channel in the
discriminator (so it can see a batch with too little variety), and an equalised learning rate
(weights drawn from N(0, 1) and scaled at runtime by He's constant, so Adam moves every layer at
the same pace). The loss is the non-saturating logistic GAN loss rather than the paper's WGAN-GP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gen.capabilities import Capabilities
from gen.config import at_least, checked, positive, require, require_data
from gen.data import DataMeta, from_unit
from gen.models.gan import AdversarialConfig, AdversarialModel, d_loss_terms
from gen.nn import halvings

MIN_SIZE = 4  # the smallest first resolution (that of every power of two)


@dataclass
class ProGANConfig(AdversarialConfig):
    lr: float = 1e-3  # the paper's recipe: lr 1e-3, beta1 0, beta2 0.99
    beta1: float = 0.0
    beta2: float = 0.99
    z_dim: int = 64
    # Channels at 4x4, halved at each doubling of the resolution (never below min(this, 16)).
    g_channels: int = checked(64, positive())
    d_channels: int = checked(64, positive())
    # Steps at each resolution before the next one is added.
    stage_steps: int = checked(600, positive())
    fade_steps: int = 300  # of those, the first ones fade the new resolution in (0: no fade)
    # Images per minibatch-stddev group (the whole batch if it won't divide).
    mbstd_group: int = checked(4, positive())
    # R1 (Mescheder et al., 2018): gamma/2 * E|grad_x D(x)|^2 on real images, added to D's loss;
    # it keeps the logistic loss stable without the paper's WGAN-GP. 0 disables it.
    r1_gamma: float = checked(0.0, at_least(0))

    def validate(self, section: str) -> None:
        require(
            0 <= self.fade_steps <= self.stage_steps,
            f"{section}.fade_steps={self.fade_steps} must be in "
            f"[0, stage_steps={self.stage_steps}]",
        )


def schedule(step: int, n_stages: int, stage_steps: int, fade_steps: int) -> tuple[int, float]:
    """(stage, alpha) at training `step` (0-based). Stage s works at start * 2**s pixels (start:
    `first_resolution`, 4 for powers of two) and begins
    at step s * stage_steps; for its first `fade_steps` steps alpha rises linearly from 0 (the
    previous stage's output) to 1 (the new one's). The last stage lasts for ever."""
    if step < 0 or n_stages < 1 or stage_steps < 1 or not 0 <= fade_steps <= stage_steps:
        raise ValueError(
            f"bad schedule: step={step}, n_stages={n_stages}, stage_steps={stage_steps}, "
            f"fade_steps={fade_steps}"
        )
    stage = min(step // stage_steps, n_stages - 1)
    into = step - stage * stage_steps
    if stage == 0 or fade_steps == 0 or into >= fade_steps:
        return stage, 1.0
    return stage, into / fade_steps


def first_resolution(meta: DataMeta) -> tuple[int, int]:
    """The side the nets start at and the number of resolutions up to the data's size: 4 and
    log2(size) - 1 for a power of two (8x8: 4, 8), else size / 2**k (`halvings`: 28x28 grows
    7, 14, 28). ConfigError unless the images are square and at least 4x4."""
    _, h, w = meta.shape
    require_data(
        h == w and h >= MIN_SIZE,
        f"progan cannot take {h}x{w} images; it needs square images of at least {MIN_SIZE}x"
        f"{MIN_SIZE} (set data.image_size)",
        f"it cannot take {h}x{w} images",
    )
    k = halvings(h, MIN_SIZE)
    return h // 2**k, k + 1


# ---------------------------------------------------------------------------------- layers
class EqualConv2d(nn.Module):
    """A conv whose N(0, 1) weights are scaled at runtime by gain / sqrt(fan_in)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, gain: float = math.sqrt(2)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale = gain / math.sqrt(c_in * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualLinear(nn.Module):
    """A linear layer whose N(0, 1) weights are scaled at runtime by gain / sqrt(fan_in)."""

    def __init__(self, d_in: int, d_out: int, gain: float = math.sqrt(2)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.scale = gain / math.sqrt(d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class PixelNorm(nn.Module):
    """Each pixel's feature vector divided by its root mean square over channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class MinibatchStd(nn.Module):
    """Appends one channel: the standard deviation of each feature over a group of images,
    averaged over features and positions, the same value at every position of the group."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.group if n % self.group == 0 else n
        y = x.float().reshape(g, n // g, c, h, w)
        var = (y - y.mean(0)).pow(2).mean(0)  # (torch.var over dim 0 is slow on CPU)
        std = (var + 1e-8).sqrt().mean((1, 2, 3))  # (n // g,)
        std = std.to(x.dtype).repeat(g)[:, None, None, None].expand(n, 1, h, w)
        return torch.cat([x, std], dim=1)


def lerp(old: torch.Tensor, new: torch.Tensor, alpha: float) -> torch.Tensor:
    """The fade-in blend: `old` at alpha = 0, `new` at alpha = 1."""
    return new if alpha >= 1 else old + alpha * (new - old)


def up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def down(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def stage_widths(channels: int, n_stages: int) -> list[int]:
    """Channels at each stage: `channels` at 4x4, halved per doubling, floored at min(it, 16)."""
    return [max(channels >> s, min(channels, 16)) for s in range(n_stages)]


# ------------------------------------------------------------------------------------ nets
class ProGenerator(nn.Module):
    """z -> 4x4 map -> (upsample, two 3x3 convs) per stage; a 1x1 to-image conv per stage."""

    def __init__(self, z_dim: int, widths: list[int], channels: int, start: int) -> None:
        super().__init__()
        w0 = widths[0]
        act = nn.LeakyReLU(0.2)
        self.first = nn.Sequential(
            PixelNorm(),
            # As the paper's 4x4 "conv" (gain sqrt(2) / 4 there: / start for other sizes).
            EqualLinear(z_dim, w0 * start * start, gain=math.sqrt(2) / start),
            nn.Unflatten(1, (w0, start, start)),
            act,
            PixelNorm(),
            EqualConv2d(w0, w0, 3),
            act,
            PixelNorm(),
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(
                EqualConv2d(a, b, 3), act, PixelNorm(), EqualConv2d(b, b, 3), act, PixelNorm()
            )
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.to_image = nn.ModuleList(EqualConv2d(w, channels, 1, gain=1.0) for w in widths)

    def forward(self, z: torch.Tensor, stage: int, alpha: float) -> torch.Tensor:
        h = self.first(z)
        for s in range(1, stage + 1):
            prev, h = h, self.blocks[s - 1](up(h))
        out = self.to_image[stage](h)
        if stage > 0 and alpha < 1:
            out = lerp(up(self.to_image[stage - 1](prev)), out, alpha)
        return out


class ProDiscriminator(nn.Module):
    """The mirror image: a 1x1 from-image conv per stage, (two 3x3 convs, average pool) per
    stage, then at 4x4 the minibatch stddev channel, a conv and two linear layers."""

    def __init__(self, widths: list[int], channels: int, group: int, start: int) -> None:
        super().__init__()
        w0 = widths[0]
        act = nn.LeakyReLU(0.2)
        self.from_image = nn.ModuleList(
            nn.Sequential(EqualConv2d(channels, w, 1), act) for w in widths
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(EqualConv2d(b, b, 3), act, EqualConv2d(b, a, 3), act, nn.AvgPool2d(2))
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.last = nn.Sequential(
            MinibatchStd(group),
            EqualConv2d(w0 + 1, w0, 3),
            act,
            nn.Flatten(),
            EqualLinear(w0 * start * start, w0),
            act,
            EqualLinear(w0, 1, gain=1.0),
            nn.Flatten(0),
        )

    def forward(self, x: torch.Tensor, stage: int, alpha: float) -> torch.Tensor:
        h = self.from_image[stage](x)
        if stage > 0:
            h = self.blocks[stage - 1](h)
            if alpha < 1:
                h = lerp(self.from_image[stage - 1](down(x)), h, alpha)
            for s in range(stage - 1, 0, -1):
                h = self.blocks[s - 1](h)
        return self.last(h)


# ----------------------------------------------------------------------------------- model
class ProGAN(AdversarialModel):
    """Grows from 4x4 to the data's size following `schedule`, set by the trainer's
    `begin_step`; the current stage and alpha are buffers, so they are saved with the weights."""

    name = "progan"
    Config = ProGANConfig
    capabilities = Capabilities(latent=True)
    generator_net: ProGenerator
    discriminator_net: ProDiscriminator

    def __init__(self, cfg: ProGANConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        self.start, self.n_stages = first_resolution(meta)
        c, g_widths = meta.channels, stage_widths(cfg.g_channels, self.n_stages)
        self.generator_net = ProGenerator(cfg.z_dim, g_widths, c, self.start)
        self.discriminator_net = ProDiscriminator(
            stage_widths(cfg.d_channels, self.n_stages), c, cfg.mbstd_group, self.start
        )
        # Where training stands; Python copies avoid reading the buffers (a GPU sync) each step.
        self.register_buffer("stage", torch.tensor(0, dtype=torch.long))
        self.register_buffer("alpha", torch.tensor(1.0))
        self._stage, self._alpha = 0, 1.0
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync())

    def _sync(self) -> None:
        self._stage, self._alpha = int(self.stage), float(self.alpha)

    # --------------------------------------------------------------------------- growing
    def begin_step(self, step: int) -> None:
        cfg = self.cfg
        stage, alpha = schedule(step, self.n_stages, cfg.stage_steps, cfg.fade_steps)
        if (stage, alpha) != (self._stage, self._alpha):
            self.stage.fill_(stage)
            self.alpha.fill_(alpha)
            self._stage, self._alpha = stage, alpha

    def step_kind(self, step: int) -> tuple[int, bool]:
        """The stage, and whether it is fading in (both resolutions' layers then run)."""
        cfg = self.cfg
        stage, alpha = schedule(step, self.n_stages, cfg.stage_steps, cfg.fade_steps)
        return stage, alpha < 1

    @property
    def resolution(self) -> int:
        """The side of the images G makes and D sees now."""
        return self.start * 2**self._stage

    def at_resolution(self, x: torch.Tensor) -> torch.Tensor:
        """Full-size images (floats) pooled to the current resolution and, during a fade-in,
        blended with the previous resolution exactly as the generator's output is."""
        x = F.avg_pool2d(x, self.meta.height // self.resolution)
        return lerp(up(down(x)), x, self._alpha) if self._stage > 0 else x

    # ---------------------------------------------------------------------------- losses
    def generate(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` fakes at the current resolution, differentiable with respect to G."""
        return self.generator_net(self.sample_latent(n, generator), self._stage, self._alpha)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator_net(x, self._stage, self._alpha)

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """D's loss on reals at the current resolution, with the optional R1 penalty; G's loss
        (and unknown phases) as in every GAN here."""
        if phase == "d":
            with torch.no_grad():
                fake = self.generate(len(x))
            gamma = self.cfg.r1_gamma
            real = self.at_resolution(self.real_input(x)).requires_grad_(gamma > 0)
            real_logit = self.discriminate(real)
            terms = d_loss_terms(real_logit, self.discriminate(fake))
            if gamma > 0:
                (grad,) = torch.autograd.grad(real_logit.sum(), real, create_graph=True)
                r1 = grad.float().pow(2).sum((1, 2, 3)).mean()
                terms["loss"] = terms["loss"] + 0.5 * gamma * r1
                terms["r1"] = r1.detach()
            return {**terms, "resolution": torch.tensor(float(self.resolution))}
        return super().loss(x, phase, y)

    # -------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Generator inputs -> uint8 images at the data's size: the current stage's output,
        upsampled (nearest) if training stopped before the last stage."""
        y = self.generator_net(z, self._stage, self._alpha)
        y = F.interpolate(y, size=(self.meta.height, self.meta.width), mode="nearest")
        return from_unit(y, self.meta.levels)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "resolution": self.resolution, "start": self.start}
