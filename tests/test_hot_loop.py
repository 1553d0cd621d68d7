"""The training loop's hot path: no GPU sync per step, and divergence caught before a checkpoint.

On a GPU every tensor -> Python conversion (`.item()`, `float(t)`, `if t:`, `.tolist()`) waits
for the queued kernels, so the loop may read values back only where it logs. On the CPU those
conversions are cheap, so they are counted instead: between log points their number must not
grow with the number of steps.
"""

from __future__ import annotations

import collections
import math
import sys
from pathlib import Path

import pytest
import torch
from test_models import METAS, TINY, images, labels_for, make

import gen
from gen.checkpoint import load_checkpoint
from gen.data import DataMeta
from gen.models.base import GenerativeModel, ModelConfig
from gen.trainer import train

GEN = str(Path(gen.__file__).parent)
CONVERSIONS = ("item", "tolist", "numpy", "__float__", "__int__", "__index__", "__bool__")
# cyclegan / stargan check every batch's domain ids (`check_domains`: one read-back per phase);
# baseline is fitted by counting and takes no steps.
STEPPED = [n for n in TINY if n not in ("baseline", "cyclegan", "stargan")]


@pytest.fixture
def conversions(monkeypatch) -> collections.Counter:
    """Counts tensor -> Python conversions made by code in `gen/`, by (kind, file, line)."""
    calls: collections.Counter = collections.Counter()
    for name in CONVERSIONS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code
            if caller.co_filename.startswith(GEN):
                calls[(_name, Path(caller.co_filename).name, caller.co_name)] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def count_training(name: str, steps: int, log_every: int, calls: collections.Counter) -> int:
    meta = METAS["17-levels"]
    model = make(name, meta, steps=steps)
    calls.clear()
    train(model, images(meta, 32), labels_for(model, 32), log_every=log_every, progress=False)
    return sum(calls.values())


@pytest.mark.parametrize("name", STEPPED)
def test_read_backs_scale_with_log_points_not_steps(name, conversions):
    one_log = count_training(name, steps=2, log_every=2, calls=conversions)
    assert 1 <= one_log <= 2, dict(conversions)
    assert count_training(name, steps=8, log_every=8, calls=conversions) == one_log, (
        f"{name}: 4x the steps between two log points read back more: {dict(conversions)}"
    )
    assert count_training(name, steps=8, log_every=2, calls=conversions) == 4 * one_log


def test_logged_rows_are_the_means_of_the_steps_since_the_last_log():
    meta = METAS["17-levels"]

    def logged(log_every: int) -> list[dict[str, float]]:
        rows: list[dict[str, float]] = []
        model, x = make("dcgan", meta, steps=4), images(meta, 32)
        train(model, x, log_every=log_every, progress=False, callback=lambda s, r: rows.append(r))
        return rows

    every, pairs = logged(1), logged(2)
    assert len(every) == 4 and len(pairs) == 2
    for k in every[0]:
        for i, row in enumerate(pairs):
            assert row[k] == pytest.approx((every[2 * i][k] + every[2 * i + 1][k]) / 2, rel=1e-6)


# ------------------------------------------------------------------------------ divergence
META = DataMeta("tiny", 1, 4, 4, levels=2, n_classes=1)


class Diverging(GenerativeModel):
    """A quadratic that trains normally until step `bad_from` (1-based), where its loss turns
    NaN, and Adam then writes NaN into the weight."""

    name = "diverging"

    def __init__(self, steps: int, bad_from: int) -> None:
        super().__init__(ModelConfig(steps=steps, batch_size=4, lr=0.1), META)
        self.w = torch.nn.Parameter(torch.ones(3))
        self.bad_from, self.step = bad_from, 0

    def begin_step(self, step: int) -> None:
        self.step = step + 1

    def loss(self, x: torch.Tensor, phase: str, y=None) -> dict[str, torch.Tensor]:
        loss = (self.w**2).sum()
        if self.step >= self.bad_from:
            loss = loss * float("nan")
        return {"loss": loss}


def data(n: int = 16) -> torch.Tensor:
    return torch.zeros(n, *META.shape, dtype=torch.uint8)


def test_divergence_is_one_line_naming_model_phase_steps_and_a_hint():
    with pytest.raises(FloatingPointError) as info:
        train(Diverging(steps=10, bad_from=3), data(), log_every=5, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("diverging: loss of phase 'model' became nan between steps 1 and 5")
    assert "lower diverging.lr" in message


def test_no_checkpoint_holds_the_weights_of_a_diverged_step(tmp_path):
    path = tmp_path / "model.pt"
    with pytest.raises(FloatingPointError, match="became nan at step 4"):
        train(
            Diverging(steps=10, bad_from=4),
            data(),
            checkpoint=path,
            checkpoint_every=1,
            log_every=50,
            progress=False,
        )
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_a_window_that_diverged_is_never_checkpointed(tmp_path):
    path = tmp_path / "model.pt"
    model = Diverging(steps=10, bad_from=2)
    with pytest.raises(FloatingPointError, match="between steps 1 and 5"):
        train(model, data(), checkpoint=path, checkpoint_every=5, log_every=5, progress=False)
    assert not path.exists()
    assert not math.isfinite(float(model.w.detach()[0])), "the steps ran on; only the check waited"
