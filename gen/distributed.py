"""Training one model in several processes (torchrun + DistributedDataParallel).

Every rank builds the same model from the same seed and draws the same global batches
(`gen.batches.Batches`); each takes its own slice of every batch, and DDP averages the
gradients, so a step is the single-process step at the same global batch. Rank 0 alone logs
and writes files. A single-process run never calls into this module beyond `rank_and_world`:
no process group, no wrapper.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def launched() -> bool:
    """Whether torchrun started this process as one of several (it sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_and_world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def process_group(device_name: str) -> Iterator[torch.device]:
    """Join the process group torchrun describes in the environment, for the block; yields
    this rank's device: cuda:LOCAL_RANK with NCCL when `device_name` picks CUDA, else the CPU
    with gloo."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank `rank`'s noise (GAN latents, dropout) from `step` on: its own stream,
    so ranks do not draw the same noise for their slices of a batch."""
    digest = hashlib.sha256(f"{seed}/{rank}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch seeds are < 2**63


class PhaseLoss(nn.Module):
    """A model's `loss(x, phase, y)` as a forward pass: DDP synchronises the gradients of what
    its forward computed, and models compute their losses in `loss`, not `forward`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, x: torch.Tensor, phase: str, y: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return self.model.loss(x, phase, y)


def wrap(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """`model`'s losses under DDP (gradients averaged over ranks in every backward pass).

    Phases use part of the parameters: a GAN's D phase never reaches G's weights (its fakes
    are made under no_grad), and ProGAN's layers join stage by stage. Plain DDP waits for a
    gradient of every parameter and fails on the next step when one never came.
    `find_unused_parameters=True` makes DDP find, after each forward pass, the parameters
    its graph does not reach; the gradient of a parameter no rank used stays None, exactly
    as in one process, so each phase's optimiser sees what it would see there. It costs a
    walk over the autograd graph per phase, small beside the backward pass. (One DDP per
    phase over that phase's parameters would not do: a G phase backpropagates through D, so
    the phases' graphs share parameters; `static_graph` assumes the same parameters every
    iteration, which alternating phases break.)
    """
    return DistributedDataParallel(
        PhaseLoss(model),
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
    )


def all_mean(t: torch.Tensor) -> torch.Tensor:
    """`t` averaged over ranks, in place (every rank then holds the same values)."""
    dist.all_reduce(t)
    return t.div_(dist.get_world_size())


def rng_states(device: torch.device) -> dict[str, list[torch.Tensor]]:
    """Every rank's RNG states, gathered to rank 0 (an empty dict on the others): what a
    checkpoint must hold for each rank to continue its own noise exactly after a resume."""
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    rank, world = rank_and_world()
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if gathered is None:
        return {}
    return {
        "rank_rng": [s["cpu"] for s in gathered],
        **({"rank_cuda_rng": [s["cuda"] for s in gathered]} if "cuda" in mine else {}),
    }


def set_rng(seed: int, step: int, ckpt: dict[str, Any] | None, device: torch.device) -> None:
    """This rank's RNG: from the checkpoint when it holds this rank's state; else rank 0
    keeps the stream the trainer seeded and the other ranks seed their own. A run
    resumed with another number of processes continues its weights, optimisers and batches
    exactly, and only the new ranks' noise starts afresh."""
    rank, _ = rank_and_world()
    saved = (ckpt or {}).get("rank_rng", [])
    if rank < len(saved):
        torch.set_rng_state(saved[rank])
        cuda = (ckpt or {}).get("rank_cuda_rng", [])
        if device.type == "cuda" and rank < len(cuda):
            torch.cuda.set_rng_state(cuda[rank], device)
    elif rank > 0:
        torch.manual_seed(rank_seed(seed, rank, step))
