"""Data sets by name, read into a `Split`.

One reader per data set (sklearn digits, the exact mixture, torchvision's, image folders) gives
the train / test split; `load` then resizes, binarises, holds out the validation split and adds
captions and domains.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gen.captions import build_captions, build_vocab, read_captions_file, tokenize
from gen.config import ConfigError
from gen.data import DataConfig, DataError, DataMeta, Split
from gen.domains import Domains, attribute_csv, cyclegan_folder, domain_folders, typeset_domains
from gen.image_files import image_files, read_image
from gen.user_files import check_mnist


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

    if cfg.name in ("mnist", "fashion_mnist"):  # files given: checked before torchvision reads them
        check_mnist(root / cls_name / "raw")
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
    from sklearn.model_selection import train_test_split

    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"image folder '{root}' not found; set data.root to a folder of images")
    files = image_files(root)
    if len(files) < 2:
        raise DataError(f"image folder '{root}' holds {len(files)} images; it needs at least 2")
    # Class = first sub-folder under root (ImageFolder layout); flat folders are class 0.
    classes = sorted({p.relative_to(root).parts[0] for p in files if p.parent != root})
    size, channels = cfg.image_size or 32, cfg.channels or 3
    xs, ys = [], []
    for p in files:
        xs.append(read_image(p, size, channels, DataError))
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
