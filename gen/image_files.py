"""Image files on disk (an image folder, domain folders): which files count as images, and how
one is read, so every layout reads its images the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def image_files(folder: Path) -> list[Path]:
    """The image files under `folder`, at any depth, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)


def read_image(path: Path, size: int, channels: int, error: type[Exception]) -> np.ndarray:
    """Image `path` as uint8 (channels, size, size): grey for 1 channel, else RGB, resized
    bilinearly. A file PIL cannot read raises `error` (the caller's data error) naming it."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as opened:
            img = opened.convert(mode).resize((size, size), Image.BILINEAR)
    # PIL says "not an image" in several ways: OSError (truncated, unknown format), SyntaxError
    # and ValueError (broken headers), DecompressionBombError (a size meant to exhaust memory).
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        text = " ".join(str(exc).split())[:120]
        raise error(f"cannot read image '{path}' ({type(exc).__name__}: {text})") from None
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
