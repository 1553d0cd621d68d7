"""Data as every model sees it: discrete uint8 image tensors (N, C, H, W) with labels and `levels`.

Every data set is discrete so that likelihoods (bits/dim) are of the same kind of data for every
model family. `levels` is the number of intensity values: 2 (binarised), 17 (sklearn digits), 256.
Here live the `data:` section, the shapes a data set will have, and a prepared split on disk;
`gen.datasets` reads the data sets by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gen.atomic import save_tensors, write_text
from gen.config import (
    KEY_ONLY,
    WITH_VALUE,
    Rule,
    checked,
    in_open,
    one_of,
    positive,
    require,
    seed_rule,
)
from gen.domains import TYPESET_STYLES, Domains

DATASETS = ("digits", "mixture", "mnist", "fashion_mnist", "cifar10", "image_folder")
DOMAIN_SOURCES = ("typeset", "cyclegan_folder", "domain_folders", "attribute_csv", "none")
_KNOWN = ", ".join(DATASETS)  # in a rule's message
_DRAWS = positive(name="{section}.n_train and n_test")  # one message for both counts


class DataError(RuntimeError):
    """A data set cannot be loaded; the message says where its files must go."""


@dataclass
class DataConfig:
    """The `data:` section of params.yaml."""

    name: str = checked(
        "digits", Rule(lambda v: v in DATASETS, "unknown data set '{value}'; known: " + _KNOWN)
    )
    root: str = "data/raw"  # where torchvision data sets and image folders live
    binarize: bool = False  # threshold at half intensity -> levels = 2
    # Resize (image_folder, or to fit a model); None keeps native.
    image_size: int | None = checked(
        None,
        Rule(lambda v: 4 <= v <= 512, WITH_VALUE + " must be between 4 and 512 (or null)"),
    )
    # image_folder: 1 (grayscale) or 3 (RGB); default 3.
    channels: int | None = checked(
        None, Rule(lambda v: v in (1, 3), WITH_VALUE + " is not allowed; choose 1 or 3")
    )
    # digits / image_folder: stratified hold-out.
    test_fraction: float = checked(0.2, in_open(0, 1, name=KEY_ONLY))
    # Of the training split, held out for choices made while training.
    val_fraction: float = checked(0.1, in_open(0, 0.5))
    # The data's own seed (split, mixture draws, typeset renders): the ruler every run is measured
    # with, fixed apart from the training seed so that changing `seed` never changes the data.
    seed: int = checked(0, seed_rule())
    n_train: int = checked(10000, _DRAWS)  # mixture: training images drawn
    n_test: int = checked(2000, _DRAWS)  # mixture: test images drawn
    # mixture: spread of each template pixel, in intensity levels.
    mixture_sigma: float = checked(1.5, positive(name=KEY_ONLY))
    # Captions for text-to-image models: "auto" builds them from the class and measured
    # thickness / slant / size; a path names a JSON-lines file for an image folder; "none".
    captions: str = "auto"
    # Domains for translation models: typeset (the images + typeset digits in each style) |
    # cyclegan_folder | domain_folders | attribute_csv (under domains_root) | none.
    domains: str = checked("typeset", one_of(DOMAIN_SOURCES))
    domains_root: str = "data/raw/domains"
    typeset_styles: list[str] = field(default_factory=lambda: ["bold", "serif"])

    def validate(self, section: str = "data") -> None:
        for style in self.typeset_styles:
            require(
                style in TYPESET_STYLES,
                f"{section}.typeset_styles: unknown style {style!r}; known: "
                f"{', '.join(TYPESET_STYLES)}",
            )
        require(
            self.domains != "typeset" or len(self.typeset_styles) > 0,
            f"{section}.typeset_styles must name at least one style when domains is typeset",
        )
        require(
            self.captions in ("auto", "none") or self.name == "image_folder",
            f"{section}.captions={self.captions!r}: a captions file goes with data set "
            "'image_folder'; use auto or none",
        )


@dataclass
class DataMeta:
    """What a model needs to know about its data: shape and number of intensity levels."""

    name: str
    channels: int
    height: int
    width: int
    levels: int
    n_classes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dims(self) -> int:
        return self.channels * self.height * self.width

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


@dataclass
class Split:
    train_x: torch.Tensor  # uint8 (N, C, H, W), values in [0, levels)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    meta: DataMeta
    val_x: torch.Tensor | None = None  # carved from the training split: choices while training
    val_y: torch.Tensor | None = None
    train_caption: torch.Tensor | None = None  # int64 (N, L) word ids; vocab in meta.extra
    test_caption: torch.Tensor | None = None
    domains: Domains | None = None  # images of several domains, for translation models


# (channels, height, width, levels) of the named data sets before resizing / binarising.
NATIVE = {
    "digits": (1, 8, 8, 17),
    "mixture": (1, 8, 8, 17),
    "mnist": (1, 28, 28, 256),
    "fashion_mnist": (1, 28, 28, 256),
    "cifar10": (3, 32, 32, 256),
}


def expected_meta(cfg: DataConfig) -> DataMeta:
    """The shape and levels data set `cfg` will have, known without loading it."""
    if cfg.name == "image_folder":
        c, h, w, levels = cfg.channels or 3, cfg.image_size or 32, cfg.image_size or 32, 256
    else:
        c, h, w, levels = NATIVE[cfg.name]
        if cfg.image_size is not None:
            h = w = cfg.image_size
    return DataMeta(cfg.name, c, h, w, 2 if cfg.binarize else levels, n_classes=10)


def dataset_id(cfg: DataConfig) -> str:
    """A short name for the data configuration: the MLflow experiment and the report's key."""
    parts = [cfg.name]
    if cfg.binarize:
        parts.append("bin")
    if cfg.image_size is not None:
        parts.append(f"{cfg.image_size}px")
    return "-".join(parts)


