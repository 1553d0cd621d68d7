"""The one training loop: one optimiser per model phase, checkpoints, resume, a metrics callback.

It knows nothing about any model beyond `phases`, `param_groups()` and `loss(x, phase)`.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gen import distributed
from gen.checkpoint import load_checkpoint, run_identity, same_run, save_checkpoint
from gen.config import ConfigError
from gen.models.base import GenerativeModel

Callback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    steps: int
    seconds: float  # wall-clock time spent in gradient steps, summed over resumed sessions
    images_seen: int
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float | None:
        return self.images_seen / self.seconds if self.seconds > 0 and self.images_seen else None


def pick_device(name: str = "auto") -> torch.device:
    """'auto' takes CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' requested but CUDA is not available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN, against ops that read memory
    # they never wrote (bugs: same-seed runs are tested to be bit-identical). The fill cost
    # 11% of a PixelCNN training step on a CPU, one pass over every allocation.
    torch.utils.deterministic.fill_uninitialized_memory = False
    # Deterministic cuBLAS needs this set before the first CUDA call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def progress_enabled() -> bool:
    return os.environ.get("CI", "").lower() not in ("1", "true", "yes")


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


def _divergence(name: str, phase: str, value: float, first: int, last: int) -> FloatingPointError:
    """The one-line error of a non-finite loss seen somewhere in steps first..last (1-based)."""
    where = f"at step {last}" if first == last else f"between steps {first} and {last}"
    return FloatingPointError(
        f"{name}: loss of phase '{phase}' became {value} {where} "
        f"(training diverged; lower {name}.lr or set {name}.grad_clip)"
    )


def compiled(loss_of: Callable[..., Any], device: torch.device, world: int) -> Callable[..., Any]:
    """`loss_of` through `torch.compile`, or a one-line error where it cannot run here."""
    if world > 1:
        raise ConfigError("train.compile=true is not supported with train.nproc > 1; use one")
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if device.type == "cpu" and not cxx:
        raise ConfigError(
            "train.compile=true on the CPU needs a C++ compiler (g++ or clang++ on PATH, or CXX)"
        )
    import torch._inductor.config as inductor

    # Random ops (noise, dropout) draw from torch's generators exactly as in eager mode, so a
    # compiled run is as reproducible and resumable from its seed as an eager one.
    inductor.fallback_random = True
    return torch.compile(loss_of)


