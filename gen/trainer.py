"""The one training loop: one optimiser per model phase, checkpoints, resume, a metrics callback.

It knows nothing about any model beyond `phases`, `param_groups()` and `loss(x, phase)`. A step
(every phase: zero grads, loss, backward, clip, optimiser step) reads nothing back from the
device; every N steps a sync point reads the summed losses once and runs the hooks due then
(validation, logging, checkpoints).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gen import distributed
from gen.batches import Batches, on_device
from gen.checkpoint import (
    CheckpointError,
    first_line,
    load_checkpoint,
    run_identity,
    same_run,
    save_checkpoint,
)
from gen.config import ConfigError
from gen.flops import StepFlops
from gen.loss_sums import LossSums
from gen.models.base import GenerativeModel
from gen.runtime import deterministic_mode, progress_enabled
from gen.train_options import TrainOptions, TrainResult


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


@dataclass(frozen=True)
class Hook:
    """Work of the sync point: every `every` steps (None: none), at the steps `at`, and at the
    last step when `at_end`."""

    every: int | None
    run: Callable[[int], None]  # called with the step just taken
    at_end: bool = False
    at: frozenset[int] = frozenset()

    def due(self, step: int, last: int) -> bool:
        periodic = self.every is not None and step % self.every == 0
        return periodic or step in self.at or (self.at_end and step == last)


class Trainer:
    """Trains `model` for `model.cfg.steps` steps, resuming from `options.checkpoint` when it
    matches the run. Building it sets the run up (seed, device, optimisers, batches, resume,
    DDP); `run()` trains.

    `options.validate()` runs every `val_every` steps and at the end, in eval mode; its figures
    go to `options.callback` beside the training losses. Inside a process group (torchrun, see
    `gen.distributed`) each rank trains its slice of every global batch under DDP; every rank
    must get the same options. Logged losses are means over ranks; only rank 0 runs `validate`
    and `callback` and writes the checkpoint.
    """

    def __init__(
        self,
        model: GenerativeModel,
        train_x: torch.Tensor,
        train_y: torch.Tensor | None = None,
        options: TrainOptions | None = None,
    ) -> None:
        self.model, self.cfg = model, model.cfg
        self.options = options = options or TrainOptions()
        self.callback, self.validate = options.callback, options.validate
        self.device = torch.device(options.device)
        self.on_cuda = self.device.type == "cuda"
        self.rank, self.world = distributed.rank_and_world()
        deterministic_mode()
        # Whatever building the model drew, training's draws (noise, dropout) start from the
        # seed itself, so a run trains the same however its model came to be.
        torch.manual_seed(options.seed)
        model.to(self.device)
        if options.channels_last:
            model.to(memory_format=torch.channels_last)
        # Data that fits sits on the GPU for the whole run: batches are indexed there.
        self.train_x = on_device(train_x, self.device)
        self.train_y = on_device(train_y, self.device)
        t_fit = time.perf_counter()
        model.fit_data(self.train_x.to(self.device))
        fit_seconds = time.perf_counter() - t_fit
        cfg = self.cfg
        adam = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "weight_decay": cfg.weight_decay}
        self.groups = model.param_groups()  # one optimiser per phase, over its parameters
        self.optimisers = {k: torch.optim.Adam(p, **adam) for k, p in self.groups.items()}
        self.batches = self._batches()
        self.flops: StepFlops | None = None
        if options.compute and self.rank == 0:  # every step's FLOPs, on one global batch
            n = self.batches.batch_size
            y = None if self.train_y is None else self.train_y[:n]
            self.flops = StepFlops(model, self.train_x[:n], y, cfg.steps)
        # A model fitted in closed form (counting) consumes no batches: its img/s is n/a.
        self.result = TrainResult(steps=0, seconds=fit_seconds, images_seen=0)
        self.identity = run_identity(model, options.seed, options.provenance)
        resumed = self._resume()
        self.loss_of = self._loss_function(resumed)
        use_bf16 = options.precision == "bf16" or (options.precision == "auto" and self.on_cuda)
        self.autocast = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
            if use_bf16
            else nullcontext()
        )
        self.steps_left = max(cfg.steps - self.result.steps, 0) if model.phases else 0
        self.losses = LossSums()
        self.checked = self.logged = self.result.steps  # steps known finite, and logged
        self.hooks = self._hooks()
        self.bar = self._progress_bar()

    def run(self) -> TrainResult:
        """Train the steps left, then finish the model and write the last checkpoint."""
        result = self.result
        self.model.train()
        t0 = time.perf_counter()
        for _ in range(self.steps_left):
            self._step()
            self.bar.update(1)
            due = [hook for hook in self.hooks if hook.due(result.steps, self.cfg.steps)]
            if not due:
                continue
            if self.on_cuda:
                torch.cuda.synchronize(self.device)  # the steps' time includes their kernels
            result.seconds += time.perf_counter() - t0
            self._sync_point(due)
            t0 = time.perf_counter()
        self.bar.close()
        self.model.eval()
        if self.rank == 0:  # the other ranks' copies of the model are not kept
            with torch.no_grad():
                self.model.finish_training(self.train_x.to(self.device))
        if self.flops is not None:
            result.flops = self.flops.through(result.steps)
        if self.options.checkpoint is not None:
            self._save(result.steps)
        return result

    def _step(self) -> None:
        """Every phase in order, each on its own batch; nothing is read back from the device."""
        model, cfg = self.model, self.cfg
        model.begin_step(self.result.steps)
        for phase in model.phases:
            x, y = self._next_batch()
            model.zero_grad(set_to_none=True)
            with self.autocast:
                terms = self.loss_of(x, phase, y)
            terms["loss"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.groups[phase], cfg.grad_clip)
            self.optimisers[phase].step()
            if phase not in model.image_free_phases:
                self.result.images_seen += len(x) * self.world
            self.losses.add(phase, terms)
        self.result.steps += 1

    def _sync_point(self, due: list[Hook]) -> None:
        """Read the loss sums back (once), stop on a diverged loss, then run the hooks due."""
        step = self.result.steps
        self.losses.read(self.world)
        self.losses.check(self.model.name, self.model.phases, self.checked + 1, step)
        self.checked = step
        for hook in due:
            hook.run(step)

    def _hooks(self) -> list[Hook]:
        """What the sync point does every N steps, in this order: validation (its row goes into
        the history before the log's), logging, the quality curve at its steps, and last the
        checkpoint, which then holds them all."""
        o = self.options
        hooks: list[Hook] = []
        if self.validate is not None:
            hooks.append(Hook(o.val_every, self._validation, at_end=True))
        hooks.append(Hook(o.log_every, self._log, at_end=True))
        if o.curve is not None and o.curve_at:
            hooks.append(Hook(None, self._curve, at=frozenset(o.curve_at)))
        if o.checkpoint is not None:
            hooks.append(Hook(o.checkpoint_every, self._save))
        return hooks

    def _validation(self, step: int) -> None:
        """`validate()`'s figures, in eval mode on rank 0, into the history and the callback."""
        if self.rank > 0:
            return
        self.model.eval()
        with torch.no_grad():
            figures = self.validate()
        self.model.train()
        self.result.history.append({"step": step, **figures})
        if self.callback is not None:
            self.callback(step, figures)

    def _log(self, step: int) -> None:
        """The loss terms' means over the steps since the last log: a history row, the
        callback (rank 0) and the progress bar."""
        row = self.losses.means(step - self.logged)
        if self.flops is not None:
            row.update(self._compute(step))
        self.result.history.append({"step": step, **row})
        if self.callback is not None and self.rank == 0:
            self.callback(step, row)
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.endswith("loss")})
        self.losses.reset()
        self.logged = step

    def _curve(self, step: int) -> None:
        """The curve's figures at `step` (rank 0), with the compute spent so far unless this
        step's log row carries it; its seconds are not training's."""
        if self.rank > 0:
            return
        self.model.eval()
        devices = [self.device] if self.on_cuda else []
        t0 = time.perf_counter()
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            figures = self.options.curve(step)
        self.result.curve_seconds += time.perf_counter() - t0
        self.model.train()
        if self.flops is not None and self.logged != step:
            figures = {**figures, **self._compute(step)}
        self.result.history.append({"step": step, **figures})
        if self.callback is not None:
            self.callback(step, figures)

    def _compute(self, step: int) -> dict[str, float]:
        """What the run has spent through `step`: FLOPs, images read, steps, seconds."""
        return {
            "compute/flops": float(self.flops.through(step)),
            "compute/images": float(self.result.images_seen),
            "compute/steps": float(step),
            "compute/seconds": self.result.seconds,
        }

    def _save(self, step: int) -> None:
        payload = self._snapshot()  # in a process group a collective: every rank takes it
        if self.rank == 0:
            save_checkpoint(Path(self.options.checkpoint), payload)

    def _snapshot(self) -> dict[str, Any]:
        """The checkpoint: the run's identity, and all a resumed run needs to go on exactly."""
        payload = {
            **self.identity,
            "state_dict": self.model.state_dict(),
            "optimisers": {k: o.state_dict() for k, o in self.optimisers.items()},
            "step": self.result.steps,
            "seconds": self.result.seconds,
            "images_seen": self.result.images_seen,
            "history": self.result.history,
            "curve_seconds": self.result.curve_seconds,
            "batches": self.batches.state(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.flops is not None:
            payload["flops"] = self.flops.through(self.result.steps)
        if self.on_cuda and torch.cuda.is_available() and self.world == 1:  # GPU noise
            payload["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.world > 1:  # every rank's own noise, gathered to rank 0
            payload.update(distributed.rng_states(self.device))
        return payload

    def _resume(self) -> dict[str, Any] | None:
        """Load a checkpoint of this run into the model, optimisers, batches, RNG and result;
        returns it, or None when training starts afresh."""
        path = self.options.checkpoint
        if self.world > 1:  # rank 0 may have removed a stale checkpoint: all ranks decide after
            dist.barrier()
        if path is None or not Path(path).exists():
            return None
        ckpt = load_checkpoint(path)
        if not same_run(ckpt, self.identity):
            warnings.warn(
                f"checkpoint '{path}' is another configuration; training from scratch",
                stacklevel=2,
            )
            return None
        try:  # its identity matched: what it holds must fit, or it is one line, not a traceback
            self.model.load_state_dict(ckpt["state_dict"])
            for phase, state in ckpt.get("optimisers", {}).items():
                self.optimisers[phase].load_state_dict(state)
            self.batches.load_state(ckpt["batches"])
            torch.set_rng_state(ckpt["torch_rng"])
            result = TrainResult(
                ckpt["step"],
                ckpt["seconds"],
                ckpt["images_seen"],
                ckpt["history"],
                ckpt.get("curve_seconds", 0.0),
            )
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint '{path}' names this run ({self.model.name}, step {ckpt.get('step')}) "
                f"but cannot be resumed ({first_line(exc)}); delete it to train from scratch"
            ) from None
        # Older checkpoints have no "cuda_rng"; ranks restore their own (`set_rng`) and touch
        # no other rank's GPU.
        if self.on_cuda and torch.cuda.is_available() and self.world == 1:
            for i, state in enumerate(ckpt.get("cuda_rng", [])[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(state, i)
        self.result = result
        return ckpt

    def _loss_function(self, resumed: dict[str, Any] | None) -> Callable[..., Any]:
        """`model.loss`; in a process group under DDP, after this rank's noise stream is set
        (see `gen.distributed`); through `torch.compile` with `compile`."""
        loss_of: Callable[..., Any] = self.model.loss
        if not self.model.phases:
            return loss_of
        if self.world > 1:
            distributed.set_rng(self.options.seed, self.result.steps, resumed, self.device)
            loss_of = distributed.wrap(self.model, self.device)  # gradients averaged over ranks
        if self.options.compile:
            loss_of = compiled(loss_of, self.device, self.world)
        return loss_of

    def _batches(self) -> Batches:
        """This rank's batches; every rank's slice of a batch is the same size."""
        batches = Batches(
            self.train_x,
            self.train_y,
            self.cfg.batch_size,
            self.options.seed,
            (self.rank, self.world),
        )
        if self.model.phases and batches.batch_size % self.world:
            raise ConfigError(
                f"{self.model.name}.batch_size={batches.batch_size} cannot be split evenly over "
                f"{self.world} processes; make it a multiple of train.nproc={self.world}"
            )
        return batches

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = self.batches.next()
        x = x.to(self.device, non_blocking=True)
        if self.options.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, None if y is None else y.to(self.device, non_blocking=True)

    def _progress_bar(self) -> Any:
        from tqdm.auto import tqdm

        show = progress_enabled() if self.options.progress is None else self.options.progress
        return tqdm(
            total=self.cfg.steps,
            initial=self.result.steps,
            disable=not show or self.steps_left == 0 or self.rank > 0,
            desc=f"train {self.model.name}",
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,  # logs: a line per 30 s, not a flood
        )


def train(
    model: GenerativeModel,
    train_x: torch.Tensor,
    train_y: torch.Tensor | None = None,
    options: TrainOptions | None = None,
    **fields: Any,
) -> TrainResult:
    """`Trainer(...).run()` with `options` (or the defaults), `fields` replacing some of them
    (`callback=log`, `validate=...`, `log_every=5`: any TrainOptions field)."""
    return Trainer(model, train_x, train_y, replace(options or TrainOptions(), **fields)).run()
