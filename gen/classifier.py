"""A small CNN classifier trained on the data set: the feature extractor for FID / IS / KID / PR.

Inception-v3 features mean little for 8x8 grayscale digits (and its weights need a download), so by
default the sample-quality metrics use the penultimate layer of this classifier instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gen.config import checked, require, seed_rule
from gen.data import to_unit


@dataclass
class ClassifierConfig:
    """The `classifier:` section of params.yaml."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    features: int = 128  # width of the feature layer used by FID / KID / PR
    domain_epochs: int = 10  # the (domain, class) classifier for translation models
    # The ruler's own seed, apart from the training seed of the models it measures.
    seed: int = checked(0, seed_rule())
    # A protocol file (gen/protocol_file.py) whose ruler is used instead of training one here,
    # so every machine measures with the same bytes; None trains one.
    protocol: str | None = None

    def validate(self, section: str = "classifier") -> None:
        require(self.epochs > 0, f"{section}.epochs={self.epochs} must be > 0")
        require(self.domain_epochs > 0, f"{section}.domain_epochs must be > 0")
        require(self.batch_size > 0, f"{section}.batch_size={self.batch_size} must be > 0")
        require(self.lr > 0, f"{section}.lr={self.lr} must be > 0")
        require(self.features > 0, f"{section}.features={self.features} must be > 0")


class Classifier(nn.Module):
    def __init__(self, channels: int, levels: int, n_classes: int, features: int = 128) -> None:
        super().__init__()
        self.levels = levels
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * 16, features),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.25), nn.Linear(features, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors for uint8 images in the data's levels."""
        return self.body(to_unit(x, self.levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    levels: int,
    n_classes: int,
    cfg: ClassifierConfig,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Classifier:
    torch.manual_seed(seed)
    model = Classifier(train_x.shape[1], levels, n_classes, cfg.features).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(train_x), generator=g)
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            x, y = train_x[idx].to(device), train_y[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: Classifier, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    device = next(model.parameters()).device
    out = [
        model(x[i : i + batch_size].to(device)).argmax(1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


@torch.no_grad()
def predict_joint(
    model: Classifier, x: torch.Tensor, n_classes: int, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """For a classifier of (domain, class) pairs, numbered `domain * n_classes + class`: the most
    likely class and the most likely domain of each image, each summed over the other."""
    device = next(model.parameters()).device
    labels, domains = [], []
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size].to(device)).cpu()
        joint = logits.log_softmax(1).reshape(len(logits), -1, n_classes)  # (N, D, K)
        labels.append(joint.logsumexp(1).argmax(1))
        domains.append(joint.logsumexp(2).argmax(1))
    if not labels:
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty
    return torch.cat(labels), torch.cat(domains)


def accuracy(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y).float().mean())


def classifier_checkpoint(model: Classifier, cfg: ClassifierConfig) -> dict:
    first = model.body[0]
    return {
        "channels": first.in_channels,
        "levels": model.levels,
        "n_classes": model.head[-1].out_features,
        "features": cfg.features,
        "state_dict": model.state_dict(),
    }


def load_classifier(path, device: torch.device | str = "cpu") -> Classifier:
    from pathlib import Path

    from gen.checkpoint import CheckpointError

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"classifier '{path}' not found; run `genbench classifier` first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = Classifier(ckpt["channels"], ckpt["levels"], ckpt["n_classes"], ckpt["features"])
        model.load_state_dict(ckpt["state_dict"])
    except Exception as exc:
        raise CheckpointError(
            f"classifier '{path}' is corrupt or unreadable ({type(exc).__name__})"
        ) from None
    return model.to(device).eval()
