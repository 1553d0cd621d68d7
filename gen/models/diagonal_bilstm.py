"""PixelRNN with Diagonal BiLSTM layers (van den Oord et al., 2016).

The map is skewed (row i shifted right by i) so that diagonals become columns; a column LSTM
with a 2 x 1 state-to-state convolution then sees, for each pixel, its left and upper
neighbours' states. It runs left-to-right and (on the mirrored map) right-to-left; the
right-to-left output is shifted down one row so that it sees only earlier rows. Together the two
directions cover every earlier pixel. One addition to the paper: the mask-A first layer hides
the last pixel of every row from that row's features (it reaches the features of the next row
only, through the 7x7 window), so the right-to-left direction, which may see its whole row as it
is shifted down, also reads the image itself through a 1x1 convolution; without it pixel (i, j)
would not see the end of row i - 1 beyond the first layer's reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gen.models.autoregressive import shift_down
from gen.models.pixelrnn import (
    PixelRNN,
    PixelRNNConfig,
    candidate_scale,
    conv_matrix,
    forget_bias,
    lstm_cell,
    uniform_weight,
)
from gen.nn import MaskedConv2d


@dataclass
class DiagonalBiLSTMConfig(PixelRNNConfig):
    pass


def skew(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, F) -> (B, H, W + H - 1, F), row i shifted right by i (zeros elsewhere)."""
    b, h, w, f = x.shape
    flat = F.pad(x, (0, 0, 0, h)).flatten(1, 2)  # rows of length w + h
    return flat[:, : h * (w + h - 1)].view(b, h, w + h - 1, f)


def unskew(x: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of `skew`: (B, H, W + H - 1, F) -> (B, H, W, F)."""
    b, h, _, f = x.shape
    flat = F.pad(x.flatten(1, 2), (0, 0, 0, h))
    return flat.view(b, h, width + h, f)[:, :, :width]


class DiagonalBiLSTMLayer(nn.Module):
    """x + W * (left-to-right + shifted right-to-left diagonal LSTM outputs)."""

    def __init__(self, hidden: int, data_channels: int, dropout: float) -> None:
        super().__init__()
        self.hidden, self.data_channels = hidden, data_channels
        # 1x1 input-to-state convolutions, one per direction; the right-to-left one is made
        # causal by the shift, but masking it too costs nothing.
        self.input_left = MaskedConv2d(hidden, 4 * hidden, 1, "B", data_channels)
        self.input_right = MaskedConv2d(hidden, 4 * hidden, 1, "B", data_channels)
        self.image_right = nn.Conv2d(data_channels, 4 * hidden, 1, bias=False)
        # 2x1 state-to-state convolutions over the previous column, one per direction: rows
        # [state of the row above; state of the same row] -> 4h gates. Biases: the input convs'.
        self.state_weight = uniform_weight(2, 2 * hidden, 4 * hidden)
        self.register_buffer("scale", candidate_scale(hidden, data_channels), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.out = MaskedConv2d(hidden, hidden, 1, "B", data_channels)
        forget_bias(self.input_left, hidden, data_channels)
        forget_bias(self.input_right, hidden, data_channels)

    def step_weight(self) -> torch.Tensor:
        """Per direction, the (3h + C + 1, 4h) matrix of a column step.

        Rows: [input, image, bias, state of the row above, state of the same row]; the bias row
        multiplies a channel of ones; the left-to-right direction does not read the image.
        """
        c = self.data_channels
        left = [conv_matrix(self.input_left), self.state_weight.new_zeros(c, 4 * self.hidden)]
        right = [conv_matrix(self.input_right), conv_matrix(self.image_right)]
        weight = torch.stack(
            [
                torch.cat([*left, self.input_left.bias[None], self.state_weight[0]]),
                torch.cat([*right, self.input_right.bias[None], self.state_weight[1]]),
            ]
        )
        return weight * self.scale

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        hd = self.hidden
        # Channels last, with a channel of ones for the bias; the right-to-left direction runs
        # on the mirrored map.
        both = torch.cat([x, image, torch.ones_like(image[:, :1])], dim=1).permute(0, 2, 3, 1)
        # Skewed, diagonals become columns: (direction, B, H, W + H - 1, h + C + 1).
        inputs = skew(torch.cat([both, both.flip(2)]))
        inputs = inputs.view(2, b, height, -1, both.shape[3])
        weight = self.step_weight()
        h = x.new_zeros(2, b, height, hd)
        c = x.new_zeros(2, b, height, hd)
        columns = []
        for column in inputs.unbind(3):
            # Row r of a column sees rows r - 1 and r of the previous column: in the image, the
            # pixel above and the pixel to the left.
            above = F.pad(h, (0, 0, 1, 0))[:, :, :height]
            step_in = torch.cat([column, above, h], dim=3).view(2, b * height, -1)
            gates = torch.bmm(step_in, weight).view(2, b, height, 4 * hd)
            h, c = lstm_cell(gates, c, self.data_channels, dim=3)
            columns.append(h)
        out = torch.stack(columns, dim=3).view(2 * b, height, -1, hd)
        out = unskew(out, width).view(2, b, height, width, hd).permute(0, 1, 4, 2, 3)
        left, right = out[0], out[1].flip(3)  # (B, h, H, W) each
        # The right-to-left state at (i, j) has seen pixels (i, >= j): shifting it down one row
        # leaves only rows above.
        return x + self.out(self.dropout(left + shift_down(right)))


class DiagonalBiLSTM(PixelRNN):
    """PixelRNN with Diagonal BiLSTM layers."""

    name = "pixelrnn_diag"
    Config = DiagonalBiLSTMConfig

    def make_layer(self, cfg: DiagonalBiLSTMConfig, data_channels: int) -> nn.Module:
        return DiagonalBiLSTMLayer(cfg.hidden, data_channels, cfg.dropout)
