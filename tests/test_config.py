"""params.yaml sections -> validated dataclasses, with one-line errors that name the key."""

from __future__ import annotations

import pytest
import torch

from gen.classifier import ClassifierConfig
from gen.config import ConfigError, as_dict, from_dict
from gen.data import DataConfig, DataMeta
from gen.registry import MODELS, build

META_8 = DataMeta("tiny", 1, 8, 8, levels=17, n_classes=10)


def config_error(cls, section: str, values) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict(cls, section, values)
    message = str(info.value)
    assert "\n" not in message, "config errors are one line"
    return message


@pytest.mark.parametrize("name", list(MODELS))
def test_unknown_key_is_named_with_the_allowed_keys(name):
    cls = MODELS[name].Config
    message = config_error(cls, name, {"learning_rate": 0.1})
    assert "'learning_rate'" in message and f"'{name}'" in message
    assert "allowed:" in message and "lr" in message and "steps" in message


@pytest.mark.parametrize("name", list(MODELS))
def test_negative_learning_rate_is_rejected_for_every_model(name):
    message = config_error(MODELS[name].Config, name, {"lr": -0.1})
    assert f"{name}.lr" in message


@pytest.mark.parametrize("name", list(MODELS))
def test_defaults_build_a_model_and_survive_a_dict_round_trip(name):
    cls = MODELS[name].Config
    cfg = from_dict(cls, name, {})
    assert from_dict(cls, name, as_dict(cfg)) == cfg


def test_literal_values_list_the_choices():
    message = config_error(MODELS["dcgan"].Config, "dcgan", {"gan_loss": "bogus"})
    assert "dcgan.gan_loss" in message and "'bogus'" in message
    assert "non_saturating" in message and "minimax" in message


def test_numbers_written_as_strings_are_accepted():
    # PyYAML reads `1e-3` (no dot) as a string.
    cfg = from_dict(MODELS["vae"].Config, "vae", {"lr": "1e-3", "steps": "1e3"})
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.steps == 1000 and isinstance(cfg.steps, int)


@pytest.mark.parametrize(
    "values, key",
    [
        ({"steps": 2.5}, "pixelcnn.steps"),
        ({"steps": True}, "pixelcnn.steps"),
        ({"steps": "many"}, "pixelcnn.steps"),
        ({"lr": "fast"}, "pixelcnn.lr"),
        ({"lr": None}, "pixelcnn.lr"),
        ({"channels": 0}, "pixelcnn.channels"),
        ({"first_kernel": 4}, "pixelcnn.first_kernel"),
        ({"dropout": 1.0}, "pixelcnn.dropout"),
    ],
)
def test_bad_values_name_the_key(values, key):
    assert key in config_error(MODELS["pixelcnn"].Config, "pixelcnn", values)


@pytest.mark.parametrize(
    "values, key",
    [
        ({"binarize": "yes"}, "data.binarize"),
        ({"name": 3}, "data.name"),
        ({"channels": 2}, "data.channels"),
        ({"test_fraction": 1.0}, "data.test_fraction"),
        ({"image_size": 2}, "data.image_size"),
    ],
)
def test_bad_data_values_name_the_key(values, key):
    assert key in config_error(DataConfig, "data", values)


def test_optional_values_accept_null():
    assert from_dict(DataConfig, "data", {"image_size": None}).image_size is None


def test_classifier_section_is_validated():
    assert "classifier.epochs" in config_error(ClassifierConfig, "classifier", {"epochs": 0})


@pytest.mark.parametrize("values", [5, "digits", ["name"], [["name", "digits"]]])
def test_a_section_that_is_not_a_mapping_is_a_config_error(values):
    assert "'data'" in config_error(DataConfig, "data", values)


def test_dcgan_takes_28x28_from_a_7x7_start_as_the_classic_mnist_dcgan():
    meta = DataMeta("mnist", 1, 28, 28, levels=256, n_classes=10)
    model = build("dcgan", {}, meta)
    assert tuple(model.generator_net[1].kernel_size) == (7, 7)
    assert model.sample(2, torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)


def test_pixelcnn_channels_are_rounded_up_to_twice_the_data_channels():
    meta = DataMeta("rgb", 3, 8, 8, levels=256, n_classes=10)
    assert build("pixelcnn", {"channels": 8}, meta).cfg.channels == 12


def test_unknown_model_lists_the_known_models():
    with pytest.raises(ConfigError) as info:
        build("nope", {}, META_8)
    message = str(info.value)
    assert "'nope'" in message
    assert all(name in message for name in MODELS)


@pytest.mark.parametrize(
    "cls, section, values, message",
    [
        (MODELS["vae"].Config, "vae", {"lr": 2}, "vae.lr=2.0 must be <= 1 (Adam's step size)"),
        (MODELS["dcgan"].Config, "dcgan", {"beta2": 1}, "dcgan.beta1/beta2 must be in [0, 1)"),
        (MODELS["ae"].Config, "ae", {"weight_decay": -1}, "ae.weight_decay must be >= 0"),
        (MODELS["aae"].Config, "aae", {"latent_dim": 0}, "aae.latent_dim=0 must be > 0"),
        (
            MODELS["pixelrnn_row"].Config,
            "pixelrnn_row",
            {"kernel": 4},
            "pixelrnn_row.kernel=4 must be an odd number >= 3",
        ),
        (
            MODELS["pixelcnn"].Config,
            "pixelcnn",
            {"dropout": 1},
            "pixelcnn.dropout=1.0 must be in [0, 1)",
        ),
        (
            MODELS["gan"].Config,
            "gan",
            {"g_hidden": [256, 0]},
            "gan.g_hidden=[256, 0] must be a non-empty list of sizes > 0",
        ),
        (
            MODELS["cyclegan"].Config,
            "cyclegan",
            {"g_downsamplings": -1},
            "cyclegan.g_downsamplings=-1 must be >= 0 (or null)",
        ),
        (DataConfig, "data", {"val_fraction": 0.5}, "data.val_fraction=0.5 must be in (0, 0.5)"),
        (DataConfig, "data", {"n_test": 0}, "data.n_train and n_test must be > 0"),
        (
            DataConfig,
            "data",
            {"domains": "zebras"},
            "data.domains='zebras' is not allowed; choose one of: "
            "typeset, cyclegan_folder, domain_folders, attribute_csv, none",
        ),
    ],
)
def test_field_rules_keep_their_messages(cls, section, values, message):
    assert config_error(cls, section, values) == message
