"""Metrics on feature vectors: FID, KID, density/coverage, copy rate, bootstrap spread, scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from gen import metrics
from gen.metrics import (
    bootstrap_spread,
    copy_rate,
    density_coverage,
    fid_from_features,
    kid_from_features,
    whiten,
    whitener,
)


def gaussian(n: int, d: int, seed: int, shift: float | np.ndarray = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# ------------------------------------------------------------------------------------ FID
def test_fid_of_a_set_with_itself_is_zero():
    x = gaussian(500, 8, 0)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fid_of_unit_gaussians_is_the_squared_mean_distance():
    mu = np.array([1.0, 2.0, 0.0, 0.0])
    fid = fid_from_features(gaussian(50_000, 4, 1), gaussian(50_000, 4, 2, shift=mu))
    assert fid == pytest.approx(float(mu @ mu), rel=0.03)


def test_fid_agrees_with_torch_fidelity():
    a, b = gaussian(300, 16, 3), gaussian(400, 16, 4, shift=0.3) * 1.5
    ours = fid_from_features(a, b)
    theirs = fid_statistics_to_metric(
        fid_features_to_statistics(torch.from_numpy(a)),
        fid_features_to_statistics(torch.from_numpy(b)),
        verbose=False,
    )["frechet_inception_distance"]
    assert ours == pytest.approx(theirs, rel=1e-4)


def test_fid_takes_float32_tensors_and_singular_covariances():
    a = torch.from_numpy(gaussian(10, 32, 5)).float()  # fewer points than dimensions
    b = torch.from_numpy(gaussian(12, 32, 6)).float()
    fid = fid_from_features(a, b)
    assert np.isfinite(fid) and fid > 0


def test_fid_rejects_mismatched_features():
    with pytest.raises(ValueError, match="feature sizes differ"):
        fid_from_features(gaussian(10, 3, 0), gaussian(10, 4, 0))


# ------------------------------------------------------------------------------------ KID
def test_kid_of_two_halves_of_one_whitened_sample_is_about_zero():
    x = gaussian(1000, 16, 7, shift=5.0) * 3.0
    z = whiten(x, *whitener(x))
    mean, std = kid_from_features(z[:500], z[500:], subset_size=200, n_subsets=50)
    assert abs(mean) < 0.01
    assert std > 0


def test_kid_of_a_shifted_distribution_is_clearly_positive():
    a, b = gaussian(500, 16, 8), gaussian(500, 16, 9, shift=0.5)
    mean, std = kid_from_features(a, b, subset_size=200, n_subsets=20)
    assert mean > 0.5 and mean > 10 * std


def test_kid_matches_torch_fidelity_at_the_same_subsets():
    a, b = gaussian(120, 8, 10), gaussian(150, 8, 11, shift=0.2)
    ours = kid_from_features(a, b, subset_size=50, n_subsets=10, seed=3)
    theirs = kid_features_to_metric(
        torch.from_numpy(a),
        torch.from_numpy(b),
        kid_subsets=10,
        kid_subset_size=50,
        rng_seed=3,
        verbose=False,
    )
    assert ours[0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-10)
    assert ours[1] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-10)


def test_kid_caps_the_subset_size_and_is_seeded():
    a, b = gaussian(30, 4, 12), gaussian(40, 4, 13)
    capped = kid_from_features(a, b, subset_size=1000, n_subsets=5)
    assert capped == kid_from_features(a, b, subset_size=30, n_subsets=5)
    assert capped == kid_from_features(a, b, subset_size=1000, n_subsets=5)
    assert capped != kid_from_features(a, b, subset_size=1000, n_subsets=5, seed=1)


# ------------------------------------------------------------------------ density/coverage
def test_fakes_equal_to_reals_cover_everything_at_density_about_one():
    x = gaussian(500, 8, 14)
    density, coverage = density_coverage(x, x, k=5)
    assert coverage == 1.0
    assert density == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize(("n", "d", "seed"), [(500, 8, 14), (200, 16, 0), (50, 2, 1)])
def test_density_of_a_set_against_itself_is_exactly_one(n: int, d: int, seed: int):
    # Each ball holds its own centre and the k-1 nearer neighbours, never the k-th on its
    # edge: k points per ball, k*M in all. Comparing a squared distance with a square root
    # squared again let rounding put the k-th inside, up to 1.05 on these sets.
    x = gaussian(n, d, seed)
    assert density_coverage(x, x, k=5) == (1.0, 1.0)


def test_fakes_far_from_every_real_have_zero_density_and_coverage():
    x = gaussian(200, 8, 15)
    assert density_coverage(x, x + 100.0, k=5) == (0.0, 0.0)


def test_density_coverage_of_a_hand_built_1d_case():
    real = np.array([[0.0], [1.0], [3.0], [7.0]])
    fake = np.array([[0.5], [5.5], [20.0]])
    # k=1 radii 1, 1, 2, 4: 0.5 is in the balls of 0 and 1, 5.5 only in 7's, 20 in none.
    assert density_coverage(real, fake, k=1) == pytest.approx((3 / 3, 3 / 4))
    # k=2 radii 3, 2, 3, 6: 0.5 is in the balls of 0, 1 and 3; 5.5 in those of 3 and 7.
    assert density_coverage(real, fake, k=2) == pytest.approx((5 / 6, 1.0))


def test_density_coverage_does_not_depend_on_the_chunking(monkeypatch):
    real, fake = gaussian(300, 6, 16), gaussian(250, 6, 17, shift=0.3)
    whole = density_coverage(real, fake, k=3)
    monkeypatch.setattr(metrics, "_chunk_rows", lambda n_cols, budget=0: 7)
    assert density_coverage(real, fake, k=3) == whole


def test_density_coverage_needs_more_reals_than_k():
    with pytest.raises(ValueError, match="k must be"):
        density_coverage(gaussian(5, 2, 0), gaussian(5, 2, 1), k=5)


# ------------------------------------------------------------------------------ copy rate
def test_exact_copies_of_training_points_are_all_copies():
    train = gaussian(200, 8, 18)
    assert copy_rate(train[:50], train) == 1.0
    assert copy_rate(torch.from_numpy(train[::3]).float().double(), train) == 1.0


def test_points_far_from_every_training_point_are_not_copies():
    train = gaussian(200, 8, 19)
    assert copy_rate(train + 1000.0, train) == 0.0


def test_copy_rate_of_a_hand_built_1d_case():
    train = np.array([[0.0], [1.0], [5.0], [6.0], [20.0]])  # own-neighbour distances 1,1,1,1,14
    samples = np.array([[0.4], [2.5], [12.0], [15.0]])
    # 0.4: 0.4 from 0 (< 1) copy; 2.5: 1.5 from 1 (> 1); 12: 6 from 6 (> 1); 15: 5 from 20 (< 14).
    assert copy_rate(samples, train) == 0.5


def test_an_exact_copy_of_a_duplicated_training_point_still_counts():
    train = np.array([[0.0], [0.0], [5.0]])
    assert copy_rate(np.array([[0.0], [2.0]]), train) == 0.5


def test_held_out_real_points_are_not_zero():
    train, held_out = gaussian(500, 2, 20), gaussian(500, 2, 21)
    assert 0.3 < copy_rate(held_out, train) < 0.8


# ----------------------------------------------------------------------- bootstrap spread
def test_bootstrap_spread_is_positive_for_random_data_and_seeded():
    a, b = gaussian(200, 4, 22), gaussian(200, 4, 23)
    spread = bootstrap_spread(a, b, fid_from_features, n_boot=10, seed=0)
    assert spread > 0
    assert bootstrap_spread(a, b, fid_from_features, n_boot=10, seed=0) == spread
    assert bootstrap_spread(a, b, fid_from_features, n_boot=10, seed=1) != spread


def test_bootstrap_spread_of_a_constant_metric_is_zero():
    a, b = gaussian(50, 4, 24), gaussian(50, 4, 25)
    assert bootstrap_spread(a, b, lambda x, y: 3.0, n_boot=5) == 0.0


def test_bootstrap_spread_keeps_the_reference_fixed():
    a, b = gaussian(60, 3, 26), gaussian(80, 3, 27)
    seen: list[tuple[int, bool]] = []

    def fn(x: np.ndarray, y: np.ndarray) -> float:
        seen.append((len(x), np.array_equal(y, b)))
        return float(x.mean())

    bootstrap_spread(a, b, fn, n_boot=4)
    assert seen == [(60, True)] * 4


# -------------------------------------------------------------------------------- whiten
def test_whitened_features_have_zero_mean_and_identity_covariance():
    rng = np.random.default_rng(30)
    mix = rng.normal(size=(6, 6))
    ref = rng.normal(size=(4000, 6)) @ mix + 7.0  # correlated, off-centre
    z = whiten(torch.from_numpy(ref), *whitener(ref, floor=1e-12))
    assert np.allclose(z.mean(axis=0), 0.0, atol=1e-9)
    assert np.allclose(np.cov(z, rowvar=False), np.eye(6), atol=1e-6)


def test_whitening_floors_empty_directions_instead_of_blowing_them_up():
    rng = np.random.default_rng(31)
    ref = np.concatenate([rng.normal(size=(500, 3)), np.zeros((500, 1))], axis=1)
    mean, w = whitener(ref)
    assert np.isfinite(w).all() and np.abs(whiten(ref, mean, w)).max() < 10
