"""PixelRNN with Diagonal BiLSTM layers (van den Oord et al., 2016), and its sampling one pixel
at a time.

The map is skewed (row i shifted right by i) so that diagonals become columns; a column LSTM
with a 2 x 1 state-to-state convolution then sees, for each pixel, its left and upper
neighbours' states. It runs left-to-right and (on the mirrored map) right-to-left; the
right-to-left output is shifted down one row so that it sees only earlier rows. Together the two
directions cover every earlier pixel. One addition to the paper: the mask-A first layer hides
the last pixel of every row from that row's features (it reaches the features of the next row
only, through the 7x7 window), so the right-to-left direction, which may see its whole row as it
is shifted down, also reads the image itself through a 1x1 convolution; without it pixel (i, j)
would not see the end of row i - 1 beyond the first layer's reach.

Sampling. Unskewed, the left-to-right LSTM is a recurrence over pixels: its state at (i, j)
comes from the layer's input at (i, j) and its states at (i - 1, j) and (i, j - 1) (the skew's
padding keeps zero states: zero inputs, no bias there, so a row starts from zeros). The
right-to-left one reads the input and the image at (i, j) and its states at (i - 1, j) and
(i, j + 1), and pixel (i, j) reads it at (i - 1, j) only. So a subpixel costs one LSTM step per
layer at its own pixel, beside the first layer's window and the head, and a finished row one
right-to-left pass per layer: what the whole-image forward computes, in another order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gen.data import to_unit
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


# Sampling carries, per layer, what the row being drawn reads of the row above and what it has
# computed so far, one (B, h) tensor per column. The pixel being drawn writes its entries at
# every subpixel; they are final after its last channel, which they never read (the masks).
@dataclass
class RowState:
    above: list[torch.Tensor]  # left-to-right h of the row above (zeros above the first row)
    above_right: list[torch.Tensor]  # right-to-left h of the row above
    inputs: dict[int, torch.Tensor] = field(default_factory=dict)  # the layer's input, by column
    h: dict[int, torch.Tensor] = field(default_factory=dict)  # left-to-right (h, c), by column
    c: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class DiagonalContext:
    """What sampling carries from pixel to pixel and from row to row."""

    first: torch.Tensor  # the first layer's masked kernel down to the centre row, as a matrix
    weights: list[tuple[torch.Tensor, ...]]  # per layer: its `step_matrices`
    head: list[torch.Tensor | None]  # per module of the head: its matrix, None for a ReLU
    rows: list[RowState]  # per layer


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

    # Sampling: the forward above, one pixel at a time (see the module's docstring).
    def step_matrices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The left-to-right step's matrix without its image rows (zeros), the right-to-left
        step's, and the output convolution's."""
        weight, hd, c = self.step_weight(), self.hidden, self.data_channels
        return torch.cat([weight[0, :hd], weight[0, hd + c :]]), weight[1], conv_matrix(self.out)

    def pixel(
        self, x: torch.Tensor, row: RowState, j: int, weights: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        """The layer's output (B, h) at pixel j of the row being drawn, from its input x there;
        writes x and the left-to-right state there into `row`."""
        left, _, out = weights
        row.inputs[j] = x
        h_left, c_left = (row.h[j - 1], row.c[j - 1]) if j else (torch.zeros_like(x),) * 2
        step_in = torch.cat([x, torch.ones_like(x[:, :1]), row.above[j], h_left], dim=1)
        row.h[j], row.c[j] = lstm_cell(step_in @ left, c_left, self.data_channels, dim=1)
        return x + self.dropout(row.h[j] + row.above_right[j]) @ out + self.out.bias

    def row_below(
        self, row: RowState, image: list[torch.Tensor], weights: tuple[torch.Tensor, ...]
    ) -> RowState:
        """The state of the row under `row`, once `row` is drawn (its pixels: `image`, per
        column (B, C)): `row`'s left-to-right states and a right-to-left pass over it."""
        right = weights[1]
        h = c = torch.zeros_like(row.above[0])
        ones = torch.ones_like(h[:, :1])
        states = []
        for j in reversed(range(len(row.above))):
            step_in = torch.cat([row.inputs[j], image[j], ones, row.above_right[j], h], dim=1)
            h, c = lstm_cell(step_in @ right, c, self.data_channels, dim=1)
            states.append(h)
        return RowState([row.h[j] for j in range(len(row.above))], states[::-1])


class DiagonalBiLSTM(PixelRNN):
    """PixelRNN with Diagonal BiLSTM layers."""

    name = "pixelrnn_diag"
    Config = DiagonalBiLSTMConfig

    def make_layer(self, cfg: DiagonalBiLSTMConfig, data_channels: int) -> nn.Module:
        return DiagonalBiLSTMLayer(cfg.hidden, data_channels, cfg.dropout)

    def row_context(
        self, above: torch.Tensor, y: torch.Tensor | None, previous: object = None
    ) -> DiagonalContext:
        """The LSTM states the next row reads of the row above; without `previous`, found by
        walking down the rows above as sampling does."""
        if isinstance(previous, DiagonalContext):
            return self._next_row(above, previous)
        context = self._top_context(above)
        for r in range(above.shape[2]):
            self.row_logits(above[:, :, : r + 1], context, y)  # fills row r's states
            context = self._next_row(above[:, :, : r + 1], context)
        return context

    def _top_context(self, above: torch.Tensor) -> DiagonalContext:
        b, _, _, w = above.shape
        reach = self.first.kernel_size[0] // 2
        zeros = [self.first.weight.new_zeros(b, self.cfg.hidden)] * w
        return DiagonalContext(
            first=(self.first.weight * self.first.mask)[:, :, : reach + 1].flatten(1).t(),
            weights=[layer.step_matrices() for layer in self.layers],
            head=[conv_matrix(m) if isinstance(m, nn.Conv2d) else None for m in self.head],
            rows=[RowState(zeros, zeros) for _ in self.layers],
        )

    def _next_row(self, above: torch.Tensor, previous: DiagonalContext) -> DiagonalContext:
        """The context of the row under `above`, whose last row was drawn with `previous`."""
        image = to_unit(above[:, :, -1], self.meta.levels).unbind(2)  # per column, (B, C)
        layers = zip(self.layers, previous.rows, previous.weights, strict=True)
        rows = [layer.row_below(row, image, weights) for layer, row, weights in layers]
        return DiagonalContext(previous.first, previous.weights, previous.head, rows)

    def row_logits(
        self, top: torch.Tensor, context: DiagonalContext, y: torch.Tensor | None
    ) -> torch.Tensor:
        # Pixel by pixel, left to right: each one's states are the next one's context.
        pixels = [self.pixel_logits(top, context, j, y) for j in range(top.shape[3])]
        return torch.stack(pixels, dim=-1)

    def pixel_logits(
        self, top: torch.Tensor, context: DiagonalContext, j: int, y: torch.Tensor | None
    ) -> torch.Tensor:
        b, _, rows, w = top.shape
        # The first layer at (i, j): its kernel's rows down to the centre over the pixels in
        # reach, zero-padded where the image ends (as the convolution pads). Every layer runs
        # on the one pixel as matrices, (B, features).
        reach, i = self.first.kernel_size[0] // 2, rows - 1
        window = top[:, :, max(0, i - reach) :, max(0, j - reach) : j + reach + 1]
        pad = (max(0, reach - j), max(0, j + reach + 1 - w), reach + 1 - window.shape[2], 0)
        window = F.pad(to_unit(window, self.meta.levels), pad)
        x = window.flatten(1) @ context.first + self.first.bias
        for layer, row, weights in zip(self.layers, context.rows, context.weights, strict=True):
            x = layer.pixel(x, row, j, weights)
        for module, matrix in zip(self.head, context.head, strict=True):
            x = module(x) if matrix is None else x @ matrix + module.bias
        return x.view(b, self.meta.channels, self.meta.levels)
