"""What a conditional model trains on and is sampled with, by its `condition` kind.

One place decides, for the trainer, the stages and the tests alike: the training pairs (x, y)
and the conditions drawn from the test split for sampling and evaluation, with the class label
of each condition (so a classifier can check the condition was obeyed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gen.config import ConfigError
from gen.data import Split
from gen.models.base import GenerativeModel

KINDS = (None, "caption", "image", "domain")


@dataclass
class Conditions:
    """Conditions for `n` samples: `value` goes to `model.sample(n, g, value)`."""

    value: Any
    labels: torch.Tensor  # int64 (n,): the class each condition asks for (or keeps)
    sources: torch.Tensor | None = None  # uint8 (n, C, H, W): the images conditioned on
    targets: torch.Tensor | None = None  # int64 (n,): target domain ids (translation)
    source_domains: torch.Tensor | None = None  # int64 (n,): domain of each source image


def model_domains(model: GenerativeModel) -> list[int]:
    """The domain ids a translation model works on (all of the data's by default)."""
    ids = getattr(model, "domain_ids", None)
    return list(ids) if ids is not None else list(range(len(model.meta.extra["domains"])))


def _need(split: Split, what: str, model: GenerativeModel) -> None:
    hint = {
        "captions": "set data.captions to auto (or a captions file for an image folder)",
        "domains": "set data.domains to typeset, cyclegan_folder, domain_folders or attribute_csv",
    }[what]
    have = split.train_caption if what == "captions" else split.domains
    if have is None:
        raise ConfigError(f"model '{model.name}' needs {what} but the data set has none; {hint}")


def training_data(model: GenerativeModel, split: Split) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (x, y) the trainer batches for `model`."""
    if model.condition == "caption":
        _need(split, "captions", model)
        return split.train_x, split.train_caption
    if model.condition == "domain":
        _need(split, "domains", model)
        d = split.domains
        keep = torch.isin(d.train_d, torch.tensor(model_domains(model)))
        if model.uses_labels:
            labels = d.train_y[keep]
            if len(labels.unique()) < 2:
                raise ConfigError(
                    f"model '{model.name}' is set to use class labels (semantic_weight > 0) but "
                    "the domain images have none (the folder layouts carry no labels); set "
                    f"{model.name}.semantic_weight to 0"
                )
            return d.train_x[keep], torch.stack([d.train_d[keep], labels], dim=1)
        return d.train_x[keep], d.train_d[keep]
    return split.train_x, split.train_y


def _cycle(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """`n` indices into `size` items: every item once per pass, in a shuffled order."""
    passes = -(-n // size)
    return torch.cat([torch.randperm(size, generator=generator) for _ in range(passes)])[:n]


def sampling_conditions(
    model: GenerativeModel, split: Split, n: int, generator: torch.Generator
) -> Conditions | None:
    """Conditions for `n` samples (test captions and domain images; validation images to
    complete); None for unconditional models."""
    kind = model.condition
    if kind is None:
        return None
    if kind == "caption":
        _need(split, "captions", model)
        idx = _cycle(n, len(split.test_x), generator)
        return Conditions(split.test_caption[idx], split.test_y[idx], sources=split.test_x[idx])
    if kind == "image":
        # Completed from validation images: its samples are scored against the test split, so
        # conditioning on test images would let it copy the very images it is compared with.
        pool_x, pool_y = (
            (split.val_x, split.val_y) if split.val_x is not None else (split.test_x, split.test_y)
        )
        idx = _cycle(n, len(pool_x), generator)
        x = pool_x[idx]
        return Conditions(x, pool_y[idx], sources=x)
    if kind == "domain":
        _need(split, "domains", model)
        d, used = split.domains, model_domains(model)
        pool = torch.nonzero(torch.isin(d.test_d, torch.tensor(used))).flatten()
        idx = pool[_cycle(n, len(pool), generator)]
        source_d = d.test_d[idx]
        # Each source goes to another of the model's domains, chosen uniformly.
        others = torch.tensor([[t for t in used if t != s] for s in used])
        row = torch.tensor([used.index(s) for s in source_d.tolist()])
        pick = torch.randint(len(used) - 1, (len(idx),), generator=generator)
        targets = others[row, pick]
        x = d.test_x[idx]
        return Conditions((x, targets), d.test_y[idx], x, targets, source_d)
    raise ValueError(f"unknown condition kind {kind!r}; known: {KINDS}")
