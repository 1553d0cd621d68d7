"""Feature spaces: uint8 images -> feature vectors (and class logits), once per image set.

Every sample-quality figure (gen/evaluation.py) is computed from these vectors: in the data
set's classifier (gen/classifier.py), or in a torch-fidelity extractor from a local weights
file (Inception, VGG16, CLIP, DINOv2: gen/dinov2.py). torch-fidelity's extractors take RGB:
grayscale images have their one channel repeated three times, and `levels` are mapped to
0..255. Without a weights file, torch-fidelity downloads the official one (DINOv2: torch.hub's
cache); offline, the one line says which file to fetch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gen import dinov2
from gen import metrics as M

# torch-fidelity's CLIP image encoders; each reads OpenAI's TorchScript file as it is.
CLIP = (
    "clip-rn50",
    "clip-rn101",
    "clip-rn50x4",
    "clip-rn50x16",
    "clip-rn50x64",
    "clip-vit-b-32",
    "clip-vit-b-16",
    "clip-vit-l-14",
    "clip-vit-l-14-336px",
)

# torch-fidelity extractors: name -> (its feature, its class logits or None: no IS there)
FIDELITY: dict[str, tuple[str, str | None]] = {
    M.INCEPTION_EXTRACTOR: ("2048", "logits_unbiased"),
    "vgg16": ("fc2_relu", None),  # VGG16's classifier head is cut off: no logits
    **{name: ("clip", None) for name in CLIP},
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
    if given is not None and not Path(given).is_file():
        raise M.MetricError(f"{extractor}: no weights file {given}; {official_file(extractor)}")
    return given


def official_file(extractor: str) -> str:
    """Where the official weights of a torch-fidelity extractor come from, as advice."""
    key = "eval.feature_weights"
    if extractor == M.INCEPTION_EXTRACTOR:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3 as url

        key += " (or the older eval.inception_weights)"
    elif extractor == "vgg16":
        from torchvision.models import VGG16_Weights

        url = VGG16_Weights.IMAGENET1K_V1.url
    else:
        from torch_fidelity.feature_extractor_clip import MODEL_URLS

        url = MODEL_URLS[extractor]
    return f"download {url} and set {key} to its path"


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
        advice = (
            f"set eval.feature_weights to {extractor}'s weights file"
            if extractor in dinov2.MODELS
            else official_file(extractor)
        )
        raise M.MetricError(
            f"{extractor} features unavailable ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:120]}); {advice}, or use eval.feature_extractor: "
            "classifier"
        ) from None
    return Features(out[feature].double(), out[logits].double() if logits else None)
