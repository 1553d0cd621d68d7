"""Pieces shared by the PixelRNN and gated PixelCNN models.

Every model here factorises p(x) = prod_i p(x_i | x_<i) over pixels in raster order and, within a
pixel, over colour channels R -> G -> B, each factor a categorical over the data's levels. Hidden
feature maps are split into contiguous colour groups (as `gen.nn.MaskedConv2d` does): group g of a
pixel may depend on the earlier pixels and on input channels < g of the same pixel only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gen.capabilities import Capabilities
from gen.config import checked, in_half_open, odd_at_least
from gen.data import to_unit
from gen.models.base import GenerativeModel, ModelConfig
from gen.nn import (
    categorical_from_uniform,
    categorical_log_prob,
    channel_groups,
    check_mask_args,
)


@dataclass
class AutoregressiveConfig(ModelConfig):
    """What PixelCNN, the gated PixelCNN and PixelRNN share: a mask-A first convolution on the
    image, and dropout inside the stack."""

    first_kernel: int = checked(7, odd_at_least(3))  # the mask-A convolution on the image
    dropout: float = checked(0.1, in_half_open(0, 1))


class RowMaskedConv2d(nn.Conv2d):
    """A 1 x k convolution along a row that sees the pixels to the left of the centre only.

    It is a 1 x k masked convolution with the right half of the kernel (always zero) left out:
    the kernel is 1 x (k // 2 + 1) and the row is padded on the left. At the centre pixel colour
    group g of the output sees input groups < g (mask "A") or <= g (mask "B").
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, mask: str, data_channels: int = 1
    ) -> None:
        check_mask_args(mask, kernel_size)
        half = kernel_size // 2
        super().__init__(in_ch, out_ch, (1, half + 1))
        self.half = half
        m = torch.ones(out_ch, in_ch, 1, half + 1)
        g_out = channel_groups(out_ch, data_channels)[:, None]
        g_in = channel_groups(in_ch, data_channels)[None, :]
        centre = (g_in < g_out) if mask == "A" else (g_in <= g_out)
        m[:, :, 0, half] = centre.float()
        self.register_buffer("mask", m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (self.half, 0, 0, 0)), self.weight * self.mask, self.bias)


def split_groups(t: torch.Tensor, n: int, data_channels: int, dim: int = 1) -> list[torch.Tensor]:
    """Split the n*h channels (along `dim`) of `t` into n parts of h, keeping colour groups.

    The channels of `t` are in `data_channels` contiguous groups (as a masked convolution lays
    them out); part k takes the k-th slice of every group, so unit u of every part is in the same
    colour group: gates computed element-wise from the parts (LSTM gates, tanh * sigmoid) never
    mix groups.
    """
    parts = t.unflatten(dim, (data_channels, n, -1)).unbind(dim + 1)
    return [part.flatten(dim, dim + 1) for part in parts]


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Move a feature map (B, F, H, W) down one row (zeros in the top row)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


class AutoregressiveModel(GenerativeModel):
    """Exact log-likelihood, loss and sampling for a network that maps images to causal logits.

    Subclasses implement `forward(u, y)`: logits (B, C, levels, H, W) from images scaled to
    [-1, 1] (floats, so tests can take gradients w.r.t. the input), where the logits of channel c
    at pixel (i, j) depend only on pixels before (i, j) in raster order and channels < c of (i, j).
    """

    family = "autoregressive"
    capabilities = Capabilities(likelihood="exact")
    phases = ("model",)

    def forward(self, u: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, C, levels, H, W) for uint8 images x."""
        return self(to_unit(x, self.meta.levels), y)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(x) in nats per image (labels `y` are used by conditional models only)."""
        return categorical_log_prob(self.logits(x, y), x)

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        nll = -self.log_prob(x, y).mean() / self.meta.dims
        return {"loss": nll, "bpd": nll / torch.log(torch.tensor(2.0))}

    def sample_labels(self, n: int, generator: torch.Generator | None) -> torch.Tensor | None:
        """Labels for `sample` when none are given; None for unconditional models."""
        return None

    def row_context(
        self, above: torch.Tensor, y: torch.Tensor | None, previous: object = None
    ) -> object:
        """What `row_logits` may reuse for every pixel of the next row, from the rows `above`
        it (uint8, possibly zero rows); nothing by default.

        `previous` is what it returned for the row above, after that row was drawn (None: start
        from `above` alone), so a model can carry its work down from row to row.
        """
        return None

    def row_logits(
        self, top: torch.Tensor, context: object, y: torch.Tensor | None
    ) -> torch.Tensor:
        """Logits (B, C, levels, W) of the last row of `top` (uint8 rows 0..i)."""
        return self.logits(top, y)[..., -1, :]

    def pixel_logits(
        self, top: torch.Tensor, context: object, j: int, y: torch.Tensor | None
    ) -> torch.Tensor:
        """Logits (B, C, levels) of pixel j of the last row of `top`, called once per subpixel in
        order; by default, that pixel of `row_logits`."""
        return self.row_logits(top, context, y)[..., j]

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`n` images drawn one subpixel at a time (uint8, in the data's levels)."""
        return self._sample(n, generator, y, whole_image=False)

    def _sample(
        self, n: int, generator: torch.Generator | None, y: torch.Tensor | None, whole_image: bool
    ) -> torch.Tensor:
        """The sampling loop. `whole_image` recomputes the logits of the whole image for every
        subpixel: the slow reference the row-wise shortcuts must match (tests use it)."""
        c, h, w = self.meta.shape
        if y is None:
            y = self.sample_labels(n, generator)
        if y is not None:
            y = y.to(self.device)
        # Every draw's uniform number at once, on the CPU from `generator` (the same images on
        # any device), copied to the device once: no round trip to the host per subpixel.
        u = torch.rand((h, w, c, n), generator=generator).to(self.device)
        x = torch.zeros(n, c, h, w, dtype=torch.uint8, device=self.device)
        context = None
        for i in range(h):
            # Row i depends on rows <= i only, so the rows below need not be computed.
            top = x[:, :, : i + 1]
            if not whole_image:
                context = self.row_context(x[:, :, :i], y, context)
            for j in range(w):
                for k in range(c):
                    if whole_image:
                        logits = self.logits(x, y)[:, k, :, i, j]
                    else:
                        logits = self.pixel_logits(top, context, j, y)[:, k]
                    top[:, k, i, j] = categorical_from_uniform(logits, u[i, j, k])
        return x
