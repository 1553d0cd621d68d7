"""Autoregressive sampling shortcuts draw exactly the images of the slow whole-image loop.

`sample` computes, for every subpixel, only the row it is on (beside context computed once per
row: the rows above within the network's reach, or LSTM states); `_sample(..., whole_image=True)`
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
