"""The one small base class every model derives from, and the training recipe all configs share."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from gen.capabilities import Capabilities
from gen.conditions import ConditionKind, none
from gen.config import KEY_ONLY, at_least, at_most, checked, in_half_open, positive
from gen.data import DataMeta

# Model families -> their section titles in the report, in the report's order. Every model class
# names one of them as its `family` (gen/registry.py checks this when it registers the class).
FAMILIES: dict[str, str] = {
    "baseline": "Baseline",
    "autoregressive": "Autoregressive models",
    "latent-variable": "Latent-variable models",
    "adversarial": "Adversarial models",
    "conditional": "Conditional generation",
    "translation": "Image-to-image translation",
}

_BETA = in_half_open(0, 1, name="{section}.beta1/beta2")  # one message for both betas


@dataclass
class ModelConfig:
    """Fields every model section has: its own optimisation recipe (the model owns it). A
    model's config that only changes a default here keeps the field's rules."""

    steps: int = checked(2000, at_least(0))  # training steps; one step runs every phase once
    batch_size: int = checked(64, positive())
    # Adam's step is about lr per weight: above 1 every model here diverges at once.
    lr: float = checked(1e-3, positive(), at_most(1, note="Adam's step size"))
    beta1: float = checked(0.9, _BETA)
    beta2: float = checked(0.999, _BETA)
    weight_decay: float = checked(0.0, at_least(0, name=KEY_ONLY))
    # Max global grad norm per phase; 0 disables.
    grad_clip: float = checked(0.0, at_least(0, name=KEY_ONLY))


class GenerativeModel(nn.Module):
    """Base class: a model names its optimisation phases and returns its own losses.

    Subclasses set `name`, `family`, `Config`, `phases` and implement `param_groups`, `loss` and
    `sample`. Likelihood models add `log_prob` (exact) or `elbo` / `iwae_bound` (bounds) and say
    so in `capabilities`: the evaluation applies only the metrics a model declares.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""  # a key of FAMILIES: the report section it is shown in
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    phases: tuple[str, ...] = ("model",)
    # What the model is conditioned on (gen/conditions/): its kind decides the training pairs
    # (x, y), the `condition` that `sample` needs, the condition figure and metrics. Unconditional
    # by default (y = class label, used or not); caption.KIND, image.KIND or domain.KIND.
    condition: ClassVar[ConditionKind] = none.KIND
    # What it can be measured on (gen/capabilities.py), checked against its methods when the
    # class is registered.
    capabilities: ClassVar[Capabilities] = Capabilities()
    # Whether training pairs each image with its class label beside its condition (translation
    # models' semantic term: y = (domain id, label)); the report marks such runs.
    uses_labels: bool = False
    # Phases whose loss never reads the batch's images (a GAN's generator step only needs its
    # size): they do not count towards the images a model consumes (train img/s).
    image_free_phases: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: ModelConfig, meta: DataMeta) -> None:
        super().__init__()
        self.cfg = cfg
        self.meta = meta
        # Config keys the data made the model change: key -> (asked, used, why).
        self.adjusted: dict[str, tuple[Any, Any, str]] = {}

    def round_up(self, key: str, multiple: int) -> int:
        """`cfg.<key>` rounded up to a multiple of `multiple`, which the data decides (a masked
        layer gives each colour channel an equal group of feature maps): the model is built
        with that value, its config (logged, checkpointed, rebuilt from) holds it, and
        `adjusted` records what was asked. 64 maps stay 64 for 1-channel data."""
        asked = getattr(self.cfg, key)
        used = -(-asked // multiple) * multiple
        if used != asked:
            self.cfg = dataclasses.replace(self.cfg, **{key: used})
            why = f"a multiple of {multiple} for {self.meta.channels}-channel data"
            self.adjusted[key] = (asked, used, why)
        return used

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Phase name -> the parameters its optimiser updates."""
        return {"model": list(self.parameters())}

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Named loss terms for `phase` on uint8 batch `x` (labels `y`, for conditional models);
        `"loss"` is the one to backpropagate."""
        raise NotImplementedError

    def sample(
        self, n: int, generator: torch.Generator | None = None, condition: Any = None
    ) -> torch.Tensor:
        """`n` images as uint8 (n, C, H, W) in the data's levels; conditional models take the
        `condition` that their kind's `sampling_conditions` makes (gen/conditions/)."""
        raise NotImplementedError

    def begin_step(self, step: int) -> None:
        """Hook run before each training step (0-based), for schedules such as fade-in."""

    def step_kind(self, step: int) -> Hashable:
        """What decides the work training step `step` does: steps of one kind cost the same
        FLOPs (gen/flops.py counts one of each). Every step alike unless `begin_step` changes
        the nets."""
        return None

    def fit_data(self, train_x: torch.Tensor) -> None:
        """Hook run once before gradient steps, for models fitted in closed form (counting)."""

    def finish_training(self, train_x: torch.Tensor) -> None:
        """Hook run once after the last gradient step (e.g. fit a prior to the training codes)."""

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "params": count_params(self)}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randn(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Gaussian noise drawn on CPU from `generator`: seeds give the same samples on any device."""
    return torch.randn(shape, generator=generator).to(device)
