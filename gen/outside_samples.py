"""Samples made elsewhere -> uint8 images in a protocol's shape and levels, by one stated rule.

Read: a folder of PNG / JPEG files (.png, .jpg, .jpeg; in file-name order; other files and
sub-folders are ignored), or one array in a .npy / .npz file, shaped (N, H, W) or (N, H, W, C).
Only the first `n` images are read and scored (the protocol's sample count); fewer is an error.

The rule, the same for every source:
- intensity: 8-bit values v (PNG / JPEG, uint8 or integer arrays in 0..255) mean v / 255;
  floating arrays must already be in [0, 1] (NaN and inf refused); an intensity x becomes the
  level round(x * (levels - 1)). This inverts `gen.metrics.to_rgb8`, so genbench's own images
  written as 8-bit files come back as the same levels.
- channels: a 1-channel protocol takes grayscale, or RGB whose three channels are equal (a gray
  image saved as RGB); a 3-channel protocol takes RGB, or grayscale repeated into three
  channels (as `to_rgb8` does). Alpha, 16-bit files, colour for a gray protocol and any other
  channel count are refused, never converted.
- size: it must be the protocol's height x width. With `resize`, each channel is resized as
  32-bit floats with PIL's anti-aliased bicubic filter (Image.BICUBIC, no reducing_gap), as
  clean-fid does (other resizers move FID by points), then clipped to the intensity range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gen.data import DataMeta

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".npz")
MODES = {"L": 1, "1": 1, "RGB": 3, "P": 3}  # PIL modes read (bilevel as L, palette as RGB)


class SampleError(RuntimeError):
    """Samples that cannot be brought to the protocol's shape and levels; names file or shape."""


def read_samples(path: Path, meta: DataMeta, n: int, resize: bool = False) -> torch.Tensor:
    """The first `n` images at `path` (a folder or an array file) as uint8 (n, C, H, W) in
    `meta`'s levels."""
    path = Path(path)
    if path.is_dir():
        images, full, name = _read_folder(path, n), 255.0, None
    elif path.suffix.lower() in ARRAY_SUFFIXES and path.is_file():
        images, full = _read_array(path, n)
        name = f"{path} (shape {tuple(images.shape)})"
    elif path.exists():
        raise SampleError(
            f"'{path}' is neither a folder of PNG/JPEG images nor a .npy/.npz array file"
        )
    else:
        raise SampleError(f"'{path}' does not exist")
    return to_levels(images, full, meta, resize, name or str(path))


def _read_folder(folder: Path, n: int) -> np.ndarray:
    """(n, H, W, C) uint8 from the folder's first `n` image files; all of one size and mode."""
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    files = [f for f in files if f.is_file()]
    if not files:
        raise SampleError(f"folder '{folder}' holds no PNG or JPEG images (.png, .jpg, .jpeg)")
    if len(files) < n:
        raise SampleError(
            f"folder '{folder}' holds {len(files)} images; the protocol scores {n} (eval.n_samples)"
        )
    images = [_read_image(f) for f in files[:n]]
    first = images[0]
    for f, x in zip(files[:n], images, strict=True):
        if x.shape != first.shape:
            raise SampleError(
                f"'{f}' is {_describe(x)} but '{files[0]}' is {_describe(first)}: every image "
                "must have one size and channel count"
            )
    return np.stack(images)


def _describe(x: np.ndarray) -> str:
    return f"{x.shape[1]}x{x.shape[0]} with {x.shape[2]} channel(s)"


