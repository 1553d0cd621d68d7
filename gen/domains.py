"""Image domains for translation models: typeset digits rendered from matplotlib's fonts beside
the handwritten ones, and the user layouts (CycleGAN `trainA/ trainB/ testA/ testB/`, a folder
per domain, or an attribute CSV).

Typeset digits are made the way the scikit-learn digits were: a 32x32 (4x the target size)
binary bitmap whose 4x4 blocks are counted, so both domains have the same size and levels and
differ only in how the digits were drawn.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gen.image_files import image_files, read_image
from gen.user_files import read_text

# Typeset styles -> matplotlib font files: several families and weights per style.
TYPESET_STYLES = {
    "typeset": (
        "DejaVuSans.ttf",
        "DejaVuSans-Bold.ttf",
        "DejaVuSansMono.ttf",
        "DejaVuSerif.ttf",
        "DejaVuSerif-Bold.ttf",
        "STIXGeneral.ttf",
        "STIXGeneralBol.ttf",
        "cmr10.ttf",
        "cmss10.ttf",
        "cmtt10.ttf",
    ),
    "sans": ("DejaVuSans.ttf", "DejaVuSansMono.ttf", "cmss10.ttf", "DejaVuSans-Oblique.ttf"),
    "serif": ("DejaVuSerif.ttf", "STIXGeneral.ttf", "cmr10.ttf", "DejaVuSerif-Italic.ttf"),
    "bold": ("DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneralBol.ttf", "cmb10.ttf"),
}


class DomainError(RuntimeError):
    """Domain images are missing or laid out in a way this loader does not know."""


@dataclass
class Domains:
    """Images of several domains with their class labels and domain ids; `names[d]` names d."""

    train_x: torch.Tensor  # uint8 (N, C, H, W) in the main data set's levels
    train_y: torch.Tensor  # int64 class labels (0 where a layout has none)
    train_d: torch.Tensor  # int64 domain ids
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_d: torch.Tensor
    names: list[str]

    def tensors(self) -> dict[str, torch.Tensor]:
        keys = ("train_x", "train_y", "train_d", "test_x", "test_y", "test_d")
        return {k: getattr(self, k) for k in keys}


def font_path(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name


def _glyphs(fonts: tuple[str, ...], px: int = 96) -> dict[tuple[int, int], np.ndarray]:
    """Each digit in each font, rendered large and cropped to its ink: (font, digit) -> bool map."""
    from PIL import Image, ImageDraw, ImageFont

    out = {}
    for f, name in enumerate(fonts):
        font = ImageFont.truetype(str(font_path(name)), px)
        for digit in range(10):
            img = Image.new("L", (2 * px, 2 * px), 0)
            ImageDraw.Draw(img).text((px // 2, px // 4), str(digit), fill=255, font=font)
            a = np.asarray(img) > 127
            rows, cols = np.nonzero(a)
            out[f, digit] = a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return out


def render_typeset(
    labels: torch.Tensor,
    size: int,
    levels: int,
    channels: int = 1,
    style: str = "typeset",
    seed: int = 0,
) -> torch.Tensor:
    """Digits `labels` typeset in a random font of `style`, with a small random rotation, shear,
    scale and shift; uint8 (N, channels, size, size) in `levels` levels."""
    from PIL import Image

    fonts = TYPESET_STYLES[style]
    glyphs = _glyphs(fonts)
    rng = np.random.default_rng(seed)
    big = 4 * size
    out = np.zeros((len(labels), size, size), dtype=np.float64)
    for i, digit in enumerate(labels.tolist()):
        glyph = glyphs[int(rng.integers(len(fonts))), digit]
        g = Image.fromarray((glyph * 255).astype(np.uint8))
        angle = rng.uniform(-8, 8)
        shear = rng.uniform(-0.15, 0.15)
        g = g.transform(
            g.size, Image.AFFINE, (1, shear, -shear * g.size[1] / 2, 0, 1, 0), Image.BILINEAR
        )
        g = g.rotate(angle, resample=Image.BILINEAR, expand=True)
        a = np.asarray(g) > 127
        rows, cols = np.nonzero(a)
        if len(rows):
            a = a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        # Fit the glyph's height to 80-100% of the box, keeping its aspect ratio.
        h = big * rng.uniform(0.8, 1.0)
        scale = min(h / a.shape[0], big / a.shape[1])
        th, tw = max(1, round(a.shape[0] * scale)), max(1, round(a.shape[1] * scale))
        g = Image.fromarray((a * 255).astype(np.uint8)).resize((tw, th), Image.BILINEAR)
        canvas = np.zeros((big, big), dtype=bool)
        top = int(np.clip((big - th) // 2 + rng.integers(-1, 2), 0, big - th))
        left = int(np.clip((big - tw) // 2 + rng.integers(-1, 2), 0, big - tw))
        canvas[top : top + th, left : left + tw] = np.asarray(g) > 127
        counts = canvas.reshape(size, 4, size, 4).sum((1, 3))  # 0..16 per block
        out[i] = counts
    x = np.rint(out / 16 * (levels - 1)).astype(np.uint8)
    return torch.from_numpy(x)[:, None].repeat(1, channels, 1, 1)


def typeset_domains(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    levels: int,
    styles: list[str],
    seed: int = 0,
) -> Domains:
    """The given (handwritten) images as domain 0 and, for each style, typeset digits with the
    same labels (a fresh rendering, unpaired: its own fonts and jitter per image)."""
    c, h, _ = train_x.shape[1:]
    xs, ys, ds = [train_x], [train_y], [torch.zeros_like(train_y)]
    txs, tys, tds = [test_x], [test_y], [torch.zeros_like(test_y)]
    for d, style in enumerate(styles, start=1):
        xs.append(render_typeset(train_y, h, levels, c, style, seed=seed + 2 * d))
        txs.append(render_typeset(test_y, h, levels, c, style, seed=seed + 2 * d + 1))
        ys.append(train_y)
        tys.append(test_y)
        ds.append(torch.full_like(train_y, d))
        tds.append(torch.full_like(test_y, d))
    return Domains(
        torch.cat(xs),
        torch.cat(ys),
        torch.cat(ds),
        torch.cat(txs),
        torch.cat(tys),
        torch.cat(tds),
        ["handwritten", *styles],
    )


# ------------------------------------------------------------------------------ user layouts
def _read(files: list[Path], size: int, channels: int, levels: int) -> torch.Tensor:
    """The images at the main data's size, channels and levels."""
    xs = []
    for p in files:
        a = read_image(p, size, channels, DomainError).astype(np.float64)
        xs.append(np.rint(a / 255 * (levels - 1)).astype(np.uint8))
    return torch.from_numpy(np.stack(xs))


