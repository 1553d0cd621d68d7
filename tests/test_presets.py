"""Paper-scale presets: valid params, models that build at the published sizes and take a step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from gen.data import expected_meta
from gen.registry import build
from gen.trainer import train
from pipeline.params import load_params
from pipeline.presets import available, load_preset, merge

ROOT = Path(__file__).resolve().parents[1]


def test_there_are_presets_and_each_names_a_published_figure():
    names = available()
    assert "pixelcnn-binarized-mnist" in names and "pixelcnn-cifar10" in names
    for name in names:
        assert load_preset(name).published.strip()


@pytest.mark.parametrize("name", available())
def test_preset_params_are_valid_and_the_model_trains_one_step_on_fake_data(name, tmp_path):
    preset = load_preset(name)
    merged = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), preset.params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(merged))
    params = load_params(path)
    meta = expected_meta(params.data)
    model = build(params.model, {**params.model_section(), "steps": 1, "batch_size": 2}, meta)
    g = torch.Generator().manual_seed(0)
    fake = torch.randint(0, meta.levels, (4, *meta.shape), generator=g, dtype=torch.uint8)
    result = train(model, fake, torch.zeros(4, dtype=torch.long), progress=False, log_every=1)
    assert result.steps == 1
    assert all(torch.isfinite(torch.tensor(v)) for k, v in result.history[0].items() if k != "step")


def test_preset_becomes_dvc_set_param_flags():
    flags = load_preset("pixelcnn-binarized-mnist").set_flags()
    pairs = dict(f.split("=", 1) for f in flags if f != "-S")
    assert pairs["model"] == "pixelcnn" and pairs["data.binarize"] == "true"
    assert pairs["data.name"] == "mnist"
