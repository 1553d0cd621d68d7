"""The compute axis: FLOPs of a training step against hand counts, per kind of step, counted
without touching the run, and the cumulative compute the trainer logs."""

from __future__ import annotations

import torch
from conftest import snapshot, unchanged
from torch import nn

from gen.config import from_dict
from gen.data import DataMeta
from gen.flops import StepFlops, step_flops
from gen.models.base import GenerativeModel, ModelConfig
from gen.models.progan import ProGAN
from gen.registry import build
from gen.trainer import train

META = DataMeta("tiny", 1, 8, 8, levels=17, n_classes=10)
B, D, H, Z = 8, 64, 16, 4  # batch, pixels, hidden units, noise size


def images(n: int, meta: DataMeta = META) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, meta.levels, (n, *meta.shape), generator=g, dtype=torch.uint8)


class TwoLayers(GenerativeModel):
    """loss = mean(b(relu(a(x)))): two Linear layers on the flattened image."""

    name = "two_layers"

    def __init__(self, steps: int = 5) -> None:
        super().__init__(ModelConfig(steps=steps, batch_size=B), META)
        self.a, self.b = nn.Linear(D, H), nn.Linear(H, 1)

    def loss(self, x, phase, y=None):
        return {"loss": self.b(torch.relu(self.a(x.float().flatten(1)))).mean()}


class TinyGAN(GenerativeModel):
    """G = Linear(Z, D), D = Linear(D, 1); D's phase makes its fakes under no_grad."""

    name = "tiny_gan"
    phases = ("d", "g")

    def __init__(self) -> None:
        super().__init__(ModelConfig(steps=3, batch_size=B), META)
        self.g, self.d = nn.Linear(Z, D), nn.Linear(D, 1)

    def param_groups(self):
        return {"d": list(self.d.parameters()), "g": list(self.g.parameters())}

    def loss(self, x, phase, y=None):
        z = torch.randn(len(x), Z)
        if phase == "d":
            with torch.no_grad():
                fake = self.g(z)
            return {"loss": self.d(fake).mean() - self.d(x.float().flatten(1)).mean()}
        return {"loss": -self.d(self.g(z)).mean()}


def test_the_flops_of_a_step_are_the_hand_count_of_its_matrix_products():
    # A Linear layer of n -> m on a batch of B: 2*B*n*m forward; backward the same again for
    # the weight's gradient and again for the input's, which the first layer does not need
    # (the images need no gradient).
    forward = 2 * B * (D * H + H * 1)
    backward = 2 * B * H * 1 * 2 + 2 * B * D * H
    assert step_flops(TwoLayers(), images(B), None) == forward + backward
    counted = StepFlops(TwoLayers(steps=5), images(B), None, steps=5)
    assert [counted.through(s) for s in range(6)] == [s * (forward + backward) for s in range(6)]


def test_a_step_counts_every_phase_and_only_what_it_runs():
    # D's phase: G forward under no_grad (no backward), D on fakes and reals forward, and only
    # D's weight gradients (neither input needs one). G's phase: G and D forward, D's input
    # and weight gradients (D's weights require them even if only G's optimiser steps), G's
    # weight gradient.
    d_phase = 2 * B * Z * D + 2 * (2 * B * D) + 2 * (2 * B * D)
    g_phase = 2 * B * Z * D + 2 * B * D + 2 * (2 * B * D) + 2 * B * Z * D
    assert step_flops(TinyGAN(), images(B), None) == d_phase + g_phase


def test_steps_of_each_kind_are_counted_as_they_run():
    """ProGAN at 4x4, fading in 8x8 (both resolutions' layers) and at 8x8: three kinds whose
    sum is the step-by-step count."""
    torch.manual_seed(0)
    cfg = {"steps": 6, "batch_size": B, "z_dim": 4, "g_channels": 8, "d_channels": 8}
    model = ProGAN(
        from_dict(ProGAN.Config, "progan", {**cfg, "stage_steps": 2, "fade_steps": 1}), META
    )
    x = images(B)
    one_by_one = [step_flops(model, x, None, s) for s in range(6)]
    assert len({model.step_kind(s) for s in range(6)}) == 3
    assert one_by_one[0] < one_by_one[4] < one_by_one[2]  # 4x4 < 8x8 < fading (both)
    counted = StepFlops(model, x, None, steps=6)
    assert [counted.through(s) for s in range(7)] == [sum(one_by_one[:s]) for s in range(7)]


def test_counting_changes_neither_the_model_nor_the_random_state():
    torch.manual_seed(0)
    model = build("dcgan", {"steps": 2, "batch_size": B, "g_channels": 8, "d_channels": 8}, META)
    before, buffers = snapshot(model), {k: v.clone() for k, v in model.named_buffers()}
    rng = torch.get_rng_state()
    assert StepFlops(model, images(B), None, steps=2).through(2) > 0
    assert unchanged(before, model)  # weights
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())  # BN statistics
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_trainer_logs_the_compute_spent_at_every_log_point():
    rows: list[tuple[int, dict[str, float]]] = []
    result = train(
        TwoLayers(steps=5),
        images(32),
        log_every=2,
        compute=True,
        progress=False,
        callback=lambda s, r: rows.append((s, r)),
    )
    per_step = step_flops(TwoLayers(), images(B), None)
    assert [s for s, _ in rows] == [2, 4, 5]
    for step, row in rows:
        assert row["compute/flops"] == step * per_step
        assert row["compute/images"] == step * B
        assert row["compute/steps"] == step
        assert 0 < row["compute/seconds"] <= result.seconds
    assert result.flops == 5 * per_step
    counting = build("baseline", {}, META)  # fitted by counting: no gradient step at all
    assert train(counting, images(32), compute=True, progress=False).flops == 0
