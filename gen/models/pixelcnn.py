"""PixelCNN (van den Oord et al., 2016): masked convolutions, a categorical per subpixel."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gen.config import require
from gen.data import DataMeta, to_unit
from gen.models.base import GenerativeModel, ModelConfig
from gen.nn import MaskedConv2d, categorical_log_prob, sample_categorical


@dataclass
class PixelCNNConfig(ModelConfig):
    steps: int = 3000
    lr: float = 1e-3
    channels: int = 64  # hidden feature maps (a multiple of the data's channels)
    layers: int = 5  # residual blocks with mask-B 3x3 convolutions after the first 7x7 mask-A one
    first_kernel: int = 7
    dropout: float = 0.0

    def validate(self, section: str) -> None:
        super().validate(section)
        require(self.channels > 0, f"{section}.channels={self.channels} must be > 0")
        require(self.layers >= 0, f"{section}.layers={self.layers} must be >= 0")
        require(
            self.first_kernel % 2 == 1 and self.first_kernel >= 3,
            f"{section}.first_kernel={self.first_kernel} must be an odd number >= 3",
        )
        require(0 <= self.dropout < 1, f"{section}.dropout={self.dropout} must be in [0, 1)")


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


class PixelCNN(GenerativeModel):
    """p(x) = prod_i p(x_i | x_<i), every factor a categorical over the data's levels."""

    name = "pixelcnn"
    family = "autoregressive"
    Config = PixelCNNConfig

    def __init__(self, cfg: PixelCNNConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        c, ch, lv = meta.channels, cfg.channels, meta.levels
        require(
            ch % (2 * c) == 0,
            f"pixelcnn.channels={ch} must be a multiple of {2 * c} for {c}-channel data",
        )
        self.net = nn.Sequential(
            MaskedConv2d(c, ch, cfg.first_kernel, "A", c),
            *[_ResidualBlock(ch, c, cfg.dropout) for _ in range(cfg.layers)],
            nn.ReLU(),
            MaskedConv2d(ch, ch, 1, "B", c),
            nn.ReLU(),
            MaskedConv2d(ch, c * lv, 1, "B", c),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, levels, H, W) for every pixel, each from the pixels before it only."""
        b, c, h, w = x.shape
        out = self.net(to_unit(x, self.meta.levels))
        return out.view(b, c, self.meta.levels, h, w)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return categorical_log_prob(self.logits(x), x)

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        nll = -self.log_prob(x).mean() / self.meta.dims
        return {"loss": nll, "bpd": nll / torch.log(torch.tensor(2.0))}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        c, h, w = self.meta.shape
        x = torch.zeros(n, c, h, w, dtype=torch.uint8, device=self.device)
        for i in range(h):
            for j in range(w):
                for k in range(c):
                    logits = self.logits(x)[:, k, :, i, j]
                    x[:, k, i, j] = sample_categorical(logits, generator).to(torch.uint8)
        return x
