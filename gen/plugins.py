"""Models from other packages: entry points of the group `genbench.models`.

A package declares `[project.entry-points."genbench.models"] mymodel = "mypkg.models:MyModel"`
and, once installed, `mymodel` is a model like the built-in ones. A broken plug-in (it does not
import, its class is not a usable `GenerativeModel`, its name is taken) never stops the others:
its one-line error is kept and raised only when the user names it, or lists the models.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from gen.config import ConfigError

GROUP = "genbench.models"
# A model's name is its params.yaml section, a `-S NAME.key=...` prefix and a file name.
NAME = re.compile(r"[a-z][a-z0-9_]*")
# Names params.yaml gives its other sections, and the report's row of real images.
RESERVED = ("model", "seed", "data", "classifier", "train", "eval", "benchmark")


class PluginError(ConfigError):
    """A plug-in model that cannot be used, named by its package and entry point (one line)."""


@dataclass(frozen=True)
class Plugin:
    """A model class an installed package registers, and where it comes from."""

    name: str
    cls: type
    package: str  # the distribution's name, as pip knows it
    version: str
    target: str  # the entry point's value, "module:Class"

    def where(self) -> str:
        return describe(self.name, self.target, self.package, self.version)

    def source_files(self) -> tuple[Path, list[Path]]:
        """The plug-in's Python files and the folder they are named relative to: the top-level
        package its class lives in (or its module alone): genbench's code hash misses them."""
        module = sys.modules[self.cls.__module__]
        top = sys.modules.get(self.cls.__module__.partition(".")[0], module)
        if getattr(top, "__file__", None) and hasattr(top, "__path__"):
            folder = Path(top.__file__).parent
            return folder.parent, sorted(folder.rglob("*.py"))
        path = Path(module.__file__)
        return path.parent, [path]


def describe(name: str, target: str, package: str, version: str) -> str:
    return (
        f"plug-in model '{name}' (entry point '{name} = {target}' of package {package} {version})"
    )


def discover(
    builtins: Collection[str], check: Callable[[str, type], None]
) -> tuple[dict[str, Plugin], dict[str, str]]:
    """Load every entry point of `GROUP`: the usable plug-ins by name, and the one-line error
    of each broken one by its name. `check(name, cls)` raises a TypeError for a class the
    registry cannot take (the same checks as the built-in models)."""
    found: dict[str, list[metadata.EntryPoint]] = {}
    for ep in metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, []).append(ep)
    plugins: dict[str, Plugin] = {}
    errors: dict[str, str] = {}
    for name, eps in sorted(found.items()):
        ep = eps[0]
        package, version = _package(ep)
        where = describe(name, ep.value, package, version)
        problem = _name_problem(name, builtins, eps)
        if problem:
            errors[name] = f"{where} is refused: {problem}"
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # any error of someone else's import must not stop genbench
            errors[name] = f"{where} cannot be imported: {type(exc).__name__}: {exc}"
            continue
        try:
            check(name, cls)
        except TypeError as exc:
            errors[name] = f"{where} is refused: {exc}"
            continue
        plugins[name] = Plugin(name, cls, package, version, ep.value)
    return plugins, {k: " ".join(v.split()) for k, v in errors.items()}


def _package(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    return (dist.name, dist.version) if dist is not None else ("(unknown)", "?")


def _name_problem(name: str, builtins: Collection[str], eps: list[metadata.EntryPoint]) -> str:
    """Why `name` cannot be a plug-in model's name ('' when it can)."""
    if name in builtins:
        return f"'{name}' is a built-in model (which is used instead); rename the entry point"
    if len(eps) > 1:
        packages = " and ".join(f"{p} {v}" for p, v in map(_package, eps))
        return f"packages {packages} both declare '{name}'; uninstall one or rename its entry point"
    if name in RESERVED:
        return f"'{name}' is a section of params.yaml, not a model's; rename the entry point"
    if not NAME.fullmatch(name):
        return "a model name is lowercase letters, digits and '_', starting with a letter"
    return ""
