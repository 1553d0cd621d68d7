"""`genbench models`: the models genbench knows, built-in and plug-ins, with what each is; or
one model's params.yaml section with its defaults, for a plug-in that has none there yet."""

from __future__ import annotations

import dataclasses

import click
import yaml

from gen import registry
from gen.capabilities import Capabilities
from gen.config import as_dict
from pipeline.user_errors import user_errors

COLUMNS = ("model", "family", "condition", "capabilities", "from")


def capabilities_text(caps: Capabilities) -> str:
    """`likelihood=exact, reconstructs, ...`: what it declares, '-' for nothing."""
    parts = []
    for f in dataclasses.fields(caps):
        value = getattr(caps, f.name)
        if value is True:
            parts.append(f.name)
        elif value:
            parts.append(f"{f.name}={value}")
    return ", ".join(parts) or "-"


def source(name: str) -> str:
    """'built-in', or the package (and version) a plug-in model comes from."""
    plugin = registry.plugin(name)
    return "built-in" if plugin is None else f"{plugin.package} {plugin.version}"


def table() -> str:
    """One line per usable model, in the registry's order (built-ins first)."""
    rows = [COLUMNS] + [
        (
            name,
            cls.family,
            cls.condition.name or "none",
            capabilities_text(cls.capabilities),
            source(name),
        )
        for name, cls in registry.all_models().items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    )


def section(name: str) -> str:
    """Model `name`'s params.yaml section, every key at its default, under a comment line."""
    cls = registry.model_class(name)
    head = f"# {name}: {cls.family} model ({source(name)}); every key at its default\n"
    return head + yaml.safe_dump({name: as_dict(cls.Config())}, sort_keys=False)


@click.command("models")
@click.argument("name", required=False)
@user_errors
def models(name: str | None) -> None:
    """List the models (built-in, then those installed packages add as plug-ins): family,
    condition, capabilities and where each comes from. A plug-in that cannot be used is an
    `Error:` line on stderr, after the list, and the exit status is 2. With NAME, print its
    params.yaml section at its defaults (`genbench models NAME >> params.yaml` adds it)."""
    if name is not None:
        click.echo(section(name), nl=False)
        return
    click.echo(table())
    errors = registry.plugin_errors()
    for message in errors.values():
        click.echo(f"Error: {message}", err=True)
    if errors:
        click.get_current_context().exit(2)
