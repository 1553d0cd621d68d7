"""Autoregressive masks: a PixelCNN output never depends on the pixel it predicts or later ones."""

from __future__ import annotations

import pytest
import torch

from gen.data import DataMeta, to_unit
from gen.models.pixelcnn import PixelCNN, PixelCNNConfig
from gen.nn import MaskedConv2d, channel_groups


def pixelcnn(channels: int, size: int = 6, levels: int = 5) -> PixelCNN:
    torch.manual_seed(0)
    meta = DataMeta("tiny", channels, size, size, levels=levels, n_classes=1)
    cfg = PixelCNNConfig(channels=4 * channels, layers=2, first_kernel=5)
    return PixelCNN(cfg, meta).eval()


def input_gradients(model: PixelCNN, inputs: int = 4) -> tuple[torch.Tensor, list]:
    """|d(output logits of (c, i, j)) / d(input)| for every target (c, i, j) in raster order.

    The network runs on floats (the scale of `to_unit(x)`) so that the input can require grad;
    each target gets its own copies of `inputs` random images, so one backward pass gives every
    gradient: row t of the result is target t's, summed over the random images (one image alone
    can leave a real dependence at zero through dead ReLUs).
    """
    c, h, w = model.meta.shape
    levels = model.meta.levels
    targets = [(k, i, j) for i in range(h) for j in range(w) for k in range(c)]
    g = torch.Generator().manual_seed(1)
    x = to_unit(torch.randint(0, levels, (inputs, c, h, w), generator=g), levels)
    x = x.repeat(len(targets), 1, 1, 1).requires_grad_(True)  # target t owns rows t*inputs...
    logits = model.net(x).view(len(targets), inputs, c, levels, h, w)
    weights = torch.randn(levels, generator=g)  # a random projection of each logit vector
    picked = [logits[t, :, k, :, i, j] @ weights for t, (k, i, j) in enumerate(targets)]
    torch.cat(picked).sum().backward()
    grads = x.grad.view(len(targets), inputs, c, h, w).abs().sum(1)
    return grads, targets


@pytest.mark.parametrize("channels", [1, 3])
def test_pixelcnn_output_ignores_current_and_later_pixels(channels):
    grads, targets = input_gradients(pixelcnn(channels))
    _, h, w = grads.shape[1:]
    for t, (k, i, j) in enumerate(targets):
        g = grads[t]  # (C, H, W)
        position = i * w + j
        later = g.flatten(1)[:, position + 1 :]
        assert torch.count_nonzero(later) == 0, f"channel {k} at ({i}, {j}) sees a later pixel"
        assert torch.count_nonzero(g[k:, i, j]) == 0, f"channel {k} at ({i}, {j}) sees itself"
        if (k, i, j) != (0, 0, 0):
            earlier = torch.cat([g.flatten(1)[:, :position].flatten(), g[:k, i, j]])
            assert torch.count_nonzero(earlier) > 0, f"channel {k} at ({i}, {j}) sees nothing"


def test_pixelcnn_colour_channel_depends_on_earlier_channels_of_the_same_pixel():
    grads, targets = input_gradients(pixelcnn(3))
    for t, (k, i, j) in enumerate(targets):
        if k > 0:
            assert grads[t, k - 1, i, j] > 0, f"channel {k} at ({i}, {j}) ignores {k - 1}"


def test_pixelcnn_logits_unchanged_when_current_and_later_pixels_change():
    model = pixelcnn(1, size=5)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, model.meta.levels, (1, *model.meta.shape), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        base = model.logits(x)
        for i in range(5):
            for j in range(5):
                y = x.clone().flatten()
                y[i * 5 + j :] = torch.randint(0, model.meta.levels, (25 - i * 5 - j,), generator=g)
                changed = model.logits(y.view_as(x))
                assert torch.equal(changed[..., i, j], base[..., i, j]), (i, j)


# --------------------------------------------------------------------------- MaskedConv2d
def test_mask_a_hides_the_centre_and_mask_b_shows_it_for_one_channel_data():
    a = MaskedConv2d(1, 2, 3, "A").mask
    b = MaskedConv2d(1, 2, 3, "B").mask
    above_and_left = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.float)
    assert torch.equal(a[0, 0], above_and_left)
    centre = above_and_left.clone()
    centre[1, 1] = 1
    assert torch.equal(b[0, 0], centre)


def test_mask_centre_lets_colour_group_see_earlier_groups_a_strictly_b_inclusively():
    a = MaskedConv2d(3, 6, 3, "A", data_channels=3).mask[:, :, 1, 1]
    b = MaskedConv2d(3, 6, 3, "B", data_channels=3).mask[:, :, 1, 1]
    out_group = torch.tensor([0, 0, 1, 1, 2, 2])[:, None]
    in_group = torch.tensor([0, 1, 2])[None, :]
    assert torch.equal(a, (in_group < out_group).float())
    assert torch.equal(b, (in_group <= out_group).float())


def test_masked_conv_output_at_a_pixel_ignores_that_pixel_under_mask_a_only():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    for mask, sees_centre in (("A", False), ("B", True)):
        conv = MaskedConv2d(1, 1, 3, mask)
        with torch.no_grad():
            conv.weight.fill_(1.0)
            conv.bias.zero_()
            y = conv(x)[0, 0]
        assert (y[2, 2] != 0) == sees_centre
        # The pixel influences only outputs after it in raster order (and itself under B).
        influenced = [(i, j) for i in range(5) for j in range(5) if y[i, j] != 0]
        assert all((i, j) >= (2, 2) for i, j in influenced)


def test_channel_groups_are_contiguous_and_equal():
    assert channel_groups(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    assert channel_groups(4, 1).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kernel_size": 3, "mask": "C"}, "mask"),
        ({"kernel_size": 4, "mask": "A"}, "odd"),
        ({"kernel_size": 2, "mask": "B"}, "odd"),
    ],
)
def test_masked_conv_rejects_unknown_mask_and_even_kernel(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskedConv2d(1, 4, **kwargs)