def _assemble(
    train: list[tuple[Path, int]],
    test: list[tuple[Path, int]],
    names: list[str],
    size: int,
    channels: int,
    levels: int,
) -> Domains:
    def part(rows: list[tuple[Path, int]]):
        x = _read([p for p, _ in rows], size, channels, levels)
        d = torch.tensor([d for _, d in rows], dtype=torch.long)
        return x, torch.zeros_like(d), d

    return Domains(*part(train), *part(test), names=names)


def _split(rows: list[tuple[Path, int]], test_fraction: float):
    from sklearn.model_selection import train_test_split

    if len(rows) < 2:
        raise DomainError(f"domain data holds {len(rows)} images; it needs at least 2")
    labels = [d for _, d in rows]
    stratify = labels if min(labels.count(d) for d in set(labels)) >= 2 else None
    tr, te = train_test_split(rows, test_size=test_fraction, random_state=0, stratify=stratify)
    return tr, te


def cyclegan_folder(root: Path, size: int, channels: int, levels: int) -> Domains:
    """CycleGAN's layout: trainA/ trainB/ testA/ testB/ under `root`; domains "A" and "B"."""
    root = Path(root)
    parts = {}
    for sub in ("trainA", "trainB", "testA", "testB"):
        files = image_files(root / sub) if (root / sub).is_dir() else []
        if not files:
            raise DomainError(
                f"CycleGAN folder '{root}' needs images in trainA/, trainB/, testA/ and testB/; "
                f"'{sub}/' has none"
            )
        parts[sub] = files
    train = [(p, 0) for p in parts["trainA"]] + [(p, 1) for p in parts["trainB"]]
    test = [(p, 0) for p in parts["testA"]] + [(p, 1) for p in parts["testB"]]
    return _assemble(train, test, ["A", "B"], size, channels, levels)


def domain_folders(
    root: Path, size: int, channels: int, levels: int, test_fraction: float
) -> Domains:
    """A sub-folder of images per domain (the folder name is the domain's name)."""
    root = Path(root)
    if not root.is_dir():
        raise DomainError(f"domain folder '{root}' not found; set data.domains_root")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and image_files(p))
    if len(names) < 2:
        raise DomainError(
            f"domain folder '{root}' needs at least 2 sub-folders of images (one per domain); "
            f"found {len(names)}"
        )
    rows = [(p, d) for d, n in enumerate(names) for p in image_files(root / n)]
    return _assemble(*_split(rows, test_fraction), names, size, channels, levels)


def attribute_csv(
    root: Path, size: int, channels: int, levels: int, test_fraction: float
) -> Domains:
    """`root/attributes.csv`: a `file` column (relative to root) and one 0/1 column per domain;
    each image is in exactly one domain (e.g. black / blond / brown hair)."""
    root = Path(root)
    path = root / "attributes.csv"
    if not path.is_file():
        raise DomainError(f"attribute file '{path}' not found; set data.domains_root")
    text = read_text(path, "attribute file", "a UTF-8 CSV file with a 'file' column")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = reader.fieldnames or []
    if "file" not in fields or len(fields) < 3:
        raise DomainError(
            f"'{path}' needs a 'file' column and at least 2 attribute columns; has {fields}"
        )
    names = [c for c in fields if c != "file"]
    rows = []
    for n, row in enumerate(reader, start=2):
        try:
            flags = [int(float(row[c])) for c in names]
        except (TypeError, ValueError):
            raise DomainError(f"{path}:{n}: attribute values must be 0 or 1") from None
        if sorted(set(flags)) != [0, 1] or sum(flags) != 1:
            raise DomainError(f"{path}:{n}: an image needs exactly one attribute set to 1")
        p = root / (row["file"] or "")  # a short row has no file
        if not p.is_file():
            raise DomainError(f"{path}:{n}: image '{p}' not found")
        rows.append((p, flags.index(1)))
    return _assemble(*_split(rows, test_fraction), names, size, channels, levels)
