"""Puzzle-GAN: key patches are the most inked squares; the generator completes images from them."""

from __future__ import annotations

import pytest
import torch

from gen.config import ConfigError
from gen.data import DataMeta
from gen.registry import build

TINY = {"g_channels": 4, "d_channels": 4, "z_dim": 2}


def meta(size: int = 8) -> DataMeta:
    return DataMeta("test", 1, size, size, levels=17, n_classes=10)


def model(**over):
    return build("puzzlegan", {**TINY, **over}, meta())


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 17, (n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


def test_key_patches_are_the_most_inked_non_overlapping_squares():
    x = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    x[0, 0, 0:2, 0:2] = 16  # most ink
    x[0, 0, 1:3, 1:3] += 1  # overlaps the first: must not be picked
    x[0, 0, 6:8, 6:8] = 9
    x[0, 0, 4, 0] = 5  # beats the 2 units of the first square's leftovers next to it
    mask = model(n_patches=3, patch_size=2).patch_mask(x)
    assert mask.dtype == torch.bool and mask.shape == (1, 1, 8, 8)
    assert mask.sum() == 12  # three disjoint 2x2 squares
    assert mask[0, 0, 0:2, 0:2].all() and mask[0, 0, 6:8, 6:8].all()
    assert mask[0, 0, 4, 0]
    assert not mask[0, 0, 2, 2]  # the overlapping square was not taken


def test_losses_are_finite_for_every_phase_and_name_their_terms():
    m = model()
    for phase in m.phases:
        terms = m.loss(images(), phase)
        assert torch.isfinite(terms["loss"])
    g = m.loss(images(), "g")
    assert {"adversarial", "reconstruction", "patch_error"} <= set(g)


def test_a_d_step_leaves_the_generator_weights_bit_identical():
    m = model()
    before = [p.clone() for p in m.generator_net.parameters()]
    opt = torch.optim.Adam(m.param_groups()["d"], lr=0.1)
    m.loss(images(), "d")["loss"].backward()
    opt.step()
    after = list(m.generator_net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_sampling_completes_the_given_images_reproducibly():
    m = model().eval()
    x = images(5)
    a = m.sample(5, torch.Generator().manual_seed(1), x)
    b = m.sample(5, torch.Generator().manual_seed(1), x)
    assert a.shape == x.shape and a.dtype == torch.uint8 and int(a.max()) <= 16
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="key patches of given images"):
        m.sample(5)


def test_training_on_one_batch_brings_the_output_to_its_patches():
    from gen.trainer import train

    m = model(steps=60, lr=3e-3, rec_weight=50.0)
    x = images(16)
    mask = m.patch_mask(x)

    def patch_error() -> float:
        out = m.eval().sample(16, torch.Generator().manual_seed(0), x)
        return float(((out.float() - x.float()).abs() * mask).sum() / mask.sum())

    before = patch_error()
    train(m, x, None, seed=0, progress=False)
    assert patch_error() < 0.7 * before


@pytest.mark.parametrize(
    "over, message",
    [
        ({"n_patches": 0}, "puzzlegan.n_patches=0 must be > 0"),
        ({"patch_size": 4, "n_patches": 4}, "must cover less than the 8x8 image"),
        ({"rec_weight": -1}, "puzzlegan.rec_weight=-1.0 must be >= 0"),
    ],
)
def test_bad_params_are_one_line_config_errors(over, message):
    with pytest.raises(ConfigError, match=message):
        model(**over)


def test_a_size_that_is_no_power_of_two_is_taken_from_its_own_start_map():
    model = build("puzzlegan", TINY, meta(12))  # 12 -> 6x6 at the bottom of the generator
    x = torch.randint(0, 17, (2, 1, 12, 12), dtype=torch.uint8)
    assert model.sample(2, torch.Generator().manual_seed(0), x).shape == (2, 1, 12, 12)