def to_unit(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Discrete levels -> floats in [-1, 1], the input scale every network uses."""
    return x.float() / (levels - 1) * 2 - 1


def from_unit(y: torch.Tensor, levels: int) -> torch.Tensor:
    """Floats in [-1, 1] -> the nearest discrete level, as uint8."""
    return ((y.clamp(-1, 1) + 1) / 2 * (levels - 1)).round().to(torch.uint8)


def save_split(split: Split, folder: Path) -> None:
    """Write a prepared split: tensors in one .pt file and the metadata as JSON."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    keys = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
    keys += ("train_caption", "test_caption")
    tensors = {k: getattr(split, k) for k in keys if getattr(split, k) is not None}
    save_tensors(tensors, folder / "data.pt")  # a full disk: an OSError naming the file
    if split.domains is not None:
        save_tensors(split.domains.tensors(), folder / "domains.pt")
    write_text(folder / "meta.json", json.dumps(split.meta.__dict__, indent=2) + "\n")


def load_split(folder: Path) -> Split:
    """Read what `save_split` wrote; a missing folder is a clear error."""
    import json

    folder = Path(folder)
    if not (folder / "data.pt").exists():
        raise DataError(f"prepared data not found in '{folder}'; run `genbench prepare` first")
    try:
        tensors = torch.load(folder / "data.pt", weights_only=True)
        meta = DataMeta(**json.loads((folder / "meta.json").read_text()))
        domains = None
        if (folder / "domains.pt").exists():
            d = torch.load(folder / "domains.pt", weights_only=True)
            domains = Domains(**d, names=meta.extra["domains"])
        return Split(**tensors, meta=meta, domains=domains)
    except Exception as exc:  # truncated by a full disk, or edited: made again, not repaired
        raise DataError(
            f"prepared data in '{folder}' cannot be read ({type(exc).__name__}); run "
            "`genbench prepare` (or `dvc repro prepare --force`) to make it again"
        ) from None
