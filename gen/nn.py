"""Shared layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channel_groups(n_channels: int, n_groups: int) -> torch.Tensor:
    """Assign `n_channels` feature maps to `n_groups` contiguous colour groups (R, G, B ...)."""
    return torch.arange(n_channels) * n_groups // n_channels


def check_mask_args(mask: str, kernel_size: int) -> None:
    if mask not in ("A", "B"):
        raise ValueError(f"mask must be 'A' or 'B', got {mask!r}")
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only pixels before the centre in raster order.

    At the centre pixel, colour group g of the output may see input groups < g (mask "A", used
    once on the image) or <= g (mask "B", every later layer), so channel c of a pixel is predicted
    from the earlier pixels and the earlier channels of the same pixel only.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, mask: str, data_channels: int = 1
    ) -> None:
        check_mask_args(mask, kernel_size)
        super().__init__(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        k, c = kernel_size, kernel_size // 2
        m = torch.zeros(out_ch, in_ch, k, k)
        m[:, :, :c, :] = 1  # rows above
        m[:, :, c, :c] = 1  # left of centre in the same row
        g_out = channel_groups(out_ch, data_channels)[:, None]
        g_in = channel_groups(in_ch, data_channels)[None, :]
        centre = (g_in < g_out) if mask == "A" else (g_in <= g_out)
        m[:, :, c, c] = centre.float()
        self.register_buffer("mask", m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def categorical_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x) summed per image for logits (B, C, L, H, W) and integer images x (B, C, H, W)."""
    logp = torch.log_softmax(logits.float(), dim=2)
    picked = torch.gather(logp, 2, x.long().unsqueeze(2)).squeeze(2)
    return picked.flatten(1).sum(1)


def categorical_from_uniform(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One draw per row of logits (N, L) by inverting the CDF at u (N,) in [0, 1).

    The uniforms can be drawn ahead on the CPU (seeded, the same on every device) and moved to
    the logits' device once, so a sampling loop never copies to the host per draw.
    """
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(-1)
    target = (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    picked = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return picked.clamp_(max=logits.shape[-1] - 1)  # u * total rounding up to the total


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of logits (N, L), using a CPU generator for device-independent seeds."""
    probs = torch.softmax(logits.float(), dim=-1).cpu()
    return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)


def halvings(size: int, smallest: int = 4) -> int:
    """How often `size` halves while staying whole and at least `smallest`: the number of
    doublings a generator needs from its start size, size / 2**k, up to the image (8 -> 1 from
    4x4, 28 -> 2 from 7x7, 32 -> 3 from 4x4, an odd size -> 0). Powers of two >= 8 keep the
    4x4 start DCGAN has always had; other sizes start from their own whole fraction instead of
    being resized."""
    k = 0
    while size % 2 == 0 and size // 2 >= smallest:
        size, k = size // 2, k + 1
    return k
