"""Autoregressive sampling shortcuts draw exactly the images of the slow whole-image loop.

`sample` computes, for every subpixel, only the row it is on, or for the Diagonal BiLSTM only its
pixel (beside context computed once per row: the rows above within the network's reach, or LSTM
states carried down from the row above); `_sample(..., whole_image=True)`
recomputes the logits of the whole image for every subpixel. Both read the same uniform numbers,
so equal logits give equal images.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pytest
import torch
from conftest import gen

import gen as gen_package
from gen.data import DataMeta
from gen.nn import categorical_from_uniform
from gen.registry import build

# PixelCNN's reach (rows above that its stack reads) is first_kernel // 2 + layers: 3 here, so
# 8x8 images exercise the crop at the top of the rows it reads; 7x7 + 4 layers reaches 7 rows.
CASES = [
    ("pixelcnn", {"channels": 12, "layers": 2, "first_kernel": 3}),
    ("pixelcnn", {"channels": 24, "layers": 4, "first_kernel": 7}),
    ("pixelrnn_row", {"hidden": 12, "layers": 2, "first_kernel": 3}),
    ("pixelrnn_diag", {"hidden": 12, "layers": 1, "first_kernel": 3}),
    ("gated_pixelcnn", {"channels": 12, "layers": 2}),
]


def net(name: str, cfg: dict, channels: int, levels: int):
    torch.manual_seed(0)
    meta = DataMeta("tiny", channels, 8, 8, levels=levels, n_classes=3)
    return build(name, cfg, meta).eval()


@pytest.mark.parametrize("channels, levels", [(1, 2), (1, 17), (3, 5), (3, 256)])
@pytest.mark.parametrize("name, cfg", CASES)
def test_fast_sampling_draws_exactly_the_images_of_the_whole_image_loop(
    name, cfg, channels, levels
):
    model = net(name, cfg, channels, levels)
    fast = model.sample(6, gen(1))
    slow = model._sample(6, gen(1), None, whole_image=True)
    assert fast.dtype == torch.uint8 and fast.shape == (6, channels, 8, 8)
    assert torch.equal(fast, slow)
    assert len(fast.unique()) > 1, "a degenerate draw would hide a wrong context"


# The Diagonal BiLSTM carries its LSTM states from pixel to pixel and from row to row, and reads
# a window of the image for its first layer: sizes where that window is cut on every side.
def diagonal(channels: int, height: int, width: int, levels: int):
    torch.manual_seed(0)
    meta = DataMeta("tiny", channels, height, width, levels=levels, n_classes=3)
    cfg = {"hidden": 6, "layers": 2, "first_kernel": 7}
    return build("pixelrnn_diag", cfg, meta).eval()


@pytest.mark.parametrize("channels, height, width", [(1, 5, 9), (3, 7, 4), (3, 1, 6), (1, 6, 1)])
def test_diagonal_bilstm_draws_the_whole_image_loops_images_on_non_square_images(
    channels, height, width
):
    model = diagonal(channels, height, width, levels=7)
    fast = model.sample(4, gen(2))
    assert torch.equal(fast, model._sample(4, gen(2), None, whole_image=True))
    assert len(fast.unique()) > 1


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_diagonal_bilstm_images_at_full_size_are_what_the_whole_image_loop_would_draw(
    channels, size
):
    """The whole-image loop is too slow here, so it is checked in one pass: it draws subpixel s
    from the logits of the image drawn so far, which (causal) are the logits at s of the finished
    image, so the fast images must redraw themselves from their own logits and uniforms."""
    model = diagonal(channels, size, size, levels=256)
    x = model.sample(3, gen(4))
    u = torch.rand((size, size, channels, 3), generator=gen(4))  # what `sample` draws
    with torch.no_grad():
        logits = model.logits(x).permute(3, 4, 1, 0, 2)  # (H, W, C, B, levels), as u
    redrawn = categorical_from_uniform(logits.reshape(-1, 256), u.flatten())
    assert torch.equal(redrawn.view(u.shape).permute(3, 2, 0, 1), x.long())
    assert len(x.unique()) > 100


@pytest.mark.parametrize("channels", [1, 3])
def test_diagonal_bilstm_pixel_logits_match_the_whole_image_at_28x28(channels):
    model = diagonal(channels, 28, 28, levels=256)
    x = torch.randint(0, 256, (2, channels, 28, 28), generator=gen(3), dtype=torch.uint8)
    context = None
    with torch.no_grad():
        full = model.logits(x)
        for i in range(28):
            context = model.row_context(x[:, :, :i], None, context)
            for j in range(28):
                pixel = model.pixel_logits(x[:, :, : i + 1], context, j, None)
                assert torch.allclose(pixel, full[..., i, j], atol=1e-5), (i, j)


def test_pixelcnn_row_logits_match_the_whole_image_even_where_the_rows_are_cropped():
    model = net("pixelcnn", CASES[0][1], 3, 5)
    x = torch.randint(0, 5, (2, 3, 8, 8), generator=gen(3), dtype=torch.uint8)
    with torch.no_grad():
        full = model.logits(x)
        for i in range(8):
            row = model.row_logits(x[:, :, : i + 1], model.row_context(x[:, :, :i], None), None)
            assert torch.allclose(row, full[..., i, :], atol=1e-6), i


def test_same_seed_same_samples_and_another_seed_other_samples():
    model = net("pixelcnn", CASES[1][1], 1, 17)
    assert torch.equal(model.sample(4, gen(0)), model.sample(4, gen(0)))
    assert not torch.equal(model.sample(4, gen(0)), model.sample(4, gen(1)))


@pytest.mark.parametrize("name, cfg", CASES)
def test_sampling_never_reads_a_tensor_back_to_the_host(name, cfg, monkeypatch):
    """No `.cpu()`, `.item()` ... per subpixel: on a GPU each one waits for the queue."""
    calls: collections.Counter = collections.Counter()
    root = str(Path(gen_package.__file__).parent)
    for attr in ("cpu", "item", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, attr)

        def counted(self, *args, _original=original, _attr=attr, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(root):
                calls[_attr] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, attr, counted)
    net(name, cfg, 1, 5).sample(2, gen(0))
    assert not calls, dict(calls)
