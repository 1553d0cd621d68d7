"""`genbench protocol export|import` and `genbench score`: the protocol as a file, and samples
of any generator scored on it (pipeline.protocol, pipeline.score); parsing only."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.user_errors import user_errors

params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(),
    help="params file to read",
)


def _print(result: dict) -> None:
    click.echo(json.dumps(result, indent=2, default=str))


@click.group("protocol")
def protocol() -> None:
    """The protocol (ruler, reference features, fingerprint) as one file: export it on one
    host, import it on the others, and they measure with the same bytes."""


@protocol.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@params_option
@user_errors
def export_command(file: str, params_path: str) -> None:
    """Write this clone's protocol to FILE (needs `genbench prepare` and `genbench classifier`)."""
    from pipeline.params import load_params
    from pipeline.protocol import export

    _print(export(load_params(params_path), Path(file)))


@protocol.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@params_option
@user_errors
def import_command(file: str, params_path: str) -> None:
    """Check FILE against this clone's data, copy it into protocols/ (sha256 pinned in
    protocols/SHA256SUMS) and set `classifier.protocol` to it in the params file."""
    from pipeline.params import load_params
    from pipeline.protocol import import_file

    _print(import_file(load_params(params_path), Path(params_path), Path(file)))


@click.command("score")
@click.argument("samples", nargs=-1, required=True)
@click.option("--name", required=True, help="the outside model's name in MLflow and the report")
@click.option(
    "--protocol",
    "protocol_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="score with this protocol file alone (no data set needed; default: this clone's "
    "data/prepared, runs/classifiers and eval params)",
)
@click.option("--benchmark", default=None, help="a benchmark's name or run id: runs join it")
@click.option("--resize", is_flag=True, help="resize to the protocol's size (PIL bicubic)")
@params_option
@user_errors
def score(
    samples: tuple[str, ...],
    name: str,
    protocol_file: str | None,
    benchmark: str | None,
    resize: bool,
    params_path: str,
) -> None:
    """Score SAMPLES (folders of PNG/JPEG images, .npy/.npz arrays (N, H, W[, C]) or MLflow
    model URIs such as runs:/<id>/model whose model has sample(n)) exactly as genbench's own
    samples are; each SAMPLES is one seed of the outside model NAME, logged as an MLflow run
    (family `external`)."""
    from pipeline.params import load_params
    from pipeline.score import score as score_samples

    path = Path(protocol_file) if protocol_file else None
    # With a protocol file, a folder without params.yaml will do (no data set, no clone).
    p = None if path and not Path(params_path).exists() else load_params(params_path)
    _print(score_samples(p, list(samples), name, path, benchmark, resize))


COMMANDS = [protocol, score]
