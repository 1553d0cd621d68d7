"""Data sets by name: shapes, levels, fixed splits, the exact mixture and offline loaders."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gen.config import ConfigError, from_dict
from gen.data import (
    DATASETS,
    DataConfig,
    DataError,
    dataset_id,
    from_unit,
    load_split,
    save_split,
    to_unit,
)
from gen.datasets import load, mixture_log_prob, mixture_templates


# ---------------------------------------------------------------------------------- digits
def pairs(x: torch.Tensor, y: torch.Tensor) -> list[tuple[bytes, int]]:
    """Images with their labels, in a canonical order: splits compared as multisets."""
    return sorted(zip((bytes(r.numpy()) for r in x), y.tolist(), strict=True))


def whole_train(split) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split before the validation images were held out of it."""
    return torch.cat([split.train_x, split.val_x]), torch.cat([split.train_y, split.val_y])


def test_digits_are_1x8x8_uint8_with_17_levels_split_1437_360(digits):
    assert digits.meta.shape == (1, 8, 8)
    assert digits.meta.levels == 17 and digits.meta.n_classes == 10
    assert whole_train(digits)[0].shape == (1437, 1, 8, 8)
    assert digits.test_x.shape == (360, 1, 8, 8)
    for x in (digits.train_x, digits.test_x):
        assert x.dtype == torch.uint8
        assert int(x.max()) == 16
    assert whole_train(digits)[1].shape == (1437,) and digits.test_y.shape == (360,)
    assert digits.train_y.dtype == torch.int64


def test_digits_split_is_stratified_by_class(digits):
    train = torch.bincount(whole_train(digits)[1], minlength=10).double()
    test = torch.bincount(digits.test_y, minlength=10).double()
    expected = (train + test) * 0.2
    assert ((test - expected).abs() <= 1).all()


def test_digits_split_is_a_function_of_the_data_section_alone(digits):
    again = load(DataConfig())
    assert torch.equal(again.test_x, digits.test_x)
    assert torch.equal(again.train_y, digits.train_y)
    other = load(DataConfig(seed=1))  # the data's own seed moves the split
    assert not torch.equal(other.test_x, digits.test_x)


def test_validation_split_is_carved_from_training_and_stratified(digits):
    n_val, n_train = len(digits.val_x), len(digits.train_x)
    assert n_val == pytest.approx(0.1 * (n_val + n_train), abs=1)
    counts = torch.bincount(digits.val_y, minlength=10)
    assert (counts >= 10).all()  # every class held out
    val = {bytes(x.numpy()) for x in digits.val_x}
    train = {bytes(x.numpy()) for x in digits.train_x}
    test = {bytes(x.numpy()) for x in digits.test_x}
    # The sklearn digits hold a few duplicate images; disjoint indices leave only those shared.
    assert len(val & test) <= 2 and len(val & train) <= 2


def test_binarized_digits_have_two_levels_and_values_0_or_1(digits):
    split = load(DataConfig(binarize=True))
    assert split.meta.levels == 2
    for x in (split.train_x, split.test_x):
        assert x.dtype == torch.uint8
        assert set(x.unique().tolist()) == {0, 1}
    # Threshold at half intensity: a pixel is on when it is in the upper half of the 17 levels.
    assert torch.equal(split.train_x, (digits.train_x >= 9).to(torch.uint8))


def test_resized_digits_keep_levels_and_change_shape():
    split = load(DataConfig(image_size=16))
    assert split.meta.shape == (1, 16, 16) and split.train_x.shape[1:] == (1, 16, 16)
    assert split.meta.levels == 17 and int(split.train_x.max()) <= 16


def test_dataset_id_names_the_data_configuration():
    assert dataset_id(DataConfig()) == "digits"
    assert dataset_id(DataConfig(name="mnist", binarize=True, image_size=16)) == "mnist-bin-16px"


def test_to_unit_and_from_unit_round_trip_every_level():
    for levels in (2, 17, 256):
        x = torch.arange(levels, dtype=torch.uint8 if levels <= 256 else torch.int64)
        y = to_unit(x, levels)
        assert float(y.min()) == -1.0 and float(y.max()) == 1.0
        assert torch.equal(from_unit(y, levels), x.to(torch.uint8))


