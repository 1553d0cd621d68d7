"""PixelCNN (van den Oord et al., 2016): masked convolutions, a categorical per subpixel."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gen.config import at_least, checked, positive
from gen.data import DataMeta, to_unit
from gen.models.autoregressive import AutoregressiveConfig, AutoregressiveModel
from gen.nn import MaskedConv2d


@dataclass
class PixelCNNConfig(AutoregressiveConfig):
    steps: int = 3000
    # Hidden feature maps (rounded up to a multiple of twice the data's channels).
    channels: int = checked(64, positive())
    # Residual blocks with mask-B 3x3 convolutions after the first 7x7 mask-A one.
    layers: int = checked(5, at_least(0))
    dropout: float = 0.0


class _ResidualBlock(nn.Module):
    def __init__(self, ch: int, data_ch: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(ch, ch // 2, 1, "B", data_ch),
            nn.ReLU(),
            MaskedConv2d(ch // 2, ch // 2, 3, "B", data_ch),
            nn.ReLU(),
            nn.Dropout(dropout),
            MaskedConv2d(ch // 2, ch, 1, "B", data_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def vertical_reach(module: nn.Module) -> int:
    """How many rows above its own a chain of masked convolutions reads: k // 2 per layer."""
    return sum(m.kernel_size[0] // 2 for m in module.modules() if isinstance(m, MaskedConv2d))


class PixelCNN(AutoregressiveModel):
    """p(x) = prod_i p(x_i | x_<i), every factor a categorical over the data's levels."""

    name = "pixelcnn"
    Config = PixelCNNConfig

    def __init__(self, cfg: PixelCNNConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        c, lv = meta.channels, meta.levels
        ch = self.round_up("channels", 2 * c)  # halved in each block, then split by colour
        cfg = self.cfg
        self.net = nn.Sequential(
            MaskedConv2d(c, ch, cfg.first_kernel, "A", c),
            *[_ResidualBlock(ch, c, cfg.dropout) for _ in range(cfg.layers)],
            nn.ReLU(),
            MaskedConv2d(ch, ch, 1, "B", c),
            nn.ReLU(),
            MaskedConv2d(ch, c * lv, 1, "B", c),
        )
        # Rows above its own that each layer reads, and that the layers after it still need.
        self.reach = [vertical_reach(layer) for layer in self.net]
        self.reach_after = [sum(self.reach[i + 1 :]) for i in range(len(self.reach))]

    def forward(self, u: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, C, levels, H, W) for every pixel, each from the pixels before it only."""
        b, c, h, w = u.shape
        return self.net(u).view(b, c, self.meta.levels, h, w)

    # Sampling row i: the features of the rows above it do not change while row i is drawn, so
    # every layer's input rows above row i are computed once per row (`row_context`), and each
    # subpixel runs the stack on row i alone, beside them (`row_logits`).
    def row_context(
        self, above: torch.Tensor, y: torch.Tensor | None, previous: object = None
    ) -> list[torch.Tensor]:
        """Per layer, the rows of its input above the next row that it reads (its reach).

        The stack reads a bounded number of rows up, so only those are computed, and after each
        layer only the rows the later layers still read are kept. Zero padding at the top of a
        crop makes its first rows wrong, but never the rows that are kept.
        """
        if above.shape[2] == 0:
            return []  # the first row: nothing above it but the zero padding
        z = to_unit(above[:, :, max(0, above.shape[2] - sum(self.reach)) :], self.meta.levels)
        context = []
        for layer, reach, after in zip(self.net, self.reach, self.reach_after, strict=True):
            context.append(z[:, :, z.shape[2] - min(reach, z.shape[2]) :])
            if after == 0:
                break  # nothing later reads rows above: the head's 1x1 layers need none
            z = layer(z)[:, :, max(0, z.shape[2] - after) :]
        return context

    def row_logits(
        self, top: torch.Tensor, context: list[torch.Tensor], y: torch.Tensor | None
    ) -> torch.Tensor:
        z = to_unit(top[:, :, -1:], self.meta.levels)
        for i, layer in enumerate(self.net):
            above = context[i] if i < len(context) else z[:, :, :0]
            z = layer(torch.cat([above, z], dim=2) if above.shape[2] else z)[:, :, -1:]
        b, _, _, w = z.shape
        return z.view(b, self.meta.channels, self.meta.levels, w)
