"""Captions for text-to-image models: sentences built from an image's class and its measured
stroke thickness, slant and size, a user's captions file, and the word-level tokeniser.

A caption says more than the class ("a thick seven leaning right"), so a text-conditional model
has something to learn beyond a label. The words describing a property are chosen by where the
image falls among the training images of its own class (thirds), so every word is common.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from gen.config import ConfigError
from gen.user_files import read_text

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PAD, UNKNOWN = 0, 1  # token ids reserved in every vocabulary
MAX_WORDS = 32


class CaptionError(RuntimeError):
    """A captions file is missing, malformed or does not cover the images."""


def measure(x: torch.Tensor) -> torch.Tensor:
    """Per image (N, C, H, W) -> (N, 3): ink mass (thickness), slant, and size.

    Slant is the intensity-weighted regression of column on row, sign flipped so that a stroke
    whose top lies to the right is positive. Size is the spread of ink around its centre.
    """
    w = x.double().sum(1)  # (N, H, W), channels pooled
    n, h, wd = w.shape
    rows = torch.arange(h, dtype=torch.float64)[None, :, None].expand(n, h, wd)
    cols = torch.arange(wd, dtype=torch.float64)[None, None, :].expand(n, h, wd)
    mass = w.sum((1, 2)).clamp_min(1e-9)
    mr = (w * rows).sum((1, 2)) / mass
    mc = (w * cols).sum((1, 2)) / mass
    dr, dc = rows - mr[:, None, None], cols - mc[:, None, None]
    var_r = (w * dr * dr).sum((1, 2)) / mass
    var_c = (w * dc * dc).sum((1, 2)) / mass
    cov = (w * dr * dc).sum((1, 2)) / mass
    slant = -cov / var_r.clamp_min(1e-9)
    size = (var_r + var_c).sqrt()
    return torch.stack([mass / (h * wd), slant, size], dim=1)


def class_thirds(values: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n_classes, 3, 2): per class and property, the 1/3 and 2/3 quantiles of the values."""
    out = torch.zeros(n_classes, values.shape[1], 2, dtype=torch.float64)
    q = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
    for k in range(n_classes):
        v = values[labels == k]
        if len(v) == 0:
            v = values
        out[k] = torch.quantile(v, q, dim=0).T
    return out


def describe(
    values: torch.Tensor, labels: torch.Tensor, thirds: torch.Tensor, class_words: list[str]
) -> list[str]:
    """Sentences like "a thick seven leaning right" from measured values and class thirds."""
    words = (
        ("thin", "", "thick"),
        ("leaning left", "upright", "leaning right"),
        ("small", "", "large"),
    )
    out = []
    for v, k in zip(values, labels.tolist(), strict=True):
        bins = [int(v[j] > thirds[k, j, 0]) + int(v[j] > thirds[k, j, 1]) for j in range(3)]
        thick, slant, size = (words[j][b] for j, b in enumerate(bins))
        parts = ["a", size, thick, class_words[k], slant]
        out.append(" ".join(p for p in parts if p))
    return out


def class_words(names: list[str] | None, n_classes: int) -> list[str]:
    """The word each class is called by: folder names if known, else number words (digits)."""
    if names:
        return [n.replace("_", " ") for n in names]
    if n_classes <= len(NUMBER_WORDS):
        return list(NUMBER_WORDS[:n_classes])
    return [f"class {k}" for k in range(n_classes)]


def build_captions(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    n_classes: int,
    names: list[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Captions for a labelled data set; thresholds come from the training images only."""
    words = class_words(names, n_classes)
    train_v = measure(train_x)
    thirds = class_thirds(train_v, train_y, n_classes)
    return (
        describe(train_v, train_y, thirds, words),
        describe(measure(test_x), test_y, thirds, words),
    )


# ------------------------------------------------------------------------------- tokeniser
def words_of(caption: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", caption.lower())[:MAX_WORDS]


def build_vocab(captions: list[str]) -> list[str]:
    """Index 0 is padding, 1 the unknown word; then the training words, sorted."""
    seen = sorted({w for c in captions for w in words_of(c)})
    return ["<pad>", "<unk>", *seen]


def tokenize(captions: list[str], vocab: list[str]) -> torch.Tensor:
    """Captions -> int64 (N, L) word ids, padded with 0; L is the longest caption's length."""
    index = {w: i for i, w in enumerate(vocab)}
    ids = [[index.get(w, UNKNOWN) for w in words_of(c)] or [UNKNOWN] for c in captions]
    out = torch.full((len(ids), max(len(i) for i in ids)), PAD, dtype=torch.long)
    for row, i in enumerate(ids):
        out[row, : len(i)] = torch.tensor(i)
    return out


def detokenize(tokens: torch.Tensor, vocab: list[str]) -> list[str]:
    return [" ".join(vocab[t] for t in row.tolist() if t != PAD) for row in tokens]


# ----------------------------------------------------------------------- user captions file
CAPTIONS_FILE = 'JSON lines of {"file": ..., "caption": ...} in UTF-8'


def read_captions_file(path: Path, root: Path, files: list[Path]) -> list[str]:
    """One caption per image from a JSON-lines file of {"file": ..., "caption": ...}.

    `file` is relative to the image folder `root`. Every image needs a caption; lines for images
    that are not in the folder are an error too, since they usually mean a wrong root.
    """
    path = Path(path)
    if not path.exists():
        raise CaptionError(f"captions file '{path}' not found; set data.captions to a .jsonl file")
    by_file: dict[str, str] = {}
    text = read_text(path, "captions file", CAPTIONS_FILE)
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key, caption = str(row["file"]), str(row["caption"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CaptionError(
                f"{path}:{n} is not a JSON object with 'file' and 'caption'"
            ) from None
        by_file[Path(key).as_posix()] = caption
    wanted = [p.relative_to(root).as_posix() for p in files]
    missing = [f for f in wanted if f not in by_file]
    if missing:
        raise CaptionError(
            f"captions file '{path}' has no caption for {len(missing)} image(s), "
            f"e.g. '{missing[0]}'"
        )
    extra = sorted(set(by_file) - set(wanted))
    if extra:
        raise CaptionError(
            f"captions file '{path}' names {len(extra)} image(s) not under '{root}', "
            f"e.g. '{extra[0]}'"
        )
    return [by_file[f] for f in wanted]


def check_vocab(vocab: object) -> list[str]:
    if not isinstance(vocab, list) or len(vocab) < 3:
        raise ConfigError("this data set has no captions; set data.captions to auto or a file")
    return vocab
