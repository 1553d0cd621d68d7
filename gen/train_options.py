"""How to train and what training gives back: the options every caller of the trainer fills
(the train stage, DDP ranks, `genbench throughput`) and the result it returns, kept apart from
the loop so a caller reads them without the loop's machinery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

Callback = Callable[[int, dict[str, float]], None]
Validate = Callable[[], dict[str, float]]
Curve = Callable[[int], dict[str, float]]


@dataclass
class TrainOptions:
    """How to train, whatever the model: the `train:` keys of params.yaml under their own names
    (`pipeline.params.TrainSettings.options` fills them) and what a run adds. Every rank of a
    process group gets the same options."""

    seed: int = 0
    device: torch.device | str = "cpu"
    checkpoint: Path | None = None  # resumed from when it matches the run, and written
    checkpoint_every: int = 500
    log_every: int = 50
    val_every: int = 250
    precision: str = "auto"  # auto: bf16 autocast on CUDA | fp32 | bf16
    progress: bool | None = None  # None: a bar unless CI is set
    # Must match for a checkpoint to be resumed (for example hashes of the training code and of
    # the data), so an edited loss never continues weights trained by the old one.
    provenance: dict[str, str] | None = None
    # Opt-in speed: each phase's loss, forward and backward, through `torch.compile` (its random
    # draws stay eager's, so seeds mean the same), and conv weights and image batches stored
    # NHWC. Both change float rounding, not the algorithm.
    compile: bool = False
    channels_last: bool = False
    # What rank 0 reports to: `validate()` runs every `val_every` steps and at the end, in eval
    # mode; `callback(step, row)` gets each logged row of losses and each validation's figures.
    callback: Callback | None = None
    validate: Validate | None = None
    # The compute axis: the FLOPs of a step counted once (gen/flops.py), and every logged row
    # gains the run's cumulative `compute/flops`, `compute/images`, `compute/steps` and
    # `compute/seconds` (rank 0).
    compute: bool = False
    # Quality along training: `curve(step)` at the steps `curve_at`, on rank 0, in eval mode,
    # on a fork of the random state (training draws exactly what it would without it); its
    # figures go to the history and the callback like validation's.
    curve: Curve | None = None
    curve_at: tuple[int, ...] = ()


@dataclass
class TrainResult:
    steps: int
    seconds: float  # wall-clock time spent in gradient steps, summed over resumed sessions
    images_seen: int
    history: list[dict[str, float]] = field(default_factory=list)
    curve_seconds: float = 0.0  # in `curve`, summed over resumed sessions (not in `seconds`)
    flops: int | None = None  # of the steps taken, with `compute`

    @property
    def images_per_s(self) -> float | None:
        return self.images_seen / self.seconds if self.seconds > 0 and self.images_seen else None
