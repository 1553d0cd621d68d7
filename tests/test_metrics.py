"""Metric functions against closed forms and limiting cases."""

from __future__ import annotations

import math

import pytest
import torch

from gen.classifier import ClassifierConfig, classifier_checkpoint, train_classifier
from gen.evaluation import quality as quality_of
from gen.features import extract
from gen.metrics import (
    MetricError,
    agreement,
    bits_per_dim,
    dataset_bpd,
    masked_error,
    mean_nll,
    to_rgb8,
)
from gen.models.baseline import Baseline, BaselineConfig

KEYS = {"fid", "fid_sd", "is_mean", "is_std", "kid_mean", "kid_sd", "precision", "recall"}
KEYS |= {"density", "coverage", "copy_rate"}


def sample_quality(x, reference, levels, extractor="classifier", weights_path=None, train=None):
    """Features of both sets (and the training images), then every quality figure, scaled by
    the statistics of a third set, as the evaluation scales by the validation split."""
    f = [extract(y, levels, extractor, weights_path) for y in (x, reference)]
    t = extract(train, levels, extractor, weights_path) if train is not None else None
    scale = t if t is not None else f[1]
    return quality_of(f[0], f[1], scale, t, kid_subset_size=100, n_boot=5)


# ------------------------------------------------------------------------------ likelihoods
def test_bits_per_dim_is_nats_over_dims_times_ln2():
    assert bits_per_dim(64 * math.log(17), 64) == pytest.approx(math.log2(17), rel=1e-12)
    assert bits_per_dim(torch.tensor(784 * math.log(2.0)), 784) == pytest.approx(1.0, rel=1e-6)
    assert bits_per_dim(0.0, 10) == 0.0


def test_dataset_bpd_of_a_uniform_model_is_log2_levels_whatever_the_batching():
    levels, x = 17, torch.zeros(23, 1, 8, 8, dtype=torch.uint8)

    def uniform(batch: torch.Tensor) -> torch.Tensor:
        return torch.full((len(batch),), -64 * math.log(levels), dtype=torch.float64)

    for batch_size in (1, 7, 500):
        bpd = dataset_bpd(uniform, x, batch_size=batch_size)
        assert bpd == pytest.approx(math.log2(levels), rel=1e-9)


def test_mean_nll_is_the_average_over_images_not_batches():
    x = torch.arange(10).view(10, 1, 1, 1)

    def log_prob(batch: torch.Tensor) -> torch.Tensor:
        return -batch.flatten().double()

    assert mean_nll(log_prob, x, batch_size=3) == pytest.approx(4.5)


def test_to_rgb8_maps_the_top_level_to_255_and_grey_to_three_channels():
    x = torch.tensor([0, 8, 16], dtype=torch.uint8).view(1, 1, 1, 3)
    y = to_rgb8(x, 17)
    assert y.shape == (1, 3, 1, 3) and y.dtype == torch.uint8
    assert y[0, :, 0].tolist() == [[0, 128, 255]] * 3


# ---------------------------------------------------------------------------- sample quality
@pytest.fixture(scope="module")
def classifier_path(digits, tmp_path_factory):
    cfg = ClassifierConfig(epochs=2)
    model = train_classifier(digits.train_x, digits.train_y, 17, 10, cfg, seed=0)
    path = tmp_path_factory.mktemp("classifier") / "classifier.pt"
    torch.save(classifier_checkpoint(model, cfg), path)
    return path


@pytest.fixture(scope="module")
def quality(digits, classifier_path):
    """sample_quality of three sample sets against the test set, with the data's classifier."""
    test_x = digits.test_x
    g = torch.Generator().manual_seed(0)
    baseline = Baseline(BaselineConfig(), digits.meta)
    baseline.fit_data(digits.train_x)
    sets = {
        "itself": test_x,
        "baseline": baseline.sample(len(test_x), g),
        "noise": torch.randint(0, 17, test_x.shape, generator=g, dtype=torch.uint8),
    }
    train = digits.train_x
    return {
        name: sample_quality(x, test_x, 17, weights_path=classifier_path, train=train)
        for name, x in sets.items()
    }


def test_sample_quality_returns_every_metric_as_a_finite_float(quality):
    for result in quality.values():
        assert set(result) == KEYS
        assert all(isinstance(v, float) and math.isfinite(v) for v in result.values())


