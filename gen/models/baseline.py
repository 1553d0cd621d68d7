"""Independent per-pixel categorical: the floor every real model must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gen.capabilities import Capabilities
from gen.config import checked, positive
from gen.data import DataMeta
from gen.models.base import GenerativeModel, ModelConfig
from gen.nn import categorical_log_prob, sample_categorical


@dataclass
class BaselineConfig(ModelConfig):
    steps: int = 0  # fitted by counting: no gradient steps
    alpha: float = checked(1.0, positive())  # additive (Laplace) smoothing of the counts


class Baseline(GenerativeModel):
    """p(x) = prod over pixels and channels of Cat(x_i; theta_i), theta_i from smoothed counts."""

    name = "baseline"
    family = "baseline"
    capabilities = Capabilities(likelihood="exact")
    Config = BaselineConfig
    phases = ()

    def __init__(self, cfg: BaselineConfig, meta: DataMeta) -> None:
        super().__init__(cfg, meta)
        c, h, w = meta.shape
        # A parameter (not a buffer) so it counts in the parameter column; it is fitted by
        # counting, never by gradients.
        self.logits = torch.nn.Parameter(torch.zeros(c, meta.levels, h, w), requires_grad=False)

    def param_groups(self) -> dict[str, list]:
        return {}

    def fit_data(self, train_x: torch.Tensor) -> None:
        onehot = torch.nn.functional.one_hot(train_x.long(), self.meta.levels)  # N C H W L
        counts = onehot.sum(0).permute(0, 3, 1, 2).double() + self.cfg.alpha
        self.logits.data.copy_((counts / counts.sum(1, keepdim=True)).log().float())

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits.unsqueeze(0).expand(len(x), -1, -1, -1, -1)
        return categorical_log_prob(logits, x.to(self.logits.device))

    def loss(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        nll = -self.log_prob(x).mean() / self.meta.dims
        return {"loss": nll}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        c, h, w = self.meta.shape
        flat = self.logits.permute(0, 2, 3, 1).reshape(1, -1, self.meta.levels)
        rows = flat.expand(n, -1, -1).reshape(-1, self.meta.levels)
        return sample_categorical(rows, generator).reshape(n, c, h, w).to(torch.uint8)
