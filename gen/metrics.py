"""Metrics as plain functions: bits/dim, and sample quality on feature vectors."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

LN2 = math.log(2.0)
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
class Images(torch.utils.data.Dataset):
    """uint8 images as torch-fidelity wants them."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def to_rgb8(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Discrete images -> 3-channel 0..255 uint8, the input the Inception extractor expects."""
    y = (x.float() * (255.0 / (levels - 1))).round().clamp(0, 255).to(torch.uint8)
    return y.expand(-1, 3, -1, -1).contiguous() if y.shape[1] == 1 else y


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


# ------------------------------------------------------------------ metrics on feature vectors
# FID, KID, density/coverage and copy rate straight from (N, D) feature matrices, so the same
# features (for example whitened ones) feed every metric and each can be bootstrapped.


def _features(x: torch.Tensor | np.ndarray, name: str = "features") -> np.ndarray:
    """(N, D) float64 numpy array from a tensor or array: float64 so covariances and sqrtm agree
    across callers, whatever precision the extractor produced."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be an (N, D) matrix, got shape {a.shape}")
    return a


def fid_from_features(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussian fits (mean, covariance with ddof=1) of two feature sets:
    ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)).

    The trace of the square root is the sum of the square roots of the eigenvalues of S_a S_b
    (real and >= 0 up to rounding: the real part of the complex roots is kept), as torch-fidelity
    computes it; scipy's sqrtm gives the same number but took seconds on whitened features, and
    the bootstrap calls this twenty times a run.
    """
    fa, fb = _features(a, "a"), _features(b, "b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature sizes differ: {fa.shape[1]} vs {fb.shape[1]}")
    if len(fa) < 2 or len(fb) < 2:
        raise ValueError("FID needs at least two feature vectors in each set")
    mu_a, mu_b = fa.mean(axis=0), fb.mean(axis=0)
    s_a = np.atleast_2d(np.cov(fa, rowvar=False))
    s_b = np.atleast_2d(np.cov(fb, rowvar=False))
    root_trace = np.sqrt(np.linalg.eigvals(s_a @ s_b).astype(np.complex128)).real.sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * root_trace)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel k(x, y) = (x.y / d + 1)^3."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD^2 of equal-size sets: within-set kernel means without the diagonal, minus
    twice the full cross mean (torch-fidelity's and Binkowski et al.'s "unbiased" estimator)."""
    m = len(k_xx)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid_from_features(
    a: torch.Tensor | np.ndarray,
    b: torch.Tensor | np.ndarray,
    subset_size: int,
    n_subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel distance (unbiased MMD^2, cubic polynomial kernel) averaged over random subsets.

    Returns (mean, std over subsets). It draws subsets exactly as torch-fidelity's
    `kid_features_to_metric` does (np.random.RandomState(seed); per subset `a`'s rows then `b`'s,
    without replacement) and, like it, reports the population std (ddof=0), so the two agree
    number for number at the same seed. subset_size is capped at min(len(a), len(b)).
    """
    fa, fb = _features(a, "a"), _features(b, "b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature sizes differ: {fa.shape[1]} vs {fb.shape[1]}")
    m = min(int(subset_size), len(fa), len(fb))
    if m < 2:
        raise ValueError("KID needs subsets of at least two feature vectors")
    if n_subsets < 1:
        raise ValueError("KID needs at least one subset")
    rng = np.random.RandomState(seed)
    mmds = np.empty(n_subsets)
    for i in range(n_subsets):
        x = fa[rng.choice(len(fa), m, replace=False)]
        y = fb[rng.choice(len(fb), m, replace=False)]
        mmds[i] = _mmd2_unbiased(_poly_kernel(x, x), _poly_kernel(x, y), _poly_kernel(y, y))
    return float(mmds.mean()), float(mmds.std())


def _sq_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of every row of x to every row of y, clamped at 0 (the
    expansion |x|^2 + |y|^2 - 2 x.y is fast but can round slightly below zero)."""
    d = (x * x).sum(axis=1)[:, None] + (y * y).sum(axis=1)[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d, 0.0)


def _chunk_rows(n_cols: int, budget: int = 2**24) -> int:
    """Rows per chunk so one chunk's distance matrix holds about `budget` float64 (128 MiB)."""
    return max(1, budget // max(1, n_cols))


def _kth_neighbour_sq_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row (the row itself is
    the 0th). Squared, as the distances it is compared with: a square root squared again
    rounds, and at the ball's edge rounding up puts the k-th neighbour itself inside."""
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}] for {len(x)} points, got {k}")
    out = np.empty(len(x))
    step = _chunk_rows(len(x))
    for i in range(0, len(x), step):
        d = _sq_distances(x[i : i + step], x)
        d[np.arange(len(d)), np.arange(i, i + len(d))] = 0.0  # self first, whatever the rounding
        out[i : i + step] = np.partition(d, k, axis=1)[:, k]
    return out


