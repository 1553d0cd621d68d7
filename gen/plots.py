"""Image grids and simple figures, written as PNG files (matplotlib's Agg backend, no display)."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def grid_array(x: torch.Tensor, levels: int, nrow: int | None = None, pad: int = 1):
    """uint8 images (N, C, H, W) in `levels` -> one uint8 array (rows*H, cols*W[, 3]) in 0..255."""
    import numpy as np

    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    canvas = np.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 255, dtype=np.uint8)
    imgs = (x.float() * (255.0 / (levels - 1))).round().clamp(0, 255).to(torch.uint8).numpy()
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, y0 : y0 + h, x0 : x0 + w] = imgs[i]
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)


def save_grid(
    x: torch.Tensor, levels: int, path: Path, nrow: int | None = None, scale: int = 4
) -> Path:
    """Save a grid of images as a PNG, upscaled by `scale` with nearest neighbour (tiny images)."""
    from PIL import Image

    arr = grid_array(x, levels, nrow)
    img = Image.fromarray(arr)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
