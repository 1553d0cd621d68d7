"""Typed, validated configuration sections built from plain dicts (a `params.yaml` section)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar


class ConfigError(ValueError):
    """A bad value in params.yaml; a one-line message naming the key and what is allowed."""


T = TypeVar("T")


def _coerce(section: str, key: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML value to the annotated type, or raise a one-line ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(section, key, value, inner[0])
    if origin is typing.Literal:
        if value not in args:
            allowed = ", ".join(map(str, args))
            raise ConfigError(f"{section}.{key}={value!r} is not allowed; choose one of: {allowed}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{section}.{key}={value!r} must be a list")
        item = args[0] if args else Any
        items = [_coerce(section, key, v, item) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{section}.{key}={value!r} must be true or false")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{section}.{key}={value!r} must be an integer")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{section}.{key}={value!r} must be an integer") from None
        if not number.is_integer():
            raise ConfigError(f"{section}.{key}={value!r} must be an integer")
        return int(number)
    if annotation is float:
        # PyYAML reads `1e-3` (no dot) as a string, so strings that parse as numbers are accepted.
        if isinstance(value, bool):
            raise ConfigError(f"{section}.{key}={value!r} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{section}.{key}={value!r} must be a number") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{section}.{key}={value!r} must be a string")
        return value
    return value


def from_dict(cls: type[T], section: str, values: dict[str, Any] | None) -> T:
    """Build dataclass `cls` from a params section; unknown keys and bad types fail loudly."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"params section '{section}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(
            f"unknown key '{unknown[0]}' in params section '{section}'; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(section, k, v, hints[k]) for k, v in values.items()}
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(section)
    return obj


def require(condition: bool, message: str) -> None:
    """Raise a ConfigError with `message` unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


def as_dict(obj: Any) -> dict[str, Any]:
    """A JSON/YAML-friendly dict of a config dataclass (tuples become lists)."""
    out = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
