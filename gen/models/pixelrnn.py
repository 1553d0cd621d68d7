"""PixelRNN (van den Oord et al., 2016, "Pixel Recurrent Neural Networks"): Row LSTM and
Diagonal BiLSTM.

Both follow the paper's Table 1: a mask-A convolution on the image, residual LSTM layers whose
input-to-state convolutions use mask B, then ReLU + 1x1 mask-B convolutions to a categorical over
the data's levels for every subpixel (channels R -> G -> B within a pixel).

- Row LSTM: rows are processed top to bottom, a whole row at a time. The input-to-state part is a
  1 x k masked convolution along the row; the state-to-state part is a 1D convolution of width 3
  over the previous row's hidden state. The receptive field is a triangle above the pixel (it
  widens by one column per row up) plus the pixels to its left.
- Diagonal BiLSTM: the map is skewed (row i shifted right by i) so that diagonals become columns;
  a column LSTM with a 2 x 1 state-to-state convolution then sees, for each pixel, its left and
  upper neighbours' states. It runs left-to-right and (on the mirrored map) right-to-left; the
  right-to-left output is shifted down one row so that it sees only earlier rows. Together the
  two directions cover every earlier pixel. One addition to the paper: the mask-A first layer
  hides the last pixel of every row from that row's features (it reaches the features of the
  next row only, through the 7x7 window), so the right-to-left direction, which may see its
  whole row as it is shifted down, also reads the image itself through a 1x1 convolution;
  without it pixel (i, j) would not see the end of row i - 1 beyond the first layer's reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gen.config import at_least, checked, odd_at_least, positive, require
from gen.data import DataMeta, to_unit
from gen.models.autoregressive import (
    AutoregressiveConfig,
    AutoregressiveModel,
    RowMaskedConv2d,
    shift_down,
    split_groups,
)
from gen.nn import MaskedConv2d


@dataclass
class PixelRNNConfig(AutoregressiveConfig):
    """`dropout` is on the LSTM output, before the residual projection."""

    steps: int = 1000
    lr: float = 2e-3
    # LSTM state size = width of the residual stream (a multiple of channels).
    hidden: int = checked(32, positive())
    layers: int = checked(2, at_least(1))  # residual LSTM layers after the first mask-A convolution


@dataclass
class RowLSTMConfig(PixelRNNConfig):
    kernel: int = checked(3, odd_at_least(3))  # width k of the 1 x k input-to-state convolution


@dataclass
class DiagonalBiLSTMConfig(PixelRNNConfig):
    pass


# What Row LSTM sampling reuses within a row: the image rows above it that the first layer
# reads, and each layer's LSTM state (h, c) after the row above (None at the top).
RowContext = tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor] | None]]


def _gate_index(hidden: int, data_channels: int, gate: int) -> torch.Tensor:
    """Channel indices of LSTM gate `gate` (0 input, 1 forget, 2 output, 3 candidate) among the
    4h pre-activations, laid out in colour groups as `split_groups` reads them."""
    marker = torch.arange(4 * hidden, dtype=torch.float).view(1, -1)
    return split_groups(marker, 4, data_channels)[gate].long().flatten()


def _candidate_scale(hidden: int, data_channels: int) -> torch.Tensor:
    """2 on the candidate pre-activations, 1 elsewhere: see `_lstm_cell`."""
    scale = torch.ones(4 * hidden)
    scale[_gate_index(hidden, data_channels, 3)] = 2.0
    return scale


def _lstm_cell(
    gates: torch.Tensor, c: torch.Tensor, data_channels: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM update from pre-activations with 4h channels along `dim`, in colour groups.

    The candidate's pre-activations arrive doubled (weights times `_candidate_scale`), so that
    one sigmoid serves all four gates: tanh(a) = 2 sigmoid(2a) - 1.
    """
    i, f, o, g = split_groups(torch.sigmoid(gates), 4, data_channels, dim)
    c = torch.addcmul(f * c, i, 2 * g - 1)
    return o * torch.tanh(c), c


