"""Unconditional models: trained on images with their class labels (y, used or not), sampled
from noise alone, scored on sample quality only; no condition figure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gen.conditions import ConditionKind, Conditions, build_once, random_pairs
from gen.data import DataConfig, Split, expected_meta
from gen.evaluation import Protocol, sample_quality

if TYPE_CHECKING:
    from gen.models.base import GenerativeModel


class Unconditional(ConditionKind):
    name = None

    def check_data(
        self, model: type[GenerativeModel], section: dict[str, Any] | None, data: DataConfig
    ) -> None:
        build_once(model, section, expected_meta(data))

    def training_data(
        self, model: GenerativeModel, split: Split
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return split.train_x, split.train_y

    def sampling_conditions(
        self, model: GenerativeModel, split: Split, n: int, generator: torch.Generator
    ) -> Conditions | None:
        return None

    def probe_pairs(
        self, model: GenerativeModel, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return random_pairs(model.meta, n, generator)

    def probe_condition(
        self,
        model: GenerativeModel,
        x: torch.Tensor,
        y: torch.Tensor,
        n: int,
        device: torch.device,
    ) -> None:
        return None

    def figure(self, model: GenerativeModel, split: Split, path: Path, seed: int) -> list[Path]:
        return []

    def metrics(
        self,
        model: GenerativeModel,
        split: Split,
        saved: dict[str, torch.Tensor],
        protocol: Protocol,
        seed: int,
        device: torch.device | str,
    ) -> dict[str, Any]:
        return sample_quality(saved["images"], split, protocol, seed, device)


KIND = Unconditional()
