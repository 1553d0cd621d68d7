"""What the trainer feeds a model: endless shuffled batches that a checkpoint can resume
mid-epoch, sliced over the ranks of a process group, from data held on the GPU when it fits."""

from __future__ import annotations

from typing import Any

import torch


class Batches:
    """Endless shuffled batches; `state()` holds the epoch's order and position, so a resumed
    run continues mid-epoch with exactly the batches an uninterrupted run would have seen.

    The order is drawn on the CPU (the same batches on every device); a copy of it sits beside
    the data, so data held on the GPU is indexed there without a host-to-device copy per batch.
    `shard` = (rank, processes): every rank draws the same order from `seed` and takes its own
    contiguous slice of each batch, so together the ranks see exactly the global batch.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        batch_size: int,
        seed: int,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.x, self.y, self.batch_size = x, y, min(batch_size, len(x))
        rank, world = shard
        self._lo, self._hi = rank * self.batch_size // world, (rank + 1) * self.batch_size // world
        self.g = torch.Generator().manual_seed(seed)
        self._set_perm(torch.randperm(len(x), generator=self.g), 0)

    def _set_perm(self, perm: torch.Tensor, pos: int) -> None:
        self.perm, self.pos = perm, pos
        self._perm_here = perm.to(self.x.device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pos + self.batch_size > len(self.x):
            self._set_perm(torch.randperm(len(self.x), generator=self.g), 0)
        idx = self._perm_here[self.pos + self._lo : self.pos + self._hi]
        self.pos += self.batch_size
        return self.x[idx], (None if self.y is None else self.y[idx])

    def state(self) -> dict[str, Any]:
        return {"rng": self.g.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state(self, state: dict[str, Any]) -> None:
        self.g.set_state(state["rng"])
        self._set_perm(state["perm"], state["pos"])


def on_device(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """`t` moved to a CUDA `device` when it takes under a quarter of the free memory (then no
    batch crosses the bus while training); as it is otherwise (CPU, or too large)."""
    if t is None or device.type != "cuda" or t.device == device:
        return t
    free, _ = torch.cuda.mem_get_info(device)
    return t.to(device) if t.nbytes < free // 4 else t
