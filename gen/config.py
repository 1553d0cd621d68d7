"""Typed, validated configuration sections built from plain dicts (a `params.yaml` section)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar


class ConfigError(ValueError):
    """A bad value in params.yaml; a one-line message naming the key and what is allowed."""


class DataMismatch(ConfigError):
    """The data cannot serve a model (its size, captions, domains): no value of the model's
    own section would help. `benchmark.models: all` leaves such a model out, listing
    `reason` (short, as in "cyclegan, stargan: the data has no domains"); a model named
    explicitly is refused with the full message."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


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
        one_of(args).check(section, key, value)
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
        return as_int(f"{section}.{key}", value)
    if annotation is float:
        # PyYAML reads `1e-3` (no dot) as a string, so strings that parse as numbers are accepted.
        if isinstance(value, bool):
            raise ConfigError(f"{section}.{key}={value!r} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{section}.{key}={value!r} must be a number") from None
        except OverflowError:  # an integer beyond a float's range
            raise ConfigError(f"{section}.{key}={value} is too large for a number") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{section}.{key}={value!r} must be a string")
        return value
    return value


# Integers go to torch, which holds them in 64 bits; seeds also go to NumPy and scikit-learn,
# which take 0..2**32-1. Beyond these they would fail deep inside a library, so they fail here.
INT64 = (-(2**63), 2**63 - 1)
MAX_SEED = 2**32 - 1


def as_int(name: str, value: Any) -> int:
    """`value` (YAML's int, a whole float like 1e3, or a string of one) as an int, exactly
    (a float would round 2**70 + 1); else a one-line ConfigError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name}={value!r} must be an integer")
    number = value
    if isinstance(number, str):
        try:
            number = int(number)
        except ValueError:
            try:
                number = float(number)
            except ValueError:
                raise ConfigError(f"{name}={value!r} must be an integer") from None
    if isinstance(number, float):
        if not number.is_integer():
            raise ConfigError(f"{name}={value!r} must be an integer")
        number = int(number)
    return number


def seed_rule() -> Rule:
    """A seed's range: every seed reaches NumPy or scikit-learn somewhere."""
    return in_range(0, MAX_SEED, note="what NumPy takes as a seed")


def from_dict(cls: type[T], section: str, values: dict[str, Any] | None) -> T:
    """Build dataclass `cls` from a params section: unknown keys, bad types and values that
    break a field's rules fail loudly, then the section's own `validate` (its cross-field
    checks) runs."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"params section '{section}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(map(str, set(values) - fields))
    if unknown:
        raise ConfigError(
            f"unknown key '{unknown[0]}' in params section '{section}'; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(section, k, v, hints[k]) for k, v in values.items()}
    obj = cls(**kwargs)
    check_rules(obj, section)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(section)
    check_int64(obj, section)
    return obj


def check_int64(obj: Any, section: str) -> None:
    """Every integer of dataclass `obj` fits torch's 64 bits. Checked after the field's own
    rules and the section's checks, which name a narrower range where there is one."""
    low, high = INT64
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and not low <= v <= high:
                raise ConfigError(
                    f"{section}.{f.name}={v} is out of range: integers must be in "
                    "-2**63..2**63-1 (what torch holds)"
                )


@dataclasses.dataclass(frozen=True)
class Rule:
    """A check on one field's value, and its one-line message when the value fails it: a
    template over {section}, {key} and {value} (a tuple shown as the list YAML wrote)."""

    holds: Callable[[Any], bool]
    message: str

    def check(self, section: str, key: str, value: Any) -> None:
        if not self.holds(value):
            shown = list(value) if isinstance(value, tuple) else value
            raise ConfigError(self.message.format(section=section, key=key, value=shown))


# How a rule's message names its field: with the value given (most do), or the key alone.
WITH_VALUE = "{section}.{key}={value}"
KEY_ONLY = "{section}.{key}"


def positive(name: str = WITH_VALUE) -> Rule:
    return Rule(lambda v: v > 0, f"{name} must be > 0")


def _aside(note: str) -> str:
    return f" ({note})" if note else ""


def at_least(low: float, name: str = WITH_VALUE, note: str = "") -> Rule:
    return Rule(lambda v: v >= low, f"{name} must be >= {low}{_aside(note)}")


def at_most(high: float, note: str = "") -> Rule:
    return Rule(lambda v: v <= high, f"{WITH_VALUE} must be <= {high}{_aside(note)}")


def in_range(low: int, high: int, note: str = "") -> Rule:
    """low..high, both included."""
    return Rule(lambda v: low <= v <= high, f"{WITH_VALUE} must be in {low}..{high}{_aside(note)}")


def in_half_open(low: float, high: float, name: str = WITH_VALUE) -> Rule:
    """[low, high): a dropout rate, Adam's betas."""
    return Rule(lambda v: low <= v < high, f"{name} must be in [{low}, {high})")


def in_open(low: float, high: float, name: str = WITH_VALUE) -> Rule:
    """(low, high): a held-out fraction."""
    return Rule(lambda v: low < v < high, f"{name} must be in ({low}, {high})")


def odd_at_least(low: int) -> Rule:
    """A kernel size with a centre pixel."""
    return Rule(lambda v: v % 2 == 1 and v >= low, f"{WITH_VALUE} must be an odd number >= {low}")


def one_of(choices: typing.Iterable[Any]) -> Rule:
    """The message a Literal-typed field gives, for a field whose choices are a constant."""
    choices = tuple(choices)
    allowed = ", ".join(map(str, choices))
    return Rule(
        lambda v: v in choices,
        f"{{section}}.{{key}}={{value!r}} is not allowed; choose one of: {allowed}",
    )


def checked(default: Any, *rules: Rule) -> Any:
    """A dataclass field with its default and the rules its value must pass (`check_rules`)."""
    return dataclasses.field(default=default, metadata={"rules": rules})


def field_rules(cls: type, name: str) -> tuple[Rule, ...]:
    """The rules of field `name`, from its nearest declaration with `checked`: a subclass that
    only changes a default keeps the rules of the field it overrides."""
    for klass in cls.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and "rules" in declared.metadata:
            return declared.metadata["rules"]
    return ()


def check_rules(obj: Any, section: str) -> None:
    """Check every field of dataclass `obj` against its rules, in field order; null (None)
    passes them all (an optional field's rules are about its values)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is not None:
            for rule in field_rules(type(obj), f.name):
                rule.check(section, f.name, value)


def require(condition: bool, message: str) -> None:
    """Raise a ConfigError with `message` unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


def require_data(condition: bool, message: str, reason: str) -> None:
    """Raise a DataMismatch (`message`, short `reason`) unless `condition` holds."""
    if not condition:
        raise DataMismatch(message, reason)


def as_dict(obj: Any) -> dict[str, Any]:
    """A JSON/YAML-friendly dict of a config dataclass (tuples become lists)."""
    out = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
