"""`genbench protocol export|import`: the protocol as a file (pipeline.protocol); parsing only."""

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


COMMANDS = [protocol]