def train(
    model: GenerativeModel,
    train_x: torch.Tensor,
    train_y: torch.Tensor | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 500,
    log_every: int = 50,
    precision: str = "auto",
    progress: bool | None = None,
    provenance: dict[str, str] | None = None,
    validate: Callable[[], dict[str, float]] | None = None,
    val_every: int = 250,
    compile_loss: bool = False,
    channels_last: bool = False,
) -> TrainResult:
    """Train `model` for `model.cfg.steps` steps; resume from `checkpoint` when it matches.

    `provenance` (for example hashes of the training code and of the data) must match for a
    checkpoint to be resumed, so an edited loss never continues weights trained by the old one.
    `validate()` runs every `val_every` steps and at the end, in eval mode; its figures go to
    the callback beside the training losses.

    `compile_loss` runs each phase's loss, forward and backward, through `torch.compile` (its
    random draws stay eager's, so seeds mean the same); `channels_last` stores conv weights and
    image batches NHWC. Both are opt-in: they change float rounding, not the algorithm.

    Inside a process group (torchrun, see `gen.distributed`) each rank trains its slice of
    every global batch under DDP; every rank must get the same arguments. Logged losses are
    means over ranks; only rank 0 runs `validate` and `callback` and writes `checkpoint`.
    """
    cfg = model.cfg
    device = torch.device(device)
    seed_everything(seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # Data that fits sits on the GPU for the whole run: batches are indexed there.
    train_x = on_device(train_x, device)
    train_y = on_device(train_y, device)
    t_fit = time.perf_counter()
    model.fit_data(train_x.to(device))
    fit_seconds = time.perf_counter() - t_fit
    groups = model.param_groups()
    optimisers = {
        phase: torch.optim.Adam(
            params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
        )
        for phase, params in groups.items()
    }
    rank, world = distributed.rank_and_world()
    batches = Batches(train_x, train_y, cfg.batch_size, seed, (rank, world))
    if model.phases and batches.batch_size % world:
        raise ConfigError(
            f"{model.name}.batch_size={batches.batch_size} cannot be split evenly over "
            f"{world} processes; make it a multiple of train.nproc={world}"
        )
    # A model fitted in closed form (counting) consumes no batches: its img/s is n/a.
    result = TrainResult(steps=0, seconds=fit_seconds, images_seen=0)
    identity = run_identity(model, seed, provenance)
    on_cuda = device.type == "cuda"

    if world > 1:  # rank 0 may have removed a stale checkpoint: all ranks decide after that
        dist.barrier()
    resumed: dict[str, Any] | None = None
    if checkpoint is not None and Path(checkpoint).exists():
        ckpt = load_checkpoint(checkpoint)
        if same_run(ckpt, identity):
            resumed = ckpt
            model.load_state_dict(ckpt["state_dict"])
            for phase, state in ckpt.get("optimisers", {}).items():
                optimisers[phase].load_state_dict(state)
            batches.load_state(ckpt["batches"])
            torch.set_rng_state(ckpt["torch_rng"])
            # Older checkpoints have no "cuda_rng"; ranks restore their own (`set_rng`) and
            # touch no other rank's GPU.
            if on_cuda and torch.cuda.is_available() and world == 1:
                for i, state in enumerate(ckpt.get("cuda_rng", [])[: torch.cuda.device_count()]):
                    torch.cuda.set_rng_state(state, i)
            result = TrainResult(
                ckpt["step"], ckpt["seconds"], ckpt["images_seen"], ckpt["history"]
            )
        else:
            warnings.warn(
                f"checkpoint '{checkpoint}' is another configuration; training from scratch",
                stacklevel=2,
            )
    loss_of: Callable[..., dict[str, torch.Tensor]] = model.loss
    if world > 1 and model.phases:
        distributed.set_rng(seed, result.steps, resumed, device)
        loss_of = distributed.wrap(model, device)  # the same loss, gradients averaged over ranks
    if compile_loss and model.phases:
        loss_of = compiled(loss_of, device, world)

    def snapshot() -> dict[str, Any]:
        payload = {
            **identity,
            "state_dict": model.state_dict(),
            "optimisers": {k: o.state_dict() for k, o in optimisers.items()},
            "step": result.steps,
            "seconds": result.seconds,
            "images_seen": result.images_seen,
            "history": result.history,
            "batches": batches.state(),
            "torch_rng": torch.get_rng_state(),
        }
        if on_cuda and torch.cuda.is_available() and world == 1:  # noise drawn on the GPU
            payload["cuda_rng"] = torch.cuda.get_rng_state_all()
        if world > 1:  # a collective: every rank takes every snapshot, rank 0 writes it
            payload.update(distributed.rng_states(device))
        return payload

    use_bf16 = precision == "bf16" or (precision == "auto" and on_cuda)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    )
    steps_left = cfg.steps - result.steps if model.phases else 0
    show = progress_enabled() if progress is None else progress
    from tqdm.auto import tqdm

    bar = tqdm(
        total=cfg.steps,
        initial=result.steps,
        disable=not show or steps_left <= 0 or rank > 0,
        desc=f"train {model.name}",
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,  # logs get a line per 30 s, not a flood
    )
    model.train()
    # Loss terms are summed on the device, per (phase, term names), and read back only at sync
    # points (log, validation, checkpoint, last step): a step never waits for the GPU. A
    # non-finite loss makes its sum non-finite, so the check at a sync point covers every step
    # since the last one, and runs before a checkpoint is written.
    running: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}
    count = 0
    checked = result.steps  # steps known to have had finite losses
    t0 = time.perf_counter()
    for _ in range(max(steps_left, 0)):
        model.begin_step(result.steps)
        for phase in model.phases:
            x, y = batches.next()
            x = x.to(device, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = None if y is None else y.to(device, non_blocking=True)
            model.zero_grad(set_to_none=True)
            with autocast:
                terms = loss_of(x, phase, y)
            terms["loss"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(groups[phase], cfg.grad_clip)
            optimisers[phase].step()
            if phase not in model.image_free_phases:
                result.images_seen += len(x) * world
            key = (phase, tuple(terms))
            values = torch.stack([v.detach().reshape(()) for v in terms.values()])
            if key in running:
                running[key].add_(values)
            else:
                running[key] = values.double()
        result.steps += 1
        count += 1
        bar.update(1)
        validating = validate is not None and (
            result.steps % val_every == 0 or result.steps == cfg.steps
        )
        logging = result.steps % log_every == 0 or result.steps == cfg.steps
        saving = checkpoint is not None and result.steps % checkpoint_every == 0
        if not (validating or logging or saving):
            continue
        if on_cuda:
            torch.cuda.synchronize(device)
        result.seconds += time.perf_counter() - t0
        sums = torch.cat(list(running.values()))
        if world > 1:  # every rank logs, and checks for divergence, the same mean over ranks
            distributed.all_mean(sums)
        flat = iter(sums.tolist())  # this sync point's one read
        row: dict[str, float] = {}
        for phase, names in running:
            for name in names:
                row[f"{phase}/{name}"] = row.get(f"{phase}/{name}", 0.0) + next(flat)
        for phase in model.phases:
            value = row.get(f"{phase}/loss", 0.0)
            if not math.isfinite(value):
                raise _divergence(model.name, phase, value, checked + 1, result.steps)
        checked = result.steps
        if validating and rank == 0:
            model.eval()
            with torch.no_grad():
                figures = validate()
            model.train()
            result.history.append({"step": result.steps, **figures})
            if callback is not None:
                callback(result.steps, figures)
        if logging:
            row = {k: v / count for k, v in row.items()}
            result.history.append({"step": result.steps, **row})
            if callback is not None and rank == 0:
                callback(result.steps, row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.endswith("loss")})
            running, count = {}, 0
        if saving:
            payload = snapshot()
            if rank == 0:
                save_checkpoint(Path(checkpoint), payload)
        t0 = time.perf_counter()
    bar.close()
    model.eval()
    if rank == 0:  # the other ranks' copies of the model are not kept
        with torch.no_grad():
            model.finish_training(train_x.to(device))
    if checkpoint is not None:
        payload = snapshot()
        if rank == 0:
            save_checkpoint(Path(checkpoint), payload)
    return result