def test_saved_split_loads_back_identically(digits, tmp_path):
    save_split(digits, tmp_path / "prepared")
    back = load_split(tmp_path / "prepared")
    assert back.meta == digits.meta
    assert torch.equal(back.train_x, digits.train_x) and torch.equal(back.test_y, digits.test_y)


def test_loading_an_unprepared_split_names_the_folder(tmp_path):
    with pytest.raises(DataError, match="prepare"):
        load_split(tmp_path / "nothing")


# --------------------------------------------------------------------------------- mixture
@pytest.fixture(scope="module")
def mixture():
    return load(DataConfig(name="mixture", n_train=50, n_test=300))


def test_mixture_exact_test_bpd_is_the_mean_test_nll_in_bits_per_dim(mixture):
    log_probs, log_weights = mixture_templates(mixture.meta.extra["mixture_sigma"])
    nll = -mixture_log_prob(mixture.test_x, log_probs, log_weights)
    expected = float(nll.mean()) / (64 * math.log(2))
    assert mixture.meta.extra["exact_test_bpd"] == pytest.approx(expected, rel=1e-12)
    assert 0 < expected < math.log2(17)


def test_mixture_shapes_levels_and_sizes(mixture):
    assert mixture.meta.shape == (1, 8, 8) and mixture.meta.levels == 17
    assert len(mixture.train_x) + len(mixture.val_x) == 50
    assert mixture.train_x.shape[1:] == (1, 8, 8) and mixture.test_x.shape == (300, 1, 8, 8)
    assert mixture.train_x.dtype == torch.uint8 and int(mixture.test_x.max()) < 17


def test_mixture_is_a_function_of_its_params_not_the_seed(mixture):
    again = load(DataConfig(name="mixture", n_train=50, n_test=300))
    assert torch.equal(again.test_x, mixture.test_x)


def test_mixture_templates_are_normalised_categoricals():
    log_probs, log_weights = mixture_templates(1.5)
    assert log_probs.shape == (10, 64, 17)
    assert torch.allclose(
        log_probs.logsumexp(-1), torch.zeros(10, 64, dtype=torch.float64), atol=1e-12
    )
    assert float(log_weights.logsumexp(0)) == pytest.approx(0.0, abs=1e-12)


def test_mixture_log_prob_matches_a_direct_sum_over_components():
    log_probs, log_weights = mixture_templates(1.5)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 17, (3, 1, 8, 8), generator=g, dtype=torch.uint8)
    got = mixture_log_prob(x, log_probs, log_weights)
    for n in range(3):
        flat = x[n].flatten().long()
        per_component = [
            float(log_weights[k]) + sum(float(log_probs[k, d, flat[d]]) for d in range(64))
            for k in range(10)
        ]
        expected = float(torch.tensor(per_component, dtype=torch.float64).logsumexp(0))
        assert float(got[n]) == pytest.approx(expected, rel=1e-10)


def test_single_component_mixture_is_a_product_of_pixel_categoricals():
    log_probs, _ = mixture_templates(1.5)
    one = log_probs[3:4]  # one template, weight 1
    # Enumerating all 17**64 images is impossible; instead vary one pixel over its 17 values
    # with the others fixed: the probabilities then sum to the others' probability.
    x = torch.zeros(17, 1, 8, 8, dtype=torch.uint8)
    x.view(17, -1)[:, 10] = torch.arange(17, dtype=torch.uint8)
    lp = mixture_log_prob(x, one, torch.zeros(1, dtype=torch.float64))
    others = sum(float(one[0, d, 0]) for d in range(64) if d != 10)
    assert float(lp.logsumexp(0)) == pytest.approx(others, rel=1e-10)


def test_binarizing_the_mixture_is_a_config_error():
    with pytest.raises(ConfigError, match="mixture"):
        load(DataConfig(name="mixture", n_train=10, n_test=10, binarize=True))


