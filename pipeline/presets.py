"""Presets: params overrides read from YAML files. Paper-scale presets (presets/*.yaml) are the
published setups of one model, with the published figures; suites (presets/suites/*.yaml) are a
data set's recipe for a whole benchmark (`genbench benchmark --suite mnist`): step counts and
sizes for every model, and what they are sized for (a CPU or a GPU)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gen.config import ConfigError
from gen.user_files import UserFileError, check_name, read_yaml

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
SUITES_DIR = PRESETS_DIR / "suites"
AUTO = "auto"  # --suite auto: the recipe of params' data set, an image folder's closest one


@dataclass
class Preset:
    name: str
    description: str
    published: str | None  # the number to compare a reproduction against, with its source
    params: dict[str, Any]  # overrides of params.yaml
    sized_for: str | None = None  # a suite's: cpu or gpu

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


PRESET_FILE = "a mapping with description, published (optional) and params (a mapping of sections)"


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
        and isinstance(raw.get("description"), str)
        and isinstance(raw.get("published"), (str, type(None)))
        and isinstance(raw.get("params"), dict)
    ):
        raise UserFileError(f"preset file '{path}' is not {PRESET_FILE}")
    return Preset(
        name, raw["description"], raw.get("published"), raw["params"], raw.get("sized_for")
    )


def closest_suite(data: dict[str, Any]) -> str:
    """The suite of params' `data:` section: its data set's, or for an image folder the bundled
    data set closest in channels and size (RGB: cifar10; grayscale up to 16 px: digits, else
    mnist); mixture is drawn from the digits."""
    name = data.get("name", "digits")
    if name == "image_folder":
        if (data.get("channels") or 3) == 3:
            return "cifar10"
        return "digits" if (data.get("image_size") or 32) <= 16 else "mnist"
    return "digits" if name == "mixture" else name


def resolve_suite(raw: dict[str, Any], suite: str) -> str:
    """The suite `--suite` names (`auto`: `closest_suite`), or a ConfigError listing them."""
    data = raw.get("data")
    name = closest_suite(data if isinstance(data, dict) else {}) if suite == AUTO else suite
    if not (SUITES_DIR / f"{name}.yaml").exists():
        known = ", ".join([*available(SUITES_DIR), AUTO])
        raise ConfigError(f"--suite={suite!r} is not a suite; choose one of: {known}")
    return name


def suite_values(raw: dict[str, Any], suite: str) -> dict[str, Any]:
    """params.yaml's values `raw` with suite `suite`'s over them. An image folder keeps its own
    `data:` section (its images, not the recipe's data set) and trains its own ruler
    (`classifier.protocol: null`): the recipe brings the sizes and step counts."""
    over = dict(load_preset(suite, SUITES_DIR).params)
    data = raw.get("data")
    if isinstance(data, dict) and data.get("name") == "image_folder":
        over.pop("data", None)
        over["classifier"] = {**over.get("classifier", {}), "protocol": None}
    return merge(raw, over)
