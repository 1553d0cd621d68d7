"""Feature spaces: uint8 images -> feature vectors and logits, once per image set.

Every sample-quality figure (gen/evaluation.py) is computed from these vectors, in the data
set's classifier (gen/classifier.py) or in torch-fidelity's Inception network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gen import metrics as M


@dataclass
class Features:
    """Feature vectors (float64, N x D) and logits of one image set."""

    features: torch.Tensor
    logits: torch.Tensor


def extract(
    images: torch.Tensor,
    levels: int,
    extractor: str,
    weights: str | Path | None,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> Features:
    """Features of uint8 images: the data set's classifier, or torch-fidelity's Inception."""
    if extractor == "classifier":
        from gen.classifier import load_classifier

        if weights is None:
            raise M.MetricError("the classifier feature extractor needs the classifier checkpoint")
        net = load_classifier(weights, device)
        feats, logits = [], []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                f = net.features(images[i : i + batch_size].to(device))
                feats.append(f.double().cpu())
                logits.append(net.head(f).double().cpu())
        return Features(torch.cat(feats), torch.cat(logits))
    if extractor == M.INCEPTION_EXTRACTOR:
        return _inception_features(images, levels, weights, batch_size, device)
    raise M.MetricError(
        f"unknown feature extractor '{extractor}'; known: classifier, {M.INCEPTION_EXTRACTOR}"
    )


def _inception_features(images, levels, weights, batch_size, device) -> Features:
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    cuda = torch.device(device).type == "cuda"
    try:
        fe = create_feature_extractor(
            M.INCEPTION_EXTRACTOR,
            ["2048", "logits_unbiased"],
            cuda=cuda,
            feature_extractor_weights_path=str(weights) if weights else None,
        )
        out = get_featuresdict_from_dataset(
            M.Images(M.to_rgb8(images, levels)), fe, batch_size, cuda, True, False
        )
    except Exception as exc:
        raise M.MetricError(
            f"Inception features unavailable ({type(exc).__name__}: {str(exc)[:120]}); set "
            "eval.inception_weights to a local weights file or use "
            "eval.feature_extractor: classifier"
        ) from None
    return Features(out["2048"].double(), out["logits_unbiased"].double())
