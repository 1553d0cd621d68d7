"""Data sets by name, as discrete uint8 image tensors (N, C, H, W) with labels and `levels`.

Every data set is discrete so that likelihoods (bits/dim) are of the same kind of data for every
model family. `levels` is the number of intensity values: 2 (binarised), 17 (sklearn digits), 256.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gen.captions import build_captions, build_vocab, read_captions_file, tokenize
from gen.config import (
    KEY_ONLY,
    WITH_VALUE,
    ConfigError,
    Rule,
    at_least,
    checked,
    in_open,
    one_of,
    positive,
    require,
)
from gen.domains import (
    TYPESET_STYLES,
    Domains,
    attribute_csv,
    cyclegan_folder,
    domain_folders,
    typeset_domains,
)

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
    seed: int = checked(0, at_least(0))
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


def load(cfg: DataConfig) -> Split:
    """Load data set `cfg.name`, apply resize / binarisation and hold out a validation split.

    Everything random here draws from `cfg.seed`, never from the training seed: the data is a
    function of the `data:` section alone."""
    loaders = {
        "digits": _digits,
        "mixture": _mixture,
        "mnist": _torchvision,
        "fashion_mnist": _torchvision,
        "cifar10": _torchvision,
        "image_folder": _image_folder,
    }
    seed = cfg.seed
    split = loaders[cfg.name](cfg, seed)
    if cfg.image_size is not None and cfg.name != "image_folder":
        split = _resize(split, cfg.image_size)
    if cfg.binarize:
        split = _binarize(split)
    split = _hold_out_validation(split, cfg.val_fraction, seed)
    if cfg.captions == "auto":
        train_c, test_c = build_captions(
            split.train_x,
            split.train_y,
            split.test_x,
            split.test_y,
            split.meta.n_classes,
            split.meta.extra.get("class_names"),
        )
        _set_captions(split, train_c, test_c)
    split.domains = _domains(cfg, split, seed)
    if split.domains is not None:
        split.meta.extra["domains"] = split.domains.names
    return split


def _hold_out_validation(split: Split, fraction: float, seed: int) -> Split:
    """Carve a validation split from the training split (stratified by class where every class
    has at least two images), so the test split is read only by the final evaluation."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(split.train_x))
    if len(idx) < 2:
        raise ConfigError(
            f"data set '{split.meta.name}' has {len(idx)} training image(s); it needs at least 2 "
            "to hold out a validation split"
        )
    y = split.train_y.numpy()
    counts = np.bincount(y) if len(y) else np.zeros(0)
    stratify = y if len(counts) and counts[counts > 0].min() >= 2 else None
    try:
        tr, va = train_test_split(idx, test_size=fraction, stratify=stratify, random_state=seed)
    except ValueError:  # too few images per class for a stratified cut
        tr, va = train_test_split(idx, test_size=fraction, random_state=seed)
    tr, va = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(va))
    return replace(
        split,
        train_x=split.train_x[tr],
        train_y=split.train_y[tr],
        val_x=split.train_x[va],
        val_y=split.train_y[va],
        train_caption=None if split.train_caption is None else split.train_caption[tr],
    )


def _set_captions(split: Split, train: list[str], test: list[str]) -> None:
    """Tokenise captions with a vocabulary of the training captions; keep a few as text."""
    vocab = build_vocab(train)
    split.train_caption, split.test_caption = tokenize(train, vocab), tokenize(test, vocab)
    split.meta.extra["vocab"] = vocab


def _domains(cfg: DataConfig, split: Split, seed: int) -> Domains | None:
    m = split.meta
    if cfg.domains == "none":
        return None
    if cfg.domains == "typeset":
        return typeset_domains(
            split.train_x,
            split.train_y,
            split.test_x,
            split.test_y,
            m.levels,
            list(cfg.typeset_styles),
            seed=1000 + seed,  # the data's seed, not the training seed
        )
    root = Path(cfg.domains_root)
    if cfg.domains == "cyclegan_folder":
        d = cyclegan_folder(root, m.height, m.channels, m.levels)
    elif cfg.domains == "domain_folders":
        d = domain_folders(root, m.height, m.channels, m.levels, cfg.test_fraction)
    else:
        d = attribute_csv(root, m.height, m.channels, m.levels, cfg.test_fraction)
    return d  # read at the main data's size, channels and levels (binarised if it is)