def _read_image(path: Path) -> np.ndarray:
    """One 8-bit image as (H, W, C) uint8: grayscale C=1, RGB C=3."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if img.format == "PNG" and _png_bit_depth(path) > 8:
                raise SampleError(
                    f"'{path}' is a {_png_bit_depth(path)}-bit PNG; save 8-bit images"
                )
            if mode not in MODES or (mode == "P" and "transparency" in img.info):
                alpha = "A" in mode or "transparency" in img.info
                why = "has an alpha channel" if alpha else "is not 8-bit grayscale or RGB"
                raise SampleError(
                    f"'{path}' {why} (PIL mode {mode}); save 8-bit grayscale (L) or RGB images"
                )
            img = img.convert("L" if MODES[mode] == 1 else "RGB")
            x = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SampleError(
            f"'{path}' cannot be read as an image ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:80]})"
        ) from None
    return x[:, :, None] if x.ndim == 2 else x


def _png_bit_depth(path: Path) -> int:
    """The bit depth a PNG declares (its IHDR chunk, byte 24): PIL reads 16-bit RGB as 8-bit."""
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 else 8


def _read_array(path: Path, n: int) -> tuple[np.ndarray, float]:
    """(n, H, W, C) from a .npy / .npz holding one array, and its full intensity (255 or 1)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise SampleError(
            f"'{path}' cannot be read as a NumPy array ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:80]})"
        ) from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if len(names) != 1:
                raise SampleError(
                    f"'{path}' holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                    "save exactly one, shaped (N, H, W) or (N, H, W, C)"
                )
            x = loaded[names[0]]
    else:
        x = loaded
    shape = x.shape
    if x.ndim not in (3, 4):
        raise SampleError(
            f"'{path}' holds an array of shape {shape}; expected (N, H, W) or (N, H, W, C)"
        )
    if len(x) < n:
        raise SampleError(
            f"'{path}' holds {len(x)} images (shape {shape}); the protocol scores {n} "
            "(eval.n_samples)"
        )
    x = np.ascontiguousarray(x[:n] if x.ndim == 4 else x[:n, :, :, None])
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise SampleError(f"'{path}' (shape {shape}) has NaN or infinite values")
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 1:
            raise SampleError(
                f"'{path}' has floats in [{low:g}, {high:g}]; floating images must be in [0, 1]"
            )
        return x.astype(np.float64), 1.0
    if np.issubdtype(x.dtype, np.integer) and x.dtype != np.bool_:
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > 255:
            raise SampleError(
                f"'{path}' has {x.dtype} values in [{low}, {high}]; integer images must be "
                "8-bit (0..255)"
            )
        return x.astype(np.uint8), 255.0
    raise SampleError(f"'{path}' has dtype {x.dtype}; use uint8 (0..255) or floats in [0, 1]")


def to_levels(
    images: np.ndarray, full: float, meta: DataMeta, resize: bool, name: str
) -> torch.Tensor:
    """(N, H, W, C) intensities in [0, full] -> uint8 (N, C, H, W) in `meta`'s levels, by the
    module's rule (channels, then size, then levels)."""
    c = images.shape[3]
    if c not in (1, 3):
        raise SampleError(
            f"{name}: {c} channels; the protocol's images have {meta.channels} (grayscale 1 "
            "or RGB 3, without alpha)"
        )
    if meta.channels == 1 and c == 3:
        gray = (images[..., 0] == images[..., 1]) & (images[..., 1] == images[..., 2])
        if not gray.all():
            raise SampleError(
                f"{name}: colour images, but the protocol's are grayscale; only RGB images "
                "whose three channels are equal are read as grayscale"
            )
        images = images[..., :1]
    elif meta.channels == 3 and c == 1:
        images = np.repeat(images, 3, axis=3)
    elif meta.channels != c:
        raise SampleError(f"{name}: {c} channels; the protocol's images have {meta.channels}")
    h, w = images.shape[1:3]
    if (h, w) != (meta.height, meta.width):
        if not resize:
            raise SampleError(
                f"{name}: images are {w}x{h}, the protocol's are {meta.width}x{meta.height}; "
                "pass --resize to resize them (PIL bicubic, anti-aliased)"
            )
        images = _resize(images, meta.height, meta.width, full)
    levels = np.rint(images.astype(np.float64) * ((meta.levels - 1) / full))
    levels = np.clip(levels, 0, meta.levels - 1).astype(np.uint8)
    # Standard (N, C, H, W) strides: a 1-channel transpose looks channels-last to torch, whose
    # convolutions then take another kernel and move the ruler's features by rounding.
    nchw = torch.from_numpy(levels).permute(0, 3, 1, 2)
    return nchw.clone(memory_format=torch.contiguous_format)


def _resize(images: np.ndarray, height: int, width: int, full: float) -> np.ndarray:
    """Each channel of each image as 32-bit floats through PIL's bicubic resize, clipped."""
    from PIL import Image

    out = np.empty((len(images), height, width, images.shape[3]), dtype=np.float32)
    for i, image in enumerate(images):
        for ch in range(images.shape[3]):
            plane = Image.fromarray(image[:, :, ch].astype(np.float32))  # mode F
            out[i, :, :, ch] = np.asarray(plane.resize((width, height), Image.BICUBIC))
    return np.clip(out, 0, full)
