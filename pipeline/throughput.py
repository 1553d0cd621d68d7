"""Training and sampling throughput of one model, through the code the pipeline runs.

`measure` trains with `gen.trainer.train` (so the hot loop measured is the one `genbench train`
runs) and samples with the model's own `sample`, on random data of the data set's shape and
levels: speed does not depend on the pixel values. It reads and writes no files.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from gen.data import DataMeta
from gen.models.base import GenerativeModel, count_params
from gen.registry import build
from gen.runtime import deterministic_mode, pick_device
from gen.train_options import TrainOptions
from gen.trainer import train

WARMUP_STEPS = 5  # first steps allocate buffers and pick kernels: not timed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_sampling(
    model: GenerativeModel, x: torch.Tensor, y: torch.Tensor, n: int, device: torch.device
) -> float:
    """Seconds `model.sample` takes for `n` images, after a one-image warm-up draw; the
    conditions come from the probe pairs `x`, `y` (the model's kind says how)."""
    warm = model.condition.probe_condition(model, x, y, 1, device)
    model.sample(1, torch.Generator().manual_seed(0), *(() if warm is None else (warm,)))
    condition = model.condition.probe_condition(model, x, y, n, device)
    _sync(device)
    t0 = time.perf_counter()
    model.sample(n, torch.Generator().manual_seed(1), *(() if condition is None else (condition,)))
    _sync(device)
    return time.perf_counter() - t0


def measure(
    model_name: str,
    section: dict[str, Any],
    meta: DataMeta,
    batch_size: int,
    steps: int,
    n_sample: int,
    device: str = "cpu",
    threads: int = 1,
    compile: bool = False,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Train img/s (and steps/s) over `steps` steps of `gen.trainer.train` after a warm-up run,
    and sample img/s for `n_sample` images after a warm-up draw (0: no sampling), of model
    `model_name` built from its params section `section` for data `meta`, on `threads` threads.

    Train img/s counts the images the model's phases consume, as `genbench train` reports it
    (a GAN's generator phase reads none); it is None for a model fitted by counting.
    `compile` and `channels_last` are `train.compile` and `train.channels_last`; compiling
    happens in the warm-up run, which is not timed.
    """
    if steps < 1 or batch_size < 1 or n_sample < 0:
        raise ValueError("steps and batch_size must be >= 1, n_sample >= 0")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dev = pick_device(device)
        deterministic_mode()
        torch.manual_seed(0)  # building a model draws its initial weights
        model = build(model_name, {**section, "batch_size": batch_size, "steps": 1}, meta)
        g = torch.Generator().manual_seed(0)
        x, y = model.condition.probe_pairs(model, max(4 * batch_size, n_sample), g)

        how = TrainOptions(device=dev, progress=False, compile=compile, channels_last=channels_last)
        model.cfg.steps = min(WARMUP_STEPS, steps)
        train(model, x, y, how, log_every=model.cfg.steps)
        model.cfg.steps = steps
        result = train(model, x, y, how, log_every=steps)
        stepped = result.steps > 0  # a model fitted by counting takes no steps

        model.eval()
        sample_seconds = _time_sampling(model, x, y, n_sample, dev) if n_sample else None
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "model": model_name,
        "device": str(dev),
        "threads": threads,
        "compile": compile,
        "channels_last": channels_last,
        "batch_size": model.cfg.batch_size,
        "params": count_params(model),
        "train_steps": result.steps,
        "train_seconds": result.seconds,
        "train_images_per_s": result.images_per_s,
        "train_steps_per_s": result.steps / result.seconds if stepped else None,
        "n_sample": n_sample,
        "sample_seconds": sample_seconds,
        "sample_images_per_s": n_sample / sample_seconds if sample_seconds else None,
    }


PROBE_VOCAB = 40  # words of a stand-in caption vocabulary: a probe needs the size, not the words


def probe_meta(data: Any) -> DataMeta:
    """The shape and levels data set `data` (a DataConfig) has, with a stand-in vocabulary and
    domain names, so every model can be measured without preparing the data."""
    from gen.conditions.domain import domain_names
    from gen.data import expected_meta

    meta = expected_meta(data)
    meta.extra["vocab"] = ["<pad>", "<unk>", *(f"w{i}" for i in range(PROBE_VOCAB))]
    meta.extra["domains"] = domain_names(data) or ["A", "B"]
    return meta


def step_seconds(name: str, section: dict[str, Any], data: Any, steps: int = 3) -> float:
    """Seconds one training step of model `name` takes here (a short probe on random data of
    the shape `data` describes): how `genbench benchmark` orders its queue."""
    section = dict(section or {})
    got = measure(name, section, probe_meta(data), section.get("batch_size", 64), steps, 0)
    return got["train_seconds"] / got["train_steps"] if got["train_steps"] else 0.0
