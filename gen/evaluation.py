"""The evaluation protocol: which metrics a model gets, computed in one feature space.

One metric registry (`METRICS`) names every figure genbench reports; `metrics.json`, MLflow,
the report's columns and notes and the tests all read it. What a model is measured on follows
from what it declares it can do (`model.capabilities`, gen/capabilities.py), in this one place.

Sample quality is computed once per (samples, reference) pair from features extracted once
(gen/features.py): the feature extractor's vectors are whitened with the training split's mean
and covariance (fixed: the same for every model, seed and draw), and FID, KID, precision /
recall, density / coverage and the copy rate are all computed in that space. KID's cubic
kernel assumes features of order 1 in every direction, so on raw 128-d classifier features it
read in the thousands; whitened, real-vs-real KID is about 0 (see `gen.metrics.whitener`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from gen import metrics as M
from gen.features import Features, extract

Table = Literal["quality", "conditions", "cost", "validation"]


@dataclass(frozen=True)
class Metric:
    """One reported figure: how it is labelled, formatted and read."""

    key: str  # the key in metrics.json and the MLflow metric name
    label: str  # the report's column header
    fmt: str  # format of one number
    better: Literal["lower", "higher", "none"]
    table: Table
    note: str = ""


METRICS: tuple[Metric, ...] = (
    Metric(
        "bpd",
        "bits/dim",
        "{:.3f}",
        "lower",
        "quality",
        "-log2 p(x) per dimension on the test split: exact for autoregressive models and the "
        "baseline, the importance-weighted bound (an upper bound) for the VAE",
    ),
    Metric("elbo_bpd", "ELBO bits/dim", "{:.3f}", "lower", "quality", "the VAE's ELBO bound"),
    Metric(
        "fid",
        "FID",
        "{:.2f}",
        "lower",
        "quality",
        "Frechet distance of samples to the test split in the whitened feature space",
    ),
    Metric(
        "fid_sd",
        "FID draw sd",
        "{:.2f}",
        "none",
        "quality",
        "the sampling spread of one run's FID: sd over bootstrap resamples of its samples",
    ),
    Metric(
        "kid_mean",
        "KID",
        "{:.4f}",
        "lower",
        "quality",
        "unbiased MMD^2, cubic kernel, whitened features (real vs real is about 0)",
    ),
    Metric("is_mean", "IS", "{:.2f}", "higher", "quality", "Inception score of the logits"),
    Metric("precision", "precision", "{:.3f}", "higher", "quality", "k=3 manifold (Kynkaanniemi)"),
    Metric("recall", "recall", "{:.3f}", "higher", "quality", "k=3 manifold (Kynkaanniemi)"),
    Metric("density", "density", "{:.3f}", "higher", "quality", "k=5 (Naeem et al. 2020)"),
    Metric("coverage", "coverage", "{:.3f}", "higher", "quality", "k=5 (Naeem et al. 2020)"),
    Metric(
        "copy_rate",
        "copy rate",
        "{:.3f}",
        "none",
        "quality",
        "memorisation: the share of samples closer to their nearest training image than that "
        "image is to its own nearest training neighbour (Alaa et al. 2022's authenticity test); "
        "the data row gives held-out validation images, what a model that draws new images "
        "gets, and 1.0 would be copies",
    ),
    Metric(
        "reconstruction_error",
        "recon err",
        "{:.3f}",
        "lower",
        "quality",
        "mean |x - decode(encode(x))| on the test split, 0-1 units",
    ),
    Metric(
        "code_accuracy",
        "code acc",
        "{:.2f}",
        "higher",
        "quality",
        "InfoGAN: how well the categorical code names the classifier's class of its samples",
    ),
    Metric(
        "condition_accuracy",
        "condition acc",
        "{:.3f}",
        "higher",
        "conditions",
        "text2image: the data set's classifier names the caption's digit in the image",
    ),
    Metric(
        "patch_error",
        "patch err",
        "{:.3f}",
        "lower",
        "conditions",
        "puzzlegan: mean |difference| on the given patches, 0-1 units",
    ),
    Metric(
        "label_preservation",
        "label kept",
        "{:.3f}",
        "higher",
        "conditions",
        "translation: the (domain, digit) classifier still reads the source digit",
    ),
    Metric(
        "domain_accuracy",
        "domain acc",
        "{:.3f}",
        "higher",
        "conditions",
        "translation: the (domain, digit) classifier reads the target domain",
    ),
    Metric(
        "cycle_error",
        "cycle err",
        "{:.3f}",
        "lower",
        "conditions",
        "translation: mean |x - back(translate(x))|, 0-1 units",
    ),
    Metric(
        "train_seconds", "train s", "{:.0f}", "lower", "cost", "wall-clock of the gradient steps"
    ),
    Metric(
        "train_images_per_s",
        "train img/s",
        "{:.0f}",
        "higher",
        "cost",
        "training images the model's losses read per second (a GAN's generator step reads none)",
    ),
    Metric("sample_images_per_s", "sample img/s", "{:.0f}", "higher", "cost", "sampling speed"),
    Metric("params", "params", "{:,.0f}", "none", "cost", "trainable parameters"),
    Metric(
        "val_bpd",
        "val bits/dim",
        "{:.3f}",
        "lower",
        "validation",
        "bits/dim (or its bound) on the validation split at the end of training",
    ),
)
BY_KEY = {m.key: m for m in METRICS}
# The quality figures a `data` row has: real images against the same reference.
REFERENCE_KEYS = ("fid", "kid_mean", "is_mean", "precision", "recall", "density", "coverage")
# The figures computed in a feature space (`quality`): another space gives other ones, or none.
SPACE_KEYS = (*REFERENCE_KEYS, "fid_sd", "copy_rate")


def metric(key: str) -> Metric:
    return BY_KEY[key]


def empty_metrics() -> dict[str, Any]:
    """Every registered key, None until measured: n/a in the report, never a made-up number."""
    return {m.key: None for m in METRICS}


# ------------------------------------------------------------------------- feature space
def quality(
    samples: Features,
    reference: Features,
    scale: Features,
    train: Features | None = None,
    kid_subset_size: int = 1000,
    n_boot: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """FID, KID, IS, precision/recall, density/coverage of `samples` against `reference` (FID
    and KID agree with torch-fidelity's to 1e-4 / 1e-10, tests/test_feature_metrics.py), each
    with its own sampling spread (FID: bootstrap over the samples; KID: sd over its random
    subsets of the samples); with `train`, the copy
    rate. Features are whitened first with the statistics of `scale`, a fixed set (the
    training split: the same for every model and draw)."""
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    mean, w = M.whitener(scale.features.numpy())

    def std_(f: Features | None) -> np.ndarray | None:
        return None if f is None else M.whiten(f.features.numpy(), mean, w)

    a, b, t = std_(samples), std_(reference), std_(train)
    subset = max(2, min(kid_subset_size, len(a), len(b)))
    kid_mean, kid_sd = M.kid_from_features(a, b, subset, n_subsets=100, seed=seed)
    A, B = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    prc = prc_features_to_metric(A, B, prc_neighborhood=3, verbose=False)
    density, coverage = M.density_coverage(b, a, k=5)
    out: dict[str, float] = {
        "fid": M.fid_from_features(a, b),
        "fid_sd": M.bootstrap_spread(a, b, M.fid_from_features, n_boot=n_boot, seed=seed),
        "kid_mean": kid_mean,
        "kid_sd": kid_sd,  # over its 100 random subsets
        "precision": float(prc["precision"]),
        "recall": float(prc["recall"]),
        "density": density,
        "coverage": coverage,
    }
    if samples.logits is not None:  # a space without classes (DINOv2) has no IS
        isc = isc_features_to_metric(samples.logits, splits=10, shuffle=True, rng_seed=seed)
        out["is_mean"] = float(isc["inception_score_mean"])
        out["is_std"] = float(isc["inception_score_std"])
    if t is not None:
        out["copy_rate"] = M.copy_rate(a, t)
    return out


# ---------------------------------------------------------------------------- the policy
@dataclass(frozen=True)
class Protocol:
    """How samples are scored: the `eval:` settings and the feature extractors' weights."""

    extractor: str = "classifier"
    classifier: Path | None = None  # the data set's classifier (classes)
    domain_classifier: Path | None = None  # the (domain, class) classifier (translation)
    feature_weights: str | Path | None = None  # a torch-fidelity extractor's weights file
    n_samples: int = 1000
    iwae_k: int = 100
    batch_size: int = 500
    kid_subset_size: int = 1000
    n_boot: int = 20
    reference_draws: int = 5

    def weights(self, space: str) -> str | Path | None:
        """The weights of feature space `space` ("classes" or "domains")."""
        if self.extractor != "classifier":
            return self.feature_weights
        return self.classifier if space == "classes" else self.domain_classifier

    def space_name(self, space: str) -> str:
        """The name tables and charts group by: the extractor, and `domain-` before it for
        translation's space (another network, or the same one whitened over the domains'
        images and scored against each domain's own test images)."""
        name = "classifier" if self.extractor == "classifier" else self.extractor
        return name if space == "classes" else f"domain-{name}"


def evaluate_model(
    model: Any,
    split: Any,
    saved: dict[str, torch.Tensor],
    protocol: Protocol,
    seed: int,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Every metric `model` has, on the test split: likelihood, reconstructions, codes, then
    what its condition kind measures (conditions obeyed, sample quality). Keys not measured
    stay None."""
    from gen import classifier as clf

    caps = model.capabilities
    levels, bs, test = split.meta.levels, protocol.batch_size, split.test_x
    out = empty_metrics()
    torch.manual_seed(seed)
    if caps.likelihood == "exact":
        out["bpd"] = M.dataset_bpd(model.log_prob, test, bs, device)
        out["bpd_kind"] = "exact"
    elif caps.likelihood == "bound":
        k = protocol.iwae_k
        bound = lambda x: model.iwae_bound(x, k)  # noqa: E731
        out["bpd"] = M.dataset_bpd(bound, test, max(1, bs // 4), device)
        out["elbo_bpd"] = M.dataset_bpd(model.elbo, test, bs, device)
        out["bpd_kind"] = f"iwae-{k}"
    if caps.reconstructs:
        with torch.no_grad():
            rec = torch.cat(
                [
                    model.reconstruct(test[i : i + bs].to(device)).cpu()
                    for i in range(0, len(test), bs)
                ]
            )
        out["reconstruction_error"] = M.reconstruction_error(test, rec, levels)
    if caps.codes:
        net = clf.load_classifier(protocol.classifier, device)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            images, codes = model.sample_with_codes(protocol.n_samples, generator=g)
        predicted = clf.predict(net, images.cpu())
        out["code_accuracy"] = M.code_accuracy(codes.cpu(), predicted, split.meta.n_classes)
    out.update(model.condition.metrics(model, split, saved, protocol, seed, device))
    return out


def sample_quality(
    samples: torch.Tensor,
    split: Any,
    protocol: Protocol,
    seed: int,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Quality of uint8 `samples` against the test split in the classes' feature space, with
    the copy rate against the training split."""
    levels, bs, weights = split.meta.levels, protocol.batch_size, protocol.weights("classes")
    a, b, train = (
        extract(x, levels, protocol.extractor, weights, bs, device)
        for x in (samples, split.test_x, split.train_x)
    )
    out: dict[str, Any] = quality(
        a, b, train, train, protocol.kid_subset_size, protocol.n_boot, seed
    )
    out["feature_extractor"] = protocol.space_name("classes")
    return out


def domain_features(x, levels, protocol: Protocol, device) -> Features:
    return extract(
        x, levels, protocol.extractor, protocol.weights("domains"), protocol.batch_size, device
    )


def domain_quality(images, reference, scale, levels, protocol: Protocol, seed, device):
    """Translations (or real images) of one domain against that domain's test images, whitened
    by the statistics of every domain's training images in the domain classifier's space."""
    a, b = (domain_features(x, levels, protocol, device) for x in (images, reference))
    return quality(a, b, scale, None, protocol.kid_subset_size, protocol.n_boot, seed)


def mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means of per-domain quality figures; spreads (sd) are dropped, not averaged."""
    keys = [k for k in rows[0] if not k.endswith(("_sd", "_std"))]
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def reference_rows(split: Any, protocol: Protocol, device: torch.device | str = "cpu"):
    """The `data` rows: real training images scored exactly as a model's samples are, at the
    same count, over `reference_draws` draws: the floor a perfect model reaches. The copy rate
    is that of held-out validation images (a model that draws new images), since training
    images are their own nearest neighbours. With domains, a second set of rows in the
    domain classifier's space: each domain's training images against its test images."""
    levels, bs = split.meta.levels, protocol.batch_size
    n = min(protocol.n_samples, len(split.train_x))
    weights = protocol.weights("classes")

    def feats(x: torch.Tensor, w) -> Features:
        return extract(x, levels, protocol.extractor, w, bs, device)

    train, test = feats(split.train_x, weights), feats(split.test_x, weights)
    held_out = feats(split.val_x, weights)
    copies = quality(held_out, test, train, train, protocol.kid_subset_size, 2, 0)["copy_rate"]
    rows: dict[str, list[dict[str, float]]] = {protocol.space_name("classes"): []}
    g = torch.Generator().manual_seed(0)
    for draw in range(protocol.reference_draws):
        idx = torch.randperm(len(split.train_x), generator=g)[:n]
        logits = None if train.logits is None else train.logits[idx]
        pick = Features(train.features[idx], logits)
        row = quality(pick, test, train, None, protocol.kid_subset_size, protocol.n_boot, draw)
        rows[protocol.space_name("classes")].append({**row, "copy_rate": copies})
    d = split.domains
    if d is not None and protocol.domain_classifier is not None:
        space = protocol.space_name("domains")
        rows[space] = []
        per_domain = max(2, protocol.n_samples // 2)  # about what a translation target gets
        scale = domain_features(d.train_x, levels, protocol, device)
        for draw in range(protocol.reference_draws):
            per = []
            for t in range(len(d.names)):
                pool = d.train_x[d.train_d == t]
                idx = torch.randperm(len(pool), generator=g)[: min(per_domain, len(pool))]
                ref = d.test_x[d.test_d == t]
                per.append(domain_quality(pool[idx], ref, scale, levels, protocol, draw, device))
            rows[space].append(mean_of(per))
    return rows
