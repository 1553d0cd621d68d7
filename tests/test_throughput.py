"""`pipeline.throughput.measure`: speeds through the trainer and `sample`, for every kind."""

from __future__ import annotations

import pytest
import torch
from test_models import METAS, TINY

import pipeline.throughput as throughput


@pytest.mark.parametrize("name", ["pixelcnn", "dcgan", "text2image", "puzzlegan", "stargan"])
def test_measure_times_training_steps_and_sampling(name, monkeypatch):
    trained: list[int] = []
    real_train = throughput.train

    def counting_train(model, *args, **kwargs):
        result = real_train(model, *args, **kwargs)
        trained.append(result.steps)
        return result

    monkeypatch.setattr(throughput, "train", counting_train)
    threads = torch.get_num_threads()
    r = throughput.measure(name, TINY[name], METAS["17-levels"], 4, 3, 2, threads=1)
    assert trained == [3, 3], "a warm-up run, then the timed run"
    assert r["model"] == name and r["batch_size"] == 4 and r["train_steps"] == 3
    assert r["train_images_per_s"] > 0 and r["train_steps_per_s"] > 0
    assert r["sample_images_per_s"] > 0 and r["params"] > 0
    assert torch.get_num_threads() == threads, "the caller's thread count is restored"


def test_a_model_fitted_by_counting_has_no_train_speed():
    r = throughput.measure("baseline", {}, METAS["2-levels"], 8, 2, 4)
    assert r["train_images_per_s"] is None and r["train_steps_per_s"] is None
    assert r["sample_images_per_s"] > 0


def test_no_sampling_when_n_sample_is_zero():
    r = throughput.measure("pixelcnn", TINY["pixelcnn"], METAS["2-levels"], 8, 2, 0)
    assert r["sample_images_per_s"] is None and r["train_steps_per_s"] > 0


def test_nonsense_sizes_are_refused():
    with pytest.raises(ValueError, match="steps"):
        throughput.measure("pixelcnn", TINY["pixelcnn"], METAS["2-levels"], 8, 0, 4)
    with pytest.raises(ValueError, match="n_sample"):
        throughput.measure("pixelcnn", TINY["pixelcnn"], METAS["2-levels"], 8, 2, -1)


def test_the_table_keeps_two_significant_digits_of_a_slow_rate():
    from pipeline.throughput_table import _cell

    cells = [_cell(v, 8).strip() for v in (1234.56, 7.26, 0.999, 0.0412, 0.00123, None)]
    assert cells == ["1234.6", "7.3", "1.00", "0.041", "0.0012", "n/a"]
