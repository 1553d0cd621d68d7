"""The compute axis: floating-point operations of a model's training steps, counted once.

A step is what the trainer runs: every phase in order, its loss and the backward pass of that
loss (fakes a phase makes under `no_grad` cost their forward only). `torch.utils.flop_counter`
counts the matrix multiplications and convolutions (what dominates these models), forward and
backward, not elementwise work or the optimiser's update. It is counted on a copy of the model,
on a batch of the run's batch size, with the random state put back afterwards, so counting
changes nothing the run then does.

Models whose steps change over training (ProGAN grows) say which steps cost the same through
`model.step_kind(step)`; one step of each kind is counted.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable
from itertools import accumulate

import torch
from torch.utils.flop_counter import FlopCounterMode

from gen.models.base import GenerativeModel


def step_flops(
    model: GenerativeModel, x: torch.Tensor, y: torch.Tensor | None, step: int = 0
) -> int:
    """FLOPs of training step `step` (0-based) of `model` on batch (x, y): every phase's loss,
    forward and backward, on a copy of the model (its weights, buffers and the global random
    state are left as they were)."""
    twin = copy.deepcopy(model)
    twin.train()
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), FlopCounterMode(display=False) as counter:
        twin.begin_step(step)
        for phase in twin.phases:
            twin.zero_grad(set_to_none=True)
            twin.loss(x, phase, y)["loss"].backward()
    return int(counter.get_total_flops())


class StepFlops:
    """The FLOPs of every step of a run of `steps` steps, counted once per kind of step."""

    def __init__(
        self, model: GenerativeModel, x: torch.Tensor, y: torch.Tensor | None, steps: int
    ) -> None:
        x, y = x.to(model.device), None if y is None else y.to(model.device)
        counted: dict[Hashable, int] = {}
        per_step = []
        for step in range(steps if model.phases else 0):
            kind = model.step_kind(step)
            if kind not in counted:
                counted[kind] = step_flops(model, x, y, step)
            per_step.append(counted[kind])
        self.cumulative = [0, *accumulate(per_step)]  # FLOPs of steps 0..s-1, at index s

    def through(self, steps: int) -> int:
        """Training FLOPs of the first `steps` steps."""
        return self.cumulative[steps]
