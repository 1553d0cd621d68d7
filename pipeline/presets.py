"""Paper-scale presets: params overrides for the published setups, with the published figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gen.config import ConfigError
from gen.user_files import UserFileError, check_name, read_yaml

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


@dataclass
class Preset:
    name: str
    description: str
    published: str  # the number to compare a reproduction against, with its source
    params: dict[str, Any]  # overrides of params.yaml

    def set_flags(self) -> list[str]:
        """The overrides as `dvc exp run -S key=value` arguments."""
        flags = []
        for key, value in _flatten(self.params).items():
            flags += ["-S", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"]
        return [f.removesuffix("\n...") for f in flags]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` applied key by key (nested sections merged, not replaced)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def available(folder: Path = PRESETS_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


PRESET_FILE = "a mapping with description, published and params (a mapping of sections)"


def load_preset(name: str, folder: Path = PRESETS_DIR) -> Preset:
    """Preset `name` (a name, not a path: `genbench preset` lists them) from its file."""
    known = available(folder)
    check_name(name, "preset", known)
    path = folder / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown preset '{name}'; available: {', '.join(known)}")
    raw = read_yaml(path, "preset file", PRESET_FILE)
    if not (
        isinstance(raw, dict)
        and all(isinstance(raw.get(k), str) for k in ("description", "published"))
        and isinstance(raw.get("params"), dict)
    ):
        raise UserFileError(f"preset file '{path}' is not {PRESET_FILE}")
    return Preset(name, raw["description"], raw["published"], raw["params"])
