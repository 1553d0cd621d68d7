"""What a model is conditioned on: one kind object per module, asked by every stage.

A model class names its kind (`condition = domain.KIND`). Training, sampling, the throughput
probe, the params check, the figures and the metrics each make one call on it. ConditionKind
answers for a model conditioned on nothing (none.py); the other kinds' modules (caption.py,
image.py, domain.py) override what their condition changes, so everything a kind means reads
in its own module and here. Another kind (class labels, say) is one more module and one line in
the model class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gen.config import DataMismatch, from_dict
from gen.data import expected_meta
from gen.evaluation import sample_quality

if TYPE_CHECKING:
    from gen.data import DataConfig, DataMeta, Split
    from gen.evaluation import Protocol
    from gen.models.base import GenerativeModel

COLUMNS = 8  # images in a row of a condition figure
Saved = dict[str, torch.Tensor]  # what the sample stage saved: "images", "labels", conditions
Device = torch.device | str


@dataclass
class Conditions:
    """Conditions for `n` samples: `value` goes to `model.sample(n, g, value)`."""

    value: Any
    labels: torch.Tensor  # int64 (n,): the class each condition asks for (or keeps)
    sources: torch.Tensor | None = None  # uint8 (n, C, H, W): the images conditioned on
    targets: torch.Tensor | None = None  # int64 (n,): target domain ids (translation)
    source_domains: torch.Tensor | None = None  # int64 (n,): domain of each source image


@dataclass(frozen=True)
class DataKey:
    """The `data:` key a kind's conditions come from (captions, domains): a model of that kind
    fails early, with the value to set, when params turn it off or the data set lacks them."""

    key: str
    fix: str  # what to set the key to when params say 'none'
    fix_missing: str  # ... when the data set has none

    def check_params(self, model_name: str, data: DataConfig) -> None:
        if getattr(data, self.key) == "none":
            raise DataMismatch(
                f"model '{model_name}' needs {self.key} but data.{self.key} is 'none'; set "
                f"data.{self.key} to {self.fix}",
                f"the data has no {self.key} (data.{self.key}: none)",
            )

    def check_split(self, model_name: str, present: bool) -> None:
        if not present:
            raise DataMismatch(
                f"model '{model_name}' needs {self.key} but the data set has none; set "
                f"data.{self.key} to {self.fix_missing}",
                f"the data has no {self.key}",
            )


class ConditionKind:
    """What every kind answers about a model conditioned on it (each method takes the model).

    The answers here are those of a model conditioned on nothing (none.py): trained on images
    and class labels, sampled from noise alone, scored on sample quality, no figure. A kind
    overrides what its condition changes."""

    name: str | None = None  # what params, tags and messages call it; None: unconditional

    def check_data(
        self, model: type[GenerativeModel], section: dict[str, Any] | None, data: DataConfig
    ) -> None:
        """Raise a ConfigError when `model` (params section `section`) cannot train on the data
        `data` describes, judged from params alone: before any stage has done work."""
        build_once(model, section, expected_meta(data))

    def training_data(
        self, model: GenerativeModel, split: Split
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (x, y) the trainer batches for `model`."""
        return split.train_x, split.train_y

    def sampling_conditions(
        self, model: GenerativeModel, split: Split, n: int, generator: torch.Generator
    ) -> Conditions | None:
        """Conditions for `n` samples, from the held-out splits; None when `sample` needs none."""
        return None

    def curve_conditions(
        self, model: GenerativeModel, split: Split, n: int, generator: torch.Generator
    ) -> Conditions | None:
        """Conditions for `n` samples of the quality curve (gen/quality_curve.py), scored
        against the validation split while training: drawn from the training split, never from
        the held-out ones; None when `sample` needs none."""
        return None

    def probe_pairs(
        self, model: GenerativeModel, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` random training pairs of the data's shape, for the throughput probe."""
        return random_pairs(model.meta, n, generator)

    def probe_condition(
        self, model: GenerativeModel, x: torch.Tensor, y: torch.Tensor, n: int, device: torch.device
    ) -> Any:
        """What `model.sample(n, g, condition)` needs, from the probe pairs; None for none."""
        return None

    def figure(self, model: GenerativeModel, split: Split, path: Path, seed: int) -> list[Path]:
        """Conditions beside the model's outputs, written to `path`: [path], or [] for none."""
        return []

    def metrics(
        self,
        model: GenerativeModel,
        split: Split,
        saved: Saved,
        protocol: Protocol,
        seed: int,
        device: Device,
    ) -> dict[str, Any]:
        """Whether the saved samples obeyed their conditions, then their quality."""
        obeyed = self.obeyed(model, split, saved, protocol, device)
        return {**obeyed, **self.quality(split, saved, protocol, seed, device)}

    def obeyed(
        self, model: GenerativeModel, split: Split, saved: Saved, protocol: Protocol, device: Device
    ) -> dict[str, Any]:
        """Whether the saved samples obeyed their conditions: nothing to obey without one."""
        return {}

    def quality(
        self, split: Split, saved: Saved, protocol: Protocol, seed: int, device: Device
    ) -> dict[str, Any]:
        """The saved samples' quality against the test split, in the classes' feature space."""
        return sample_quality(saved["images"], split, protocol, seed, device)


@torch.no_grad()
def draw(
    model: GenerativeModel,
    n: int,
    generator: torch.Generator,
    conds: Conditions | None,
    batch_size: int,
    device: torch.device | str,
) -> torch.Tensor:
    """`n` samples (uint8, on the CPU) in batches, each from its rows of the conditions."""
    chunks = []
    for i in range(0, n, batch_size):
        j = min(n, i + batch_size)
        if conds is None:
            chunks.append(model.sample(j - i, generator).cpu())
        else:
            chunks.append(model.sample(j - i, generator, rows(conds.value, i, j, device)).cpu())
    return torch.cat(chunks)


def rows(value: Any, i: int, j: int, device: torch.device | str) -> Any:
    """Rows i:j of a condition (a tensor or a tuple of tensors), on `device`."""
    if isinstance(value, tuple):
        return tuple(rows(v, i, j, device) for v in value)
    return value[i:j].to(device)


def model_domains(model: GenerativeModel) -> list[int]:
    """The domain ids a translation model works on (all of the data's by default)."""
    ids = getattr(model, "domain_ids", None)
    return list(ids) if ids is not None else list(range(len(model.meta.extra["domains"])))


def _cycle(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """`n` indices into `size` items: every item once per pass, in a shuffled order."""
    passes = -(-n // size)
    return torch.cat([torch.randperm(size, generator=generator) for _ in range(passes)])[:n]


def random_pairs(
    meta: DataMeta, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` random images of the data's shape and levels, and class labels: the probe's data
    (speed does not depend on the values). Every kind draws these first, in this order."""
    x = torch.randint(0, meta.levels, (n, *meta.shape), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, max(meta.n_classes, 1), (n,), generator=generator)
    return x, labels


def build_once(
    model: type[GenerativeModel], section: dict[str, Any] | None, meta: DataMeta
) -> None:
    """Build `model` for data `meta` so its config and shape checks run, leaving the global
    seed as it was (building draws weights)."""
    cfg = from_dict(model.Config, model.name, section)
    with torch.random.fork_rng(devices=[]):
        model(cfg, meta)
