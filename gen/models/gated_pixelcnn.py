"""Gated PixelCNN (van den Oord et al., 2016, "Conditional Image Generation with PixelCNN
Decoders").

Two stacks of convolutions replace PixelCNN's masked ones:
- the vertical stack sees the rows above: a (k//2 + 1) x k convolution over the current row and
  the k//2 rows above it. It feeds the horizontal stack only after a shift down one row, so the
  horizontal stack at row i gets rows < i from it, over the full growing width: no blind spot;
- the horizontal stack sees the pixels to the left in the current row (a 1 x k masked
  convolution, mask A in the first layer, B after) plus the vertical stack's link, with a
  residual connection.
Every layer is gated, tanh(a) * sigmoid(b). With `conditional`, a learned embedding of the label
is added as a bias to the gates of every layer of both stacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gen.config import at_least, checked, odd_at_least, positive
from gen.data import DataMeta, to_unit
from gen.models.autoregressive import (
    AutoregressiveConfig,
    AutoregressiveModel,
    RowMaskedConv2d,
    shift_down,
    split_groups,
)
from gen.nn import MaskedConv2d, categorical_log_prob


@dataclass
class GatedPixelCNNConfig(AutoregressiveConfig):
    """`dropout` is on the horizontal stack's gated output."""

    steps: int = 1000
    lr: float = 2e-3
    # Feature maps of each stack (rounded up to a multiple of the data's channels).
    channels: int = checked(32, positive())
    layers: int = checked(5, at_least(0))  # gated layers after the first one
    kernel: int = checked(3, odd_at_least(3))  # k of the later layers
    conditional: bool = False  # condition on the class label (a bias in every gated layer)


def _gate(pre: torch.Tensor, data_channels: int) -> torch.Tensor:
    a, b = split_groups(pre, 2, data_channels)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer of both stacks: (v, h) -> (v', h')."""

    def __init__(
        self,
        in_ch: int,
        ch: int,
        kernel: int,
        mask: str,
        data_channels: int,
        n_classes: int | None,
        dropout: float,
    ) -> None:
        super().__init__()
        self.data_channels, self.half = data_channels, kernel // 2
        self.residual = in_ch == ch and mask == "B"
        # Rows i - k//2 .. i of the vertical stack; the current row is only passed on shifted.
        self.vertical = nn.Conv2d(in_ch, 2 * ch, (self.half + 1, kernel))
        self.horizontal = RowMaskedConv2d(in_ch, 2 * ch, kernel, mask, data_channels)
        self.link = nn.Conv2d(2 * ch, 2 * ch, 1)  # vertical -> horizontal (rows above: no mask)
        self.dropout = nn.Dropout(dropout)
        self.out = MaskedConv2d(ch, ch, 1, "B", data_channels)
        self.embed = nn.Embedding(n_classes, 4 * ch) if n_classes else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=0.1)

    def label_bias(self, y: torch.Tensor | None) -> tuple[torch.Tensor | int, torch.Tensor | int]:
        """The gate biases of label y for the vertical and the horizontal stack (or 0, 0)."""
        if self.embed is None or y is None:
            return 0, 0
        v_bias, h_bias = self.embed(y)[:, :, None, None].chunk(2, dim=1)
        return v_bias, h_bias

    def vertical_pre(self, v: torch.Tensor) -> torch.Tensor:
        """Vertical pre-activations: row i from rows i - k//2 .. i of the vertical stack."""
        k = self.half
        return self.vertical(F.pad(v, (k, k, k, 0)))

    def vertical_out(self, v_pre: torch.Tensor, v_bias: torch.Tensor | int) -> torch.Tensor:
        return _gate(v_pre + v_bias, self.data_channels)

    def horizontal_out(
        self, h: torch.Tensor, v_pre_above: torch.Tensor, h_bias: torch.Tensor | int
    ) -> torch.Tensor:
        """The horizontal stack's output from its input and the vertical pre-activations of the
        row above each row (so any set of rows can be computed alone)."""
        h_pre = self.horizontal(h) + self.link(v_pre_above) + h_bias
        h_out = self.out(self.dropout(_gate(h_pre, self.data_channels)))
        return h + h_out if self.residual else h_out

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v_bias, h_bias = self.label_bias(y)
        v_pre = self.vertical_pre(v)
        h = self.horizontal_out(h, shift_down(v_pre), h_bias)
        return self.vertical_out(v_pre, v_bias), h


class GatedPixelCNN(AutoregressiveModel):
    """p(x) = prod_i p(x_i | x_<i[, y]) from gated vertical and horizontal convolution stacks."""

    name = "gated_pixelcnn"
    Config = GatedPixelCNNConfig

    def __init__(self, cfg: GatedPixelCNNConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        c, lv = meta.channels, meta.levels
        ch = self.round_up("channels", c)
        cfg = self.cfg
        n_classes = meta.n_classes if cfg.conditional else None
        layer_args = (c, n_classes, cfg.dropout)
        self.layers = nn.ModuleList(
            [GatedLayer(c, ch, cfg.first_kernel, "A", *layer_args)]
            + [GatedLayer(ch, ch, cfg.kernel, "B", *layer_args) for _ in range(cfg.layers)]
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(ch, ch, 1, "B", c),
            nn.ReLU(),
            MaskedConv2d(ch, c * lv, 1, "B", c),
        )

    def forward(self, u: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = u.shape
        v, z = u, u
        for layer in self.layers:
            v, z = layer(v, z, y)
        return self.head(z).view(b, c, self.meta.levels, h, w)

    # Sampling row i: the vertical stack needs rows < i only, once per row; every pixel of the
    # row then runs the horizontal stack on that one row.
    def row_context(
        self, above: torch.Tensor, y: torch.Tensor | None, previous: object = None
    ) -> list[torch.Tensor]:
        """Per layer, the vertical pre-activations of the row above the next row."""
        b, _, i, w = above.shape
        v = to_unit(above, self.meta.levels)
        context = []
        for layer in self.layers:
            if i == 0:  # above the first row: the zeros that `shift_down` brings in
                context.append(v.new_zeros(b, layer.link.in_channels, 1, w))
                continue
            v_pre = layer.vertical_pre(v)
            context.append(v_pre[:, :, -1:])
            v = layer.vertical_out(v_pre, layer.label_bias(y)[0])
        return context

    def row_logits(
        self, top: torch.Tensor, context: list[torch.Tensor], y: torch.Tensor | None
    ) -> torch.Tensor:
        z = to_unit(top[:, :, -1:], self.meta.levels)
        for layer, v_pre_above in zip(self.layers, context, strict=True):
            z = layer.horizontal_out(z, v_pre_above, layer.label_bias(y)[1])
        b, _, _, w = z.shape
        return self.head(z).view(b, self.meta.channels, self.meta.levels, w)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(x | y) in nats per image.

        A conditional model given no labels returns the exact marginal
        log p(x) = log sum_y p(y) p(x | y) under the uniform label prior that `sample` draws from
        (one pass per class).
        """
        if not self.cfg.conditional or y is not None:
            return super().log_prob(x, y)
        k = self.meta.n_classes
        labels = [torch.full((len(x),), i, dtype=torch.long, device=x.device) for i in range(k)]
        per_label = torch.stack([categorical_log_prob(self.logits(x, y), x) for y in labels])
        return torch.logsumexp(per_label, dim=0) - math.log(k)

    def sample_labels(self, n: int, generator: torch.Generator | None) -> torch.Tensor | None:
        if not self.cfg.conditional:
            return None
        return torch.randint(0, self.meta.n_classes, (n,), generator=generator)
