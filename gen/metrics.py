"""Metrics as plain functions: bits/dim, and sample quality through torch-fidelity."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

LN2 = math.log(2.0)
CLASSIFIER_EXTRACTOR = "genbench-classifier"
INCEPTION_EXTRACTOR = "inception-v3-compat"


class MetricError(RuntimeError):
    """A metric cannot be computed (for example: Inception weights cannot be found or fetched)."""


def bits_per_dim(nll_nats: torch.Tensor | float, dims: int) -> float:
    """-log2 p(x) / D for an average negative log-likelihood in nats per image."""
    return float(nll_nats) / (dims * LN2)


@torch.no_grad()
def mean_nll(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> float:
    """Average -log p(x) in nats per image over `x`, evaluated in batches."""
    total = 0.0
    for i in range(0, len(x), batch_size):
        total += float(-log_prob(x[i : i + batch_size].to(device)).double().sum())
    return total / len(x)


def dataset_bpd(log_prob, x: torch.Tensor, batch_size: int = 500, device="cpu") -> float:
    """Bits/dim of data set `x` under `log_prob` (or a bound on it, if `log_prob` is a bound)."""
    dims = x[0].numel()
    return bits_per_dim(mean_nll(log_prob, x, batch_size, device), dims)


# ----------------------------------------------------------------------- torch-fidelity glue
class _Images(torch.utils.data.Dataset):
    """uint8 images as torch-fidelity wants them."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def _register_classifier_extractor() -> None:
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if CLASSIFIER_EXTRACTOR in FEATURE_EXTRACTORS_REGISTRY:
        return

    class ClassifierExtractor(FeatureExtractorBase):
        """The data set's own classifier: penultimate layer for FID/KID/PR, logits for IS."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            from gen.classifier import load_classifier

            if feature_extractor_weights_path is None:
                raise MetricError(
                    "the classifier feature extractor needs the classifier checkpoint"
                )
            self.net = load_classifier(feature_extractor_weights_path)

        @staticmethod
        def get_provided_features_list():
            return ("features", "logits_unbiased")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits_unbiased"}.get(metric, "features")

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            feats = self.net.features(x)
            out = {"features": feats, "logits_unbiased": self.net.head(feats)}
            return tuple(out[name] for name in self.features_list)

    torch_fidelity.register_feature_extractor(CLASSIFIER_EXTRACTOR, ClassifierExtractor)


def to_rgb8(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Discrete images -> 3-channel 0..255 uint8, the input the Inception extractor expects."""
    y = (x.float() * (255.0 / (levels - 1))).round().clamp(0, 255).to(torch.uint8)
    return y.expand(-1, 3, -1, -1).contiguous() if y.shape[1] == 1 else y


def sample_quality(
    samples: torch.Tensor,
    reference: torch.Tensor,
    levels: int,
    extractor: str = "classifier",
    weights_path: str | Path | None = None,
    kid_subset_size: int = 1000,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """FID, IS, KID and precision/recall of `samples` against `reference` (both uint8 images).

    `extractor="classifier"` uses the data set's classifier at `weights_path`; "inception-v3-compat"
    uses torch-fidelity's Inception (weights from `weights_path`, or its cache / a download).
    """
    import torch_fidelity

    if extractor == "classifier":
        _register_classifier_extractor()
        name, a, b = CLASSIFIER_EXTRACTOR, samples, reference
    elif extractor == INCEPTION_EXTRACTOR:
        name, a, b = INCEPTION_EXTRACTOR, to_rgb8(samples, levels), to_rgb8(reference, levels)
    else:
        raise MetricError(
            f"unknown feature extractor '{extractor}'; known: classifier, {INCEPTION_EXTRACTOR}"
        )
    subset = max(2, min(kid_subset_size, len(a), len(b)))
    try:
        out = torch_fidelity.calculate_metrics(
            input1=_Images(a),
            input2=_Images(b),
            cuda=torch.device(device).type == "cuda",
            isc=True,
            fid=True,
            kid=True,
            prc=True,
            feature_extractor=name,
            feature_extractor_weights_path=str(weights_path) if weights_path else None,
            kid_subset_size=subset,
            batch_size=batch_size,
            save_cpu_ram=True,
            cache=False,
            verbose=False,
        )
    except MetricError:
        raise
    except Exception as exc:
        if extractor == INCEPTION_EXTRACTOR:
            raise MetricError(
                f"Inception features unavailable ({type(exc).__name__}: {str(exc)[:120]}); set "
                "eval.inception_weights to a local weights file or use "
                "eval.feature_extractor: classifier"
            ) from None
        raise
    return {
        "fid": float(out["frechet_inception_distance"]),
        "is_mean": float(out["inception_score_mean"]),
        "is_std": float(out["inception_score_std"]),
        "kid_mean": float(out["kernel_inception_distance_mean"]),
        "kid_std": float(out["kernel_inception_distance_std"]),
        "precision": float(out["precision"]),
        "recall": float(out["recall"]),
    }


# ------------------------------------------------------------- codes and reconstructions
def code_accuracy(codes, predicted_classes, n_classes: int) -> float:
    """How well unsupervised codes name classes: the fraction of samples whose code is matched to
    their predicted class under the best one-to-one matching of codes to classes (the Hungarian
    algorithm on the confusion matrix). Permuting the codes does not change it; constant
    predictions give the share of the most frequent code (about 1/n_classes for uniform codes).
    """
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    c = np.asarray(codes, dtype=np.int64).reshape(-1)
    p = np.asarray(predicted_classes, dtype=np.int64).reshape(-1)
    if c.shape != p.shape:
        raise ValueError(f"{len(c)} codes but {len(p)} predicted classes")
    if len(c) == 0:
        raise ValueError("code_accuracy needs at least one sample")
    if c.min() < 0 or p.min() < 0 or p.max() >= n_classes:
        raise ValueError(f"codes must be >= 0 and predicted classes in [0, {n_classes})")
    confusion = np.zeros((int(c.max()) + 1, n_classes), dtype=np.int64)
    np.add.at(confusion, (c, p), 1)
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    return float(confusion[rows, cols].sum() / len(c))


def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor, levels: int) -> float:
    """Mean absolute difference of two uint8 image sets in [0, 1] intensity units."""
    if x.shape != x_hat.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    diff = (x.double() - x_hat.double()).abs() / (levels - 1)
    return float(diff.mean())


# ------------------------------------------------------------------- conditions obeyed
def agreement(predicted, wanted) -> float:
    """The fraction of samples whose predicted class (or domain) is the one asked for."""
    a = torch.as_tensor(predicted).reshape(-1)
    b = torch.as_tensor(wanted).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"{len(a)} predictions but {len(b)} wanted values")
    if len(a) == 0:
        raise ValueError("agreement needs at least one sample")
    return float((a == b).double().mean())


def masked_error(x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor, levels: int) -> float:
    """Mean absolute difference in [0, 1] units over the pixels where `mask` is set (the given
    patches): how faithfully a model kept what it was given."""
    if x.shape != x_hat.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    m = mask.bool().expand_as(x)
    if not m.any():
        raise ValueError("the mask selects no pixels")
    diff = (x.double() - x_hat.double()).abs() / (levels - 1)
    return float(diff[m].mean())
