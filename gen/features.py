"""Feature spaces: uint8 images -> feature vectors (and class logits), once per image set.

Every sample-quality figure (gen/evaluation.py) is computed from these vectors: in the data
set's classifier (gen/classifier.py), or in a torch-fidelity extractor from a local weights
file (Inception, DINOv2: gen/dinov2.py). torch-fidelity's extractors take RGB: grayscale
images have their one channel repeated three times, and `levels` are mapped to 0..255.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gen import dinov2
from gen import metrics as M

# torch-fidelity extractors: name -> (its feature, its class logits or None: no IS there)
FIDELITY: dict[str, tuple[str, str | None]] = {
    M.INCEPTION_EXTRACTOR: ("2048", "logits_unbiased"),
    **{name: ("dinov2", None) for name in dinov2.MODELS},
}
EXTRACTORS = ("classifier", *FIDELITY)


@dataclass
class Features:
    """Feature vectors (float64, N x D) and class logits of one image set; logits are None in
    a space without classes (DINOv2), where the Inception score is n/a."""

    features: torch.Tensor
    logits: torch.Tensor | None


def resolve_weights(extractor: str, given: str | Path | None) -> str | Path | None:
    """The weights file a torch-fidelity extractor will read, checked before any work: DINOv2
    needs a readable official file (given, or in torch.hub's cache), and says which to fetch
    if not; Inception without one downloads torch-fidelity's."""
    if extractor in dinov2.MODELS:
        return dinov2.weights_file(extractor, given)
    return given


def extract(
    images: torch.Tensor,
    levels: int,
    extractor: str,
    weights: str | Path | None,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> Features:
    """Features of uint8 images: the data set's classifier, or a torch-fidelity extractor."""
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
    if extractor in FIDELITY:
        return _fidelity_features(images, levels, extractor, weights, batch_size, device)
    raise M.MetricError(f"unknown feature extractor '{extractor}'; known: {', '.join(EXTRACTORS)}")


def _fidelity_features(images, levels, extractor, weights, batch_size, device) -> Features:
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    feature, logits = FIDELITY[extractor]
    wanted = [feature] + ([logits] if logits else [])
    weights = resolve_weights(extractor, weights)
    if extractor in dinov2.MODELS:
        dinov2.register()
    cuda = torch.device(device).type == "cuda"
    try:
        fe = create_feature_extractor(
            extractor,
            wanted,
            cuda=cuda,
            feature_extractor_weights_path=str(weights) if weights else None,
            verbose=False,
        )
        out = get_featuresdict_from_dataset(
            M.Images(M.to_rgb8(images, levels)), fe, batch_size, cuda, True, False
        )
    except Exception as exc:
        key = "inception_weights" if extractor == M.INCEPTION_EXTRACTOR else "feature_weights"
        raise M.MetricError(
            f"{extractor} features unavailable ({type(exc).__name__}: {str(exc)[:120]}); set "
            f"eval.{key} to a local weights file or use eval.feature_extractor: classifier"
        ) from None
    return Features(out[feature].double(), out[logits].double() if logits else None)
