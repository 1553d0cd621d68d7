"""The loss terms of the steps between two sync points: summed on the device, read back once,
checked for divergence."""

from __future__ import annotations

import math

import torch

from gen import distributed


class LossSums:
    """Each phase's loss terms summed on the device since the last log, per (phase, term names),
    and read back only at sync points: a step never waits for the GPU. A non-finite loss makes
    its sum non-finite, so a check at a sync point covers every step since the one before."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}
        self.last: dict[str, float] = {}  # "phase/term" -> sum, as read at the last sync point

    def add(self, phase: str, terms: dict[str, torch.Tensor]) -> None:
        key = (phase, tuple(terms))
        values = torch.stack([v.detach().reshape(()) for v in terms.values()])
        if key in self.running:
            self.running[key].add_(values)
        else:
            self.running[key] = values.double()

    def read(self, world: int) -> None:
        """Read the sums back (means over ranks, so every rank logs and checks the same)."""
        sums = torch.cat(list(self.running.values()))
        if world > 1:
            distributed.all_mean(sums)
        flat = iter(sums.tolist())  # the sync point's one read
        self.last = {}
        for phase, names in self.running:
            for name in names:
                self.last[f"{phase}/{name}"] = self.last.get(f"{phase}/{name}", 0.0) + next(flat)

    def check(self, name: str, phases: tuple[str, ...], first: int, last: int) -> None:
        """The one-line error of model `name` when a phase's loss turned non-finite somewhere in
        steps first..last (1-based), the steps since the sync point before."""
        for phase in phases:
            value = self.last.get(f"{phase}/loss", 0.0)
            if not math.isfinite(value):
                where = f"at step {last}" if first == last else f"between steps {first} and {last}"
                raise FloatingPointError(
                    f"{name}: loss of phase '{phase}' became {value} {where} "
                    f"(training diverged; lower {name}.lr or set {name}.grad_clip)"
                )

    def means(self, steps: int) -> dict[str, float]:
        """The sums read last, as means over `steps` steps."""
        return {k: v / steps for k, v in self.last.items()}

    def reset(self) -> None:
        self.running = {}
