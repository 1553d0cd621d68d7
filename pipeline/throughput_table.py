"""`genbench throughput`: each model's train and sample speed measured in this process
(`pipeline.throughput.measure`), one row per model, then what it was measured on."""

from __future__ import annotations

import math

import click

from gen.data import dataset_id
from gen.registry import model_class
from gen.runtime import pick_device
from pipeline.params import Params
from pipeline.selection import select
from pipeline.throughput import measure, probe_meta
from pipeline.user_errors import UserError

HEADER = f"{'model':<16} {'params':>10} {'train img/s':>12} {'steps/s':>9} {'sample img/s':>13}"


def print_table(
    p: Params,
    names: list[str] | None,
    steps: int,
    samples: int,
    batch_size: int | None,
    device: str | None,
    threads: int | None,
    compile: bool | None,
    channels_last: bool | None,
) -> None:
    """Measure `names` (default: benchmark.models, `all`: those the data can serve) and print
    a row as each one finishes; a setting left None is the params' (each model's batch size,
    train.device, ...)."""
    names = select(p, names).models
    for name in names:
        model_class(name)
    try:
        dev = pick_device(device or p.train.device)
    except RuntimeError as exc:
        raise UserError(f"--device={device}: {exc}") from None
    meta = probe_meta(p.data)
    threads = threads or p.train.threads
    compile = p.train.compile if compile is None else compile
    channels_last = p.train.channels_last if channels_last is None else channels_last
    click.echo(HEADER)
    for name in names:
        section = p.model_section(name)
        bs = batch_size or section.get("batch_size") or model_class(name).Config().batch_size
        got = measure(
            name, section, meta, bs, steps, samples, str(dev), threads, compile, channels_last
        )
        click.echo(
            f"{name:<16} {got['params']:>10,} {_cell(got['train_images_per_s'], 12)} "
            f"{_cell(got['train_steps_per_s'], 9)} {_cell(got['sample_images_per_s'], 13)}"
        )
    click.echo(
        f"device {dev}, {threads} thread(s), data {dataset_id(p.data)}"
        + (", compiled" if compile else "")
        + (", channels_last" if channels_last else "")
    )


def _cell(value: float | None, width: int) -> str:
    """One decimal, or two significant digits below 1: a slow model's 0.04 img/s is not 0.0."""
    if not value:
        return f"{'n/a':>{width}}"
    return f"{value:>{width}.{max(1, 1 - math.floor(math.log10(value)))}f}"