def test_fid_of_the_test_set_against_itself_is_zero(quality):
    fid = quality["itself"]["fid"]
    assert abs(fid) < 1e-2
    assert abs(fid) < 1e-3 * quality["baseline"]["fid"]


def test_precision_and_recall_of_the_test_set_against_itself_are_one(quality):
    assert quality["itself"]["precision"] == pytest.approx(1.0)
    assert quality["itself"]["recall"] == pytest.approx(1.0)


def test_fid_orders_noise_worse_than_baseline_samples_worse_than_real_data(quality):
    fid = {name: result["fid"] for name, result in quality.items()}
    assert fid["itself"] < fid["baseline"] < fid["noise"]
    assert fid["noise"] > 2 * fid["baseline"]


def test_inception_score_of_real_digits_beats_noise(quality):
    assert quality["itself"]["is_mean"] > 2 * quality["noise"]["is_mean"]


def test_kid_of_real_against_real_is_about_zero_on_whitened_features(quality):
    assert abs(quality["itself"]["kid_mean"]) < 0.01
    assert quality["noise"]["kid_mean"] > 100 * max(abs(quality["itself"]["kid_mean"]), 1e-4)


def test_density_and_coverage_of_real_data_beat_noise(quality):
    assert quality["itself"]["coverage"] == pytest.approx(1.0)
    assert quality["noise"]["coverage"] < 0.2 < quality["baseline"]["coverage"]
    assert quality["noise"]["density"] < quality["itself"]["density"]


def test_copy_rate_of_training_images_is_one_and_of_held_out_ones_is_not(digits, classifier_path):
    train = digits.train_x
    copies = sample_quality(
        train[:200], digits.test_x, 17, weights_path=classifier_path, train=train
    )
    held_out = sample_quality(
        digits.val_x, digits.test_x, 17, weights_path=classifier_path, train=train
    )
    assert copies["copy_rate"] == 1.0
    assert held_out["copy_rate"] < 0.8


def test_inception_extractor_with_missing_weights_raises_metric_error(tmp_path):
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    missing = tmp_path / "no-such-weights.pth"
    with pytest.raises(MetricError) as info:
        sample_quality(x, x, 17, extractor="inception-v3-compat", weights_path=missing)
    assert "\n" not in str(info.value)
    assert "inception_weights" in str(info.value)


def test_classifier_extractor_without_a_checkpoint_raises_metric_error():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(MetricError, match="classifier"):
        sample_quality(x, x, 17, extractor="classifier", weights_path=None)


def test_unknown_feature_extractor_raises_metric_error_naming_the_known_ones():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(MetricError, match="known: classifier, inception-v3-compat"):
        sample_quality(x, x, 17, extractor="clip")


# --------------------------------------------------------------------- conditions obeyed
def test_agreement_is_the_fraction_of_predictions_that_match():
    assert agreement([1, 2, 3, 4], [1, 2, 0, 0]) == 0.5
    assert agreement(torch.tensor([7]), torch.tensor([7])) == 1.0
    with pytest.raises(ValueError, match="3 predictions but 2"):
        agreement([1, 2, 3], [1, 2])


def test_masked_error_looks_only_inside_the_mask():
    x = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
    y = torch.tensor([[[[16, 0], [0, 8]]]], dtype=torch.uint8)
    mask = torch.tensor([[[[True, False], [False, True]]]])
    assert masked_error(x, y, mask, 17) == pytest.approx((1.0 + 0.5) / 2)
    assert masked_error(x, y, ~mask, 17) == 0.0
    with pytest.raises(ValueError, match="selects no pixels"):
        masked_error(x, y, torch.zeros_like(mask), 17)


def test_joint_classifier_reads_class_and_domain_by_summing_over_the_other():
    from gen.classifier import Classifier, predict_joint

    net = Classifier(1, 17, n_classes=2 * 3)  # 2 domains x 3 classes
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    # Logits favour (domain 1, class 0) alone, but classes 2 of both domains together win class.
    bias = torch.log(torch.tensor([0.0001, 0.0001, 0.3, 0.35, 0.0001, 0.3]))
    net.head[-1].bias.data = bias
    labels, domains = predict_joint(net.eval(), torch.zeros(4, 1, 8, 8, dtype=torch.uint8), 3)
    assert labels.tolist() == [2] * 4  # 0.6 for class 2 against 0.35 for class 0
    assert domains.tolist() == [1] * 4  # 0.65 for domain 1 against 0.3 for domain 0