def density_coverage(
    real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, k: int = 5
) -> tuple[float, float]:
    """Density and coverage of Naeem et al. 2020 ("Reliable Fidelity and Diversity Metrics for
    Generative Models"), unlike precision/recall robust to outliers in either set.

    Each real point i gets a ball of radius r_i = distance to its k-th nearest other real point.
    density = (1 / (k M)) sum_j sum_i 1[|fake_j - real_i| < r_i] (about 1 when fakes are spread
    like the reals, above 1 when they crowd dense regions); coverage = the fraction of real balls
    holding at least one fake. Strict inequalities, as in the authors' `prdc` code. Distances are
    computed a block of real points at a time, so 5,000 x 5,000 sets fit in memory.
    """
    r, f = _features(real, "real"), _features(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature sizes differ: {r.shape[1]} vs {f.shape[1]}")
    if len(f) == 0:
        raise ValueError("density/coverage needs at least one fake feature vector")
    radius_sq = _kth_neighbour_sq_radius(r, k)
    inside, covered = 0, 0
    step = _chunk_rows(len(f))
    for i in range(0, len(r), step):
        within = _sq_distances(r[i : i + step], f) < radius_sq[i : i + step, None]
        inside += int(within.sum())
        covered += int(within.any(axis=1).sum())
    return inside / (k * len(f)), covered / len(r)


def _nearest(x: np.ndarray, y: np.ndarray, exclude_self: bool = False) -> tuple[np.ndarray, ...]:
    """Index of each row of x's nearest row of y and the distance to it, recomputed directly from
    the difference so an exact duplicate is at distance exactly 0 (not a rounding residue)."""
    idx = np.empty(len(x), dtype=np.int64)
    step = _chunk_rows(len(y))
    for i in range(0, len(x), step):
        d = _sq_distances(x[i : i + step], y)
        if exclude_self:
            d[np.arange(len(d)), np.arange(i, i + len(d))] = np.inf
        idx[i : i + step] = d.argmin(axis=1)
    return idx, np.linalg.norm(x - y[idx], axis=1)


def copy_rate(samples: torch.Tensor | np.ndarray, train: torch.Tensor | np.ndarray) -> float:
    """The fraction of samples that look copied from the training set, in the sense of the
    authenticity test of Alaa et al. 2022 ("How Faithful is your Synthetic Data?").

    A sample whose nearest training point is i, at distance d_s, is a copy when d_s < d_i, the
    distance from i to its own nearest other training point: it sits closer to a training image
    than any training image does. An exact duplicate (d_s = 0) always counts, even of a training
    image that is itself duplicated. Exact copies of training images give 1.0. Held-out real
    images do not give 0: a fresh draw often lands inside a training point's neighbourhood, about
    half the time in low dimensions (for 1,000 Gaussian points: 0.6 at D=2, 0.4 at D=8, 0.2 at
    D=64). So the value only means something next to the real-data row of the report.
    """
    s, t = _features(samples, "samples"), _features(train, "train")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"feature sizes differ: {s.shape[1]} vs {t.shape[1]}")
    if len(t) < 2 or len(s) == 0:
        raise ValueError("copy_rate needs at least one sample and two training points")
    _, d_train = _nearest(t, t, exclude_self=True)
    nn, d_sample = _nearest(s, t)
    copies = (d_sample < d_train[nn]) | (d_sample == 0.0)
    return float(copies.mean())


def bootstrap_spread(
    a: torch.Tensor | np.ndarray,
    b: torch.Tensor | np.ndarray,
    fn: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 20,
    seed: int = 0,
) -> float:
    """How much a two-set metric moves with the draw of `a` alone: the std (ddof=1) of
    fn(a[idx], b) over n_boot resamples of a's rows with replacement, b (the reference) fixed.

    It is the error bar of one model's FID or KID mean from its finite sample set, separate from
    the spread over training seeds. Seeded, so the same call gives the same spread.
    """
    fa, fb = _features(a, "a"), _features(b, "b")
    if n_boot < 2:
        raise ValueError("bootstrap_spread needs n_boot >= 2 to estimate a spread")
    rng = np.random.default_rng(seed)
    values = [float(fn(fa[rng.integers(0, len(fa), len(fa))], fb)) for _ in range(n_boot)]
    return float(np.std(values, ddof=1))


def whitener(fit: torch.Tensor | np.ndarray, floor: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Mean and whitening matrix W of the features `fit` (PCA whitening: the eigenvectors of their
    covariance scaled by 1 / sqrt(eigenvalue), eigenvalues floored at `floor` x the largest so
    near-empty directions are not blown up).

    KID's cubic polynomial kernel (x.y / d + 1)^3 assumes features of order 1 in every
    direction. The classifier's 128 features live mostly in about five directions: merely
    standardised, real-vs-real KID swung by +-0.015 with the test images drawn; whitened, by
    +-0.002 (and raw, KID read in the thousands). The same whitened features feed FID, KID,
    precision/recall, density/coverage and the copy rate, so all are computed in one space.
    """
    f = _features(fit, "fit")
    mean = f.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(f, rowvar=False))
    values = np.maximum(values, floor * values.max())
    return mean, vectors / np.sqrt(values)


def whiten(x: torch.Tensor | np.ndarray, mean: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Features x in the whitened space of `whitener`: (x - mean) @ W."""
    return (_features(x) - mean) @ w
