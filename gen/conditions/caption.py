"""Caption-conditioned models (text2image): trained on (image, caption word ids), sampled from
the test captions, scored on whether the data set's classifier reads the caption's class in the
image; the figure shows one caption per class beside its samples."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gen import classifier as clf
from gen import metrics as M
from gen.captions import detokenize
from gen.conditions import COLUMNS, ConditionKind, Conditions, DataKey, _cycle, random_pairs
from gen.config import from_dict
from gen.data import DataConfig, Split
from gen.evaluation import Protocol
from gen.plots import labelled_rows

if TYPE_CHECKING:
    from gen.conditions import Device, Saved
    from gen.models.base import GenerativeModel

PROBE_WORDS = 6  # word ids per caption of the throughput probe (about the real length)
CAPTIONS = DataKey("captions", "auto", "auto (or a captions file for an image folder)")


class CaptionKind(ConditionKind):
    name = "caption"

    def check_data(
        self, model: type[GenerativeModel], section: dict[str, Any] | None, data: DataConfig
    ) -> None:
        """Captions on and the config valid; the model is not built, as its vocabulary comes
        from the captions themselves."""
        CAPTIONS.check_params(model.name, data)
        from_dict(model.Config, model.name, section)

    def training_data(
        self, model: GenerativeModel, split: Split
    ) -> tuple[torch.Tensor, torch.Tensor]:
        CAPTIONS.check_split(model.name, split.train_caption is not None)
        return split.train_x, split.train_caption

    def sampling_conditions(
        self, model: GenerativeModel, split: Split, n: int, generator: torch.Generator
    ) -> Conditions:
        CAPTIONS.check_split(model.name, split.train_caption is not None)
        idx = _cycle(n, len(split.test_x), generator)
        return Conditions(split.test_caption[idx], split.test_y[idx], sources=split.test_x[idx])

    def curve_conditions(
        self, model: GenerativeModel, split: Split, n: int, generator: torch.Generator
    ) -> Conditions:
        """Training captions: the validation images have none of their own."""
        CAPTIONS.check_split(model.name, split.train_caption is not None)
        idx = _cycle(n, len(split.train_x), generator)
        return Conditions(split.train_caption[idx], split.train_y[idx], sources=split.train_x[idx])

    def probe_pairs(
        self, model: GenerativeModel, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = random_pairs(model.meta, n, generator)
        words = len(model.meta.extra.get("vocab", ()))
        if words < 3:
            raise ValueError(f"{model.name} needs a caption vocabulary in meta.extra['vocab']")
        return x, torch.randint(2, words, (n, PROBE_WORDS), generator=generator)

    def probe_condition(
        self, model: GenerativeModel, x: torch.Tensor, y: torch.Tensor, n: int, device: torch.device
    ) -> torch.Tensor:
        return y[:n].to(device)

    @torch.no_grad()
    def figure(self, model: GenerativeModel, split: Split, path: Path, seed: int) -> list[Path]:
        """One test caption per class (the first in a shuffled order), a row of samples each."""
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(split.test_y), generator=g)
        picks = [int(order[split.test_y[order] == k][0]) for k in split.test_y.unique()][:10]
        tokens = split.test_caption[picks]
        dev = model.device
        images = model.sample(len(picks) * COLUMNS, g, tokens.repeat_interleave(COLUMNS, 0).to(dev))
        rows = list(images.cpu().split(COLUMNS))
        labels = detokenize(tokens, split.meta.extra["vocab"])
        return [labelled_rows(rows, labels, model.meta.levels, path)]

    def obeyed(
        self, model: GenerativeModel, split: Split, saved: Saved, protocol: Protocol, device: Device
    ) -> dict[str, Any]:
        """How often the data set's classifier reads the caption's class in the sample."""
        net = clf.load_classifier(protocol.classifier, device)
        accuracy = M.agreement(clf.predict(net, saved["images"]), saved["labels"])
        return {"condition_accuracy": accuracy}


KIND = CaptionKind()