def _forget_bias(conv: nn.Module, hidden: int, data_channels: int) -> None:
    """Start the forget gates at +1 (a common LSTM initialisation)."""
    with torch.no_grad():
        conv.bias[_gate_index(hidden, data_channels, 1)] += 1.0


def _uniform(*shape: int) -> nn.Parameter:
    """A weight initialised as PyTorch initialises a convolution with shape[-2] inputs."""
    bound = 1 / math.sqrt(shape[-2])
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


def _matrix(conv: nn.Conv2d) -> torch.Tensor:
    """The (in, out) matrix of a 1x1 convolution, masked or not."""
    weight = conv.weight * conv.mask if isinstance(conv, MaskedConv2d) else conv.weight
    return weight.flatten(1).t()


# The recurrences run channels-last, (batch, positions, features), so that each step is one
# matrix product over the concatenated inputs and neighbouring states: the convolutions of the
# paper, written as matrices (the modules below hold their weights, masks and biases).


class RowLSTMLayer(nn.Module):
    """x + W * RowLSTM(x): rows top to bottom, a 1D state-to-state convolution over the row above.

    (`image` is unused: the layers of both PixelRNNs take the same arguments.)
    """

    def __init__(self, hidden: int, kernel: int, data_channels: int, dropout: float) -> None:
        super().__init__()
        self.hidden, self.data_channels = hidden, data_channels
        self.input_to_state = RowMaskedConv2d(hidden, 4 * hidden, kernel, "B", data_channels)
        # Width-3 convolution over the row above (entirely in the past: no mask), as a matrix
        # over [state left of, at, right of] each column. Its bias is the input convolution's.
        self.state_weight = _uniform(3 * hidden, 4 * hidden)
        self.register_buffer("scale", _candidate_scale(hidden, data_channels), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.out = MaskedConv2d(hidden, hidden, 1, "B", data_channels)
        _forget_bias(self.input_to_state, hidden, data_channels)

    def step_weight(self) -> torch.Tensor:
        """The (k//2 + 1 + 3) h + 1 by 4h matrix of a row step.

        Rows: the input-to-state kernel's columns (the input k//2, ..., 1, 0 pixels to the
        left), its bias (multiplying a channel of ones), then the state-to-state weight.
        """
        conv = self.input_to_state
        taps = (conv.weight * conv.mask).squeeze(2).permute(2, 1, 0)  # (k//2 + 1, h, 4h)
        weight = torch.cat([taps.flatten(0, 1), conv.bias[None], self.state_weight])
        return weight * self.scale

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.run(x)[0]

    def run(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The layer's output on rows x (B, h, rows, W) and its LSTM state (h, c) after the last
        row, starting from `state`, the state after the row above them (zeros at the top)."""
        b, _, height, width = x.shape
        x_last = x.permute(0, 2, 3, 1)  # channels last
        # Each pixel's row window [pixel - k//2, ..., pixel] and a one for the bias.
        window = [
            F.pad(x_last, (0, 0, s, 0))[:, :, :width]
            for s in range(self.input_to_state.half, 0, -1)
        ]
        inputs = torch.cat([*window, x_last, torch.ones_like(x_last[..., :1])], dim=3)
        weight = self.step_weight()
        if state is None:
            state = (x.new_zeros(b, width, self.hidden), x.new_zeros(b, width, self.hidden))
        h, c = state
        rows = []
        # unbind, not indexing: its backward stacks the row gradients instead of filling a
        # zero map per row.
        for row in inputs.unbind(1):
            left = F.pad(h, (0, 0, 1, 0))[:, :width]
            right = F.pad(h, (0, 0, 0, 1))[:, 1:]
            gates = torch.cat([row, left, h, right], dim=2) @ weight
            h, c = _lstm_cell(gates, c, self.data_channels, dim=2)
            rows.append(h)
        hs = torch.stack(rows, dim=1).permute(0, 3, 1, 2)  # (B, h, H, W)
        return x + self.out(self.dropout(hs)), (h, c)


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
        self.state_weight = _uniform(2, 2 * hidden, 4 * hidden)
        self.register_buffer("scale", _candidate_scale(hidden, data_channels), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.out = MaskedConv2d(hidden, hidden, 1, "B", data_channels)
        _forget_bias(self.input_left, hidden, data_channels)
        _forget_bias(self.input_right, hidden, data_channels)

    def step_weight(self) -> torch.Tensor:
        """Per direction, the (3h + C + 1, 4h) matrix of a column step.

        Rows: [input, image, bias, state of the row above, state of the same row]; the bias row
        multiplies a channel of ones; the left-to-right direction does not read the image.
        """
        c = self.data_channels
        left = [_matrix(self.input_left), self.state_weight.new_zeros(c, 4 * self.hidden)]
        right = [_matrix(self.input_right), _matrix(self.image_right)]
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
            h, c = _lstm_cell(gates, c, self.data_channels, dim=3)
            columns.append(h)
        out = torch.stack(columns, dim=3).view(2 * b, height, -1, hd)
        out = unskew(out, width).view(2, b, height, width, hd).permute(0, 1, 4, 2, 3)
        left, right = out[0], out[1].flip(3)  # (B, h, H, W) each
        # The right-to-left state at (i, j) has seen pixels (i, >= j): shifting it down one row
        # leaves only rows above.
        return x + self.out(self.dropout(left + shift_down(right)))


class _PixelRNN(AutoregressiveModel):
    def __init__(self, cfg: PixelRNNConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        c, hd, lv = meta.channels, cfg.hidden, meta.levels
        require(
            hd % c == 0,
            f"{self.name}.hidden={hd} must be a multiple of {c} for {c}-channel data",
        )
        self.first = MaskedConv2d(c, hd, cfg.first_kernel, "A", c)
        self.layers = nn.ModuleList(self.make_layer(cfg, c) for _ in range(cfg.layers))
        self.head = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(hd, hd, 1, "B", c),
            nn.ReLU(),
            MaskedConv2d(hd, c * lv, 1, "B", c),
        )

    def make_layer(self, cfg: PixelRNNConfig, data_channels: int) -> nn.Module:
        raise NotImplementedError

    def forward(self, u: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = u.shape
        z = self.first(u)
        for layer in self.layers:
            z = layer(z, u)
        return self.head(z).view(b, c, self.meta.levels, h, w)


class RowLSTM(_PixelRNN):
    """PixelRNN with Row LSTM layers."""

    name = "pixelrnn_row"
    Config = RowLSTMConfig

    def make_layer(self, cfg: RowLSTMConfig, data_channels: int) -> nn.Module:
        return RowLSTMLayer(cfg.hidden, cfg.kernel, data_channels, cfg.dropout)

    # Sampling row i: the LSTM states after row i - 1 do not change while row i is drawn, so
    # they are computed once per row, and each subpixel runs one row step per layer.
    def row_context(self, above: torch.Tensor, y: torch.Tensor | None) -> RowContext:
        """The image rows above the next row that the first layer reads, and every layer's
        LSTM state after the row above (None at the top: zeros)."""
        u = to_unit(above, self.meta.levels)
        reach = self.first.kernel_size[0] // 2
        if above.shape[2] == 0:
            return u, [None] * len(self.layers)
        z, states = self.first(u), []
        for layer in self.layers:
            z, state = layer.run(z)
            states.append(state)
        return u[:, :, max(0, u.shape[2] - reach) :], states

    def row_logits(
        self, top: torch.Tensor, context: RowContext, y: torch.Tensor | None
    ) -> torch.Tensor:
        above, states = context
        z = self.first(torch.cat([above, to_unit(top[:, :, -1:], self.meta.levels)], dim=2))
        z = z[:, :, -1:]
        for layer, state in zip(self.layers, states, strict=True):
            z = layer.run(z, state)[0]
        b, _, _, w = z.shape
        return self.head(z).view(b, self.meta.channels, self.meta.levels, w)


class DiagonalBiLSTM(_PixelRNN):
    """PixelRNN with Diagonal BiLSTM layers."""

    name = "pixelrnn_diag"
    Config = DiagonalBiLSTMConfig

    def make_layer(self, cfg: DiagonalBiLSTMConfig, data_channels: int) -> nn.Module:
        return DiagonalBiLSTMLayer(cfg.hidden, data_channels, cfg.dropout)
