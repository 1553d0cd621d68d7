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


@torch.no_grad()
def interpolation(model, pairs: int, steps: int, generator: torch.Generator | None = None):
    """Decode straight lines between pairs of prior samples: rows are pairs, columns are steps."""
    z = model.sample_latent(2 * pairs, generator=generator)
    a, b = z[:pairs], z[pairs:]
    t = torch.linspace(0, 1, steps, device=z.device).view(1, steps, *([1] * (z.dim() - 1)))
    path = a.unsqueeze(1) * (1 - t) + b.unsqueeze(1) * t  # (pairs, steps, ...)
    return model.decode_latent(path.reshape(pairs * steps, *z.shape[1:])).cpu()


def scatter_codes(codes: torch.Tensor, prior: torch.Tensor, path: Path) -> Path:
    """First two latent dimensions of the encoder's codes over samples of the prior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    p, c = prior.reshape(len(prior), -1), codes.reshape(len(codes), -1)
    ax.scatter(p[:, 0], p[:, 1] if p.shape[1] > 1 else p[:, 0] * 0, s=4, alpha=0.4, label="prior")
    ax.scatter(c[:, 0], c[:, 1] if c.shape[1] > 1 else c[:, 0] * 0, s=4, alpha=0.6, label="codes")
    dims = "dims 1-2" if c.shape[1] > 2 else "2-D latent" if c.shape[1] == 2 else "1-D latent"
    ax.set_title(f"codes vs prior ({dims})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def labelled_rows(rows: list[torch.Tensor], labels: list[str], levels: int, path: Path) -> Path:
    """One strip of images per row with its label on the left (inputs beside outputs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(len(r) for r in rows)
    h, w = rows[0].shape[-2:]
    label_inches = 0.3 + 0.065 * max(len(label) for label in labels)  # 8 pt text
    fig, axes = plt.subplots(
        len(rows),
        1,
        figsize=(label_inches + 0.45 * width * w / h, 0.5 * len(rows) + 0.2),
        squeeze=False,
    )
    for ax, row, label in zip(axes[:, 0], rows, labels, strict=True):
        arr = grid_array(row, levels, nrow=len(row))
        ax.imshow(arr, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_anchor("W")  # images start right after the label, whatever the aspect
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.tight_layout(pad=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