# ----------------------------------------------------------------------------------- digits
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.int64)  # (1797, 8, 8) in 0..16


def _digits(cfg: DataConfig, seed: int) -> Split:
    from sklearn.model_selection import train_test_split

    images, labels = _digits_arrays()
    idx = np.arange(len(images))
    # The split follows data.seed, never the training seed: every run of every model is compared
    # on the same test images.
    tr, te = train_test_split(idx, test_size=cfg.test_fraction, stratify=labels, random_state=seed)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    meta = DataMeta("digits", 1, 8, 8, levels=17, n_classes=10)
    return Split(x[tr], y[tr], x[te], y[te], meta)


# ---------------------------------------------------------------------------------- mixture
def mixture_templates(sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel categoricals per digit class: log-probs (K, H*W, levels) and log weights.

    Template k puts mass on intensities near the class-k mean image, a discretised Gaussian of
    width `sigma` levels. A mixture of these has an exactly computable likelihood.
    """
    images, labels = _digits_arrays()
    levels = 17
    means = np.stack([images[labels == k].mean(0) for k in range(10)]).reshape(10, -1)
    v = torch.arange(levels, dtype=torch.float64)
    m = torch.from_numpy(means)[:, :, None]
    logits = -((v - m) ** 2) / (2 * sigma**2)
    log_probs = torch.log_softmax(logits, dim=-1)
    counts = torch.from_numpy(np.bincount(labels, minlength=10)).double()
    log_weights = torch.log(counts / counts.sum())
    return log_probs, log_weights


def mixture_log_prob(
    x: torch.Tensor, log_probs: torch.Tensor, log_weights: torch.Tensor
) -> torch.Tensor:
    """Exact log p(x) in nats for images x (N, 1, 8, 8) under the template mixture."""
    flat = x.reshape(len(x), -1).long()  # (N, D)
    # per component: sum over pixels of log p_k(x_d)
    gathered = log_probs[:, torch.arange(flat.shape[1]), :]  # (K, D, L)
    per_pixel = gathered[:, None, :, :].expand(-1, len(x), -1, -1)
    lp = torch.gather(per_pixel, 3, flat[None, :, :, None].expand(len(log_probs), -1, -1, 1))
    per_component = lp.squeeze(-1).sum(-1) + log_weights[:, None]  # (K, N)
    return torch.logsumexp(per_component, dim=0)


def _mixture(cfg: DataConfig, seed: int) -> Split:
    log_probs, log_weights = mixture_templates(cfg.mixture_sigma)
    # The data's seed: the data set is a function of its params, independent of the model seed.
    g = torch.Generator().manual_seed(1234 + seed)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        comp = torch.multinomial(log_weights.exp(), n, replacement=True, generator=g)
        probs = log_probs.exp()[comp]  # (n, D, L)
        pix = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=g)
        return pix.reshape(n, 1, 8, 8).to(torch.uint8), comp

    train_x, train_y = draw(cfg.n_train)
    test_x, test_y = draw(cfg.n_test)
    nll = -mixture_log_prob(test_x, log_probs, log_weights)
    exact_bpd = float(nll.mean() / (64 * math.log(2)))
    extra = {"exact_test_bpd": exact_bpd, "mixture_sigma": cfg.mixture_sigma}
    meta = DataMeta("mixture", 1, 8, 8, levels=17, n_classes=10, extra=extra)
    return Split(train_x, train_y, test_x, test_y, meta)


# ------------------------------------------------------------------------------ torchvision
_TV = {
    "mnist": (
        "MNIST",
        "MNIST/raw: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
    ),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw: the four *-idx?-ubyte files"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/ (extracted cifar-10-python.tar.gz)"),
}


def _torchvision(cfg: DataConfig, seed: int) -> Split:
    import torchvision

    cls_name, where = _TV[cfg.name]
    cls = getattr(torchvision.datasets, cls_name)
    root = Path(cfg.root)

    def get(train: bool):
        try:
            return cls(str(root), train=train, download=False)
        except (RuntimeError, FileNotFoundError):
            pass
        try:
            return cls(str(root), train=train, download=True)
        except Exception as exc:  # no network, or a corrupt file
            raise DataError(
                f"data set '{cfg.name}' not found under {root} and could not be downloaded "
                f"({type(exc).__name__}); put the files in {root}/{where}"
            ) from None

    out = []
    for train in (True, False):
        ds = get(train)
        x = torch.as_tensor(np.asarray(ds.data))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        out += [x.to(torch.uint8).contiguous(), torch.as_tensor(np.asarray(ds.targets)).long()]
    c, h, w = out[0].shape[1:]
    meta = DataMeta(cfg.name, c, h, w, levels=256, n_classes=10)
    return Split(*out, meta=meta)


def _image_folder(cfg: DataConfig, seed: int) -> Split:
    from PIL import Image
    from sklearn.model_selection import train_test_split

    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"image folder '{root}' not found; set data.root to a folder of images")
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in exts)
    if len(files) < 2:
        raise DataError(f"image folder '{root}' holds {len(files)} images; it needs at least 2")
    # Class = first sub-folder under root (ImageFolder layout); flat folders are class 0.
    classes = sorted({p.relative_to(root).parts[0] for p in files if p.parent != root})
    size = cfg.image_size or 32
    mode = "L" if cfg.channels == 1 else "RGB"
    xs, ys = [], []
    for p in files:
        try:
            img = Image.open(p).convert(mode).resize((size, size), Image.BILINEAR)
        except OSError as exc:
            raise DataError(f"cannot read image '{p}': {exc}") from None
        arr = np.asarray(img, dtype=np.uint8)
        xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        rel = p.relative_to(root).parts
        ys.append(classes.index(rel[0]) if p.parent != root else 0)
    x = torch.from_numpy(np.stack(xs))
    y = torch.tensor(ys, dtype=torch.long)
    tr, te = train_test_split(np.arange(len(x)), test_size=cfg.test_fraction, random_state=seed)
    meta = DataMeta(
        "image_folder",
        x.shape[1],
        size,
        size,
        levels=256,
        n_classes=max(1, len(classes)),
        extra={"class_names": classes or ["image"]},
    )
    split = Split(x[tr], y[tr], x[te], y[te], meta)
    if cfg.captions not in ("auto", "none"):
        captions = read_captions_file(Path(cfg.captions), root, files)
        _set_captions(split, [captions[i] for i in tr], [captions[i] for i in te])
    return split


# ------------------------------------------------------------------------------ transforms
def _resize(split: Split, size: int) -> Split:
    import torch.nn.functional as F

    def r(x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
        return y.round().clamp(0, split.meta.levels - 1).to(torch.uint8)

    m = split.meta
    meta = DataMeta(m.name, m.channels, size, size, m.levels, m.n_classes, dict(m.extra))
    return replace(split, train_x=r(split.train_x), test_x=r(split.test_x), meta=meta)


def _binarize(split: Split) -> Split:
    m = split.meta
    if m.name == "mixture":
        raise ConfigError("data.binarize is not allowed with data set 'mixture' (its NLL is exact)")
    half = m.levels / 2

    def b(x: torch.Tensor) -> torch.Tensor:
        return (x.float() >= half).to(torch.uint8)

    meta = DataMeta(m.name, m.channels, m.height, m.width, 2, m.n_classes, dict(m.extra))
    return replace(split, train_x=b(split.train_x), test_x=b(split.test_x), meta=meta)


# ------------------------------------------------------------------------------ conversions
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
    torch.save(tensors, folder / "data.pt")
    if split.domains is not None:
        torch.save(split.domains.tensors(), folder / "domains.pt")
    (folder / "meta.json").write_text(json.dumps(split.meta.__dict__, indent=2) + "\n")


def load_split(folder: Path) -> Split:
    """Read what `save_split` wrote; a missing folder is a clear error."""
    import json

    folder = Path(folder)
    if not (folder / "data.pt").exists():
        raise DataError(f"prepared data not found in '{folder}'; run `genbench prepare` first")
    tensors = torch.load(folder / "data.pt", weights_only=True)
    meta = DataMeta(**json.loads((folder / "meta.json").read_text()))
    domains = None
    if (folder / "domains.pt").exists():
        d = torch.load(folder / "domains.pt", weights_only=True)
        domains = Domains(**d, names=meta.extra["domains"])
    return Split(**tensors, meta=meta, domains=domains)