# ------------------------------------------------------------------------------------ MNIST
def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format: big-endian magic (0x08 = uint8, then the number of dims), dims, raw bytes."""
    magic = 0x00000800 + array.ndim
    header = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_root(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    train[0], train[1] = 0, 200  # constant images stay constant when resized
    test = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    train_y, test_y = np.arange(20) % 10, np.arange(10)[::-1].copy()
    write_idx(raw / "train-images-idx3-ubyte", train)
    write_idx(raw / "train-labels-idx1-ubyte", train_y)
    write_idx(raw / "t10k-images-idx3-ubyte", test)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    return tmp_path, (train, train_y, test, test_y)


@pytest.fixture
def no_download(monkeypatch):
    """Downloads fail as they do offline, without waiting on (or using) the network."""
    import torchvision

    def fail(self, *args, **kwargs):
        raise RuntimeError("no network in tests")

    for name in ("MNIST", "FashionMNIST", "CIFAR10"):
        cls = getattr(torchvision.datasets, name)
        attr = "download" if hasattr(cls, "download") else "_download"
        monkeypatch.setattr(cls, attr, fail)


def test_mnist_loads_offline_from_idx_files_exactly(mnist_root, no_download):
    root, (train, train_y, test, test_y) = mnist_root
    split = load(DataConfig(name="mnist", root=str(root)))
    assert split.meta.shape == (1, 28, 28) and split.meta.levels == 256
    assert split.train_x.dtype == torch.uint8
    expected = pairs(torch.from_numpy(train).unsqueeze(1), torch.from_numpy(train_y))
    assert pairs(*whole_train(split)) == expected
    assert torch.equal(split.test_x, torch.from_numpy(test).unsqueeze(1))
    assert split.test_y.tolist() == test_y.tolist()


def test_mnist_resized_to_16_pixels(mnist_root, no_download):
    root, _ = mnist_root
    split = load(DataConfig(name="mnist", root=str(root), image_size=16))
    assert split.meta.shape == (1, 16, 16)
    x, _ = whole_train(split)
    assert x.shape == (20, 1, 16, 16) and split.test_x.shape == (10, 1, 16, 16)
    assert x.dtype == torch.uint8
    constant = {int(img.unique()[0]) for img in x if len(img.unique()) == 1}
    assert constant == {0, 200}


def test_missing_mnist_is_a_one_line_data_error_naming_the_folder(tmp_path, no_download):
    root = tmp_path / "empty"
    with pytest.raises(DataError) as info:
        load(DataConfig(name="mnist", root=str(root)))
    message = str(info.value)
    assert "\n" not in message
    assert f"{root}/MNIST/raw" in message
    assert "train-images-idx3-ubyte" in message


# ------------------------------------------------------------------------------ image folder
def test_image_folder_loads_class_subfolders_as_grayscale(tmp_path):
    from PIL import Image

    shades = {"cats": 30, "dogs": 220}
    for cls, shade in shades.items():
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (12, 10), (shade, shade, shade)).save(tmp_path / cls / f"{i}.png")
    split = load(DataConfig(name="image_folder", root=str(tmp_path), channels=1, image_size=8))
    assert split.meta.shape == (1, 8, 8) and split.meta.levels == 256
    assert split.meta.n_classes == 2
    assert len(whole_train(split)[0]) + len(split.test_x) == 10 and len(split.test_x) == 2
    x = torch.cat([whole_train(split)[0], split.test_x])
    y = torch.cat([whole_train(split)[1], split.test_y])
    assert x.dtype == torch.uint8
    for label, shade in enumerate(shades.values()):  # classes in sorted folder order
        assert (x[y == label] == shade).all()


def test_image_folder_defaults_to_rgb(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8), (10 * i, 0, 255)).save(tmp_path / f"{i}.png")
    split = load(DataConfig(name="image_folder", root=str(tmp_path), image_size=8))
    assert split.meta.shape == (3, 8, 8) and split.meta.n_classes == 1


def test_missing_image_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load(DataConfig(name="image_folder", root=str(tmp_path / "nope")))


# ----------------------------------------------------------------------------------- config
def test_unknown_data_set_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError) as info:
        from_dict(DataConfig, "data", {"name": "nope"})
    message = str(info.value)
    assert "'nope'" in message
    assert all(name in message for name in DATASETS)
