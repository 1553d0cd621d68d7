"""PixelRNN (van den Oord et al., 2016, "Pixel Recurrent Neural Networks"): what its two
variants share, and the Row LSTM (the Diagonal BiLSTM is in `gen.models.diagonal_bilstm`).

Both follow the paper's Table 1: a mask-A convolution on the image, residual LSTM layers whose
input-to-state convolutions use mask B, then ReLU + 1x1 mask-B convolutions to a categorical over
the data's levels for every subpixel (channels R -> G -> B within a pixel).

Row LSTM: rows are processed top to bottom, a whole row at a time. The input-to-state part is a
1 x k masked convolution along the row; the state-to-state part is a 1D convolution of width 3
over the previous row's hidden state. The receptive field is a triangle above the pixel (it
widens by one column per row up) plus the pixels to its left.
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
    split_groups,
)
from gen.nn import MaskedConv2d


@dataclass
class PixelRNNConfig(AutoregressiveConfig):
    """`dropout` is on the LSTM output, before the residual projection."""

    steps: int = 1000
    lr: float = 2e-3
    # LSTM state size = width of the residual stream (rounded up to a multiple of channels).
    hidden: int = checked(32, positive())
    layers: int = checked(2, at_least(1))  # residual LSTM layers after the first mask-A convolution


@dataclass
class RowLSTMConfig(PixelRNNConfig):
    kernel: int = checked(3, odd_at_least(3))  # width k of the 1 x k input-to-state convolution


# What Row LSTM sampling reuses within a row: the image rows above it that the first layer
# reads, and each layer's LSTM state (h, c) after the row above (None at the top).
RowContext = tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor] | None]]


def _gate_index(hidden: int, data_channels: int, gate: int) -> torch.Tensor:
    """Channel indices of LSTM gate `gate` (0 input, 1 forget, 2 output, 3 candidate) among the
    4h pre-activations, laid out in colour groups as `split_groups` reads them."""
    marker = torch.arange(4 * hidden, dtype=torch.float).view(1, -1)
    return split_groups(marker, 4, data_channels)[gate].long().flatten()


def candidate_scale(hidden: int, data_channels: int) -> torch.Tensor:
    """2 on the candidate pre-activations, 1 elsewhere: see `lstm_cell`."""
    scale = torch.ones(4 * hidden)
    scale[_gate_index(hidden, data_channels, 3)] = 2.0
    return scale


def lstm_cell(
    gates: torch.Tensor, c: torch.Tensor, data_channels: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM update from pre-activations with 4h channels along `dim`, in colour groups.

    The candidate's pre-activations arrive doubled (weights times `candidate_scale`), so that
    one sigmoid serves all four gates: tanh(a) = 2 sigmoid(2a) - 1.
    """
    i, f, o, g = split_groups(torch.sigmoid(gates), 4, data_channels, dim)
    c = torch.addcmul(f * c, i, 2 * g - 1)
    return o * torch.tanh(c), c


def forget_bias(conv: nn.Module, hidden: int, data_channels: int) -> None:
    """Start the forget gates at +1 (a common LSTM initialisation)."""
    with torch.no_grad():
        conv.bias[_gate_index(hidden, data_channels, 1)] += 1.0


def uniform_weight(*shape: int) -> nn.Parameter:
    """A weight initialised as PyTorch initialises a convolution with shape[-2] inputs."""
    bound = 1 / math.sqrt(shape[-2])
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


def conv_matrix(conv: nn.Conv2d) -> torch.Tensor:
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
        self.state_weight = uniform_weight(3 * hidden, 4 * hidden)
        self.register_buffer("scale", candidate_scale(hidden, data_channels), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.out = MaskedConv2d(hidden, hidden, 1, "B", data_channels)
        forget_bias(self.input_to_state, hidden, data_channels)

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
            h, c = lstm_cell(gates, c, self.data_channels, dim=2)
            rows.append(h)
        hs = torch.stack(rows, dim=1).permute(0, 3, 1, 2)  # (B, h, H, W)
        return x + self.out(self.dropout(hs)), (h, c)


class PixelRNN(AutoregressiveModel):
    """What both PixelRNNs share: the mask-A first convolution, the residual LSTM layers that
    `make_layer` builds, and the head."""

    def __init__(self, cfg: PixelRNNConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        c, lv = meta.channels, meta.levels
        hd = self.round_up("hidden", c)
        cfg = self.cfg
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


class RowLSTM(PixelRNN):
    """PixelRNN with Row LSTM layers."""

    name = "pixelrnn_row"
    Config = RowLSTMConfig

    def make_layer(self, cfg: RowLSTMConfig, data_channels: int) -> nn.Module:
        return RowLSTMLayer(cfg.hidden, cfg.kernel, data_channels, cfg.dropout)

    # Sampling row i: the LSTM states after row i - 1 do not change while row i is drawn, so
    # they are computed once per row, and each subpixel runs one row step per layer.
    def row_context(
        self, above: torch.Tensor, y: torch.Tensor | None, previous: object = None
    ) -> RowContext:
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
