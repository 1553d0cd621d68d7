"""Image completion (puzzlegan): trained like an unconditional model (y = class labels),
sampled by completing the key patches of validation images, scored on how well the given
patches are kept; the figure shows images, their key patches and the completions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gen import metrics as M
from gen.conditions import COLUMNS, ConditionKind, Conditions, _cycle
from gen.data import Split
from gen.evaluation import Protocol
from gen.plots import labelled_rows

if TYPE_CHECKING:
    from gen.conditions import Device, Saved
    from gen.models.base import GenerativeModel


class ImageKind(ConditionKind):
    name = "image"

    def sampling_conditions(
        self, model: GenerativeModel, split: Split, n: int, generator: torch.Generator
    ) -> Conditions:
        # Completed from validation images: its samples are scored against the test split, so
        # conditioning on test images would let it copy the very images it is compared with.
        pool_x, pool_y = (
            (split.val_x, split.val_y) if split.val_x is not None else (split.test_x, split.test_y)
        )
        idx = _cycle(n, len(pool_x), generator)
        x = pool_x[idx]
        return Conditions(x, pool_y[idx], sources=x)

    def curve_conditions(
        self, model: GenerativeModel, split: Split, n: int, generator: torch.Generator
    ) -> Conditions:
        """Key patches of training images: completing validation images would score the model
        against the very images it was given."""
        idx = _cycle(n, len(split.train_x), generator)
        x = split.train_x[idx]
        return Conditions(x, split.train_y[idx], sources=x)

    def probe_condition(
        self, model: GenerativeModel, x: torch.Tensor, y: torch.Tensor, n: int, device: torch.device
    ) -> torch.Tensor:
        return x[:n].to(device)

    @torch.no_grad()
    def figure(self, model: GenerativeModel, split: Split, path: Path, seed: int) -> list[Path]:
        g = torch.Generator().manual_seed(seed)
        levels, dev = model.meta.levels, model.device
        x = split.test_x[torch.randperm(len(split.test_x), generator=g)[: 2 * COLUMNS]]
        mask = model.patch_mask(x.to(dev)).cpu().expand_as(x)
        patches = torch.where(mask, x, torch.full_like(x, levels // 2))
        out = model.sample(len(x), g, x.to(dev)).cpu()
        rows, labels = [x, patches, out], ["image", "key patches", "generated"]
        return [labelled_rows(rows, labels, levels, path)]

    def obeyed(
        self, model: GenerativeModel, split: Split, saved: Saved, protocol: Protocol, device: Device
    ) -> dict[str, Any]:
        """How well the samples kept the key patches they were given."""
        samples, sources = saved["images"], saved["sources"]
        with torch.no_grad():
            mask = model.patch_mask(sources.to(device)).cpu()
        return {"patch_error": M.masked_error(sources, samples, mask, split.meta.levels)}


KIND = ImageKind()
