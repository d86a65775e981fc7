"""Settings schemas: frozen dataclasses whose fields carry their own checks.

Every settings file of the project (the runtime ``config.toml``, training
configs) is a tree of frozen dataclasses.  A field's allowed values and range
live beside it, and command-line ``choices`` are read from the same place::

    @dataclasses.dataclass(frozen=True)
    class InferenceConfig:
        hop_seconds: float = setting(0.5, above=0, max=60)
        mode: str = setting("exact", choices=("exact", "streaming"))

    choices(InferenceConfig, "mode")            # ("exact", "streaming") for argparse

:func:`build` turns parsed TOML into such a tree: unknown sections or keys,
wrong types, non-finite numbers and values outside their range fail with one
line that names the key's full name (``inference.hop_seconds: must be at most
60, got 1e+30``).  Nothing here imports TensorFlow, so a bad setting costs the
user well under a second.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from tagstream.errors import UsageError

__all__ = [
    "ConfigError",
    "apply_overrides",
    "build",
    "check_value",
    "choices",
    "coerce_setting",
    "read_toml",
    "setting",
]

T = TypeVar("T")


class ConfigError(UsageError, ValueError):
    """A setting is missing, unknown, of the wrong type or out of range; names its key."""


def setting(
    default: Any,
    *,
    choices: tuple[str, ...] | None = None,
    min: float | None = None,
    above: float | None = None,
    max: float | None = None,
) -> Any:
    """A dataclass field with its checks.

    Parameters
    ----------
    default
        The built-in default (``config.toml`` shows the same values).
    choices : tuple of str or None
        The allowed values.
    min, above, max : number or None
        ``value >= min``, ``value > above``, ``value <= max``.
    """
    metadata = {"choices": choices, "min": min, "above": above, "max": max}
    if isinstance(default, list | tuple):
        return dataclasses.field(default=tuple(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choices(cls: type, name: str) -> tuple[str, ...]:
    """The allowed values of field ``name`` of schema ``cls`` (for argparse ``choices``)."""
    for field in dataclasses.fields(cls):
        if field.name == name:
            allowed = field.metadata.get("choices")
            if allowed is None:
                raise KeyError(f"{cls.__name__}.{name} has no choices")
            return tuple(allowed)
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, "a list of strings"
    )


def coerce_setting(key: str, value: Any, tp: Any, *, wrap_string: bool = True) -> Any:
    """Check ``value`` against the field type ``tp``; return it in that type.

    With ``wrap_string`` a bare string is accepted for a list of strings.
    Numbers must be finite (``inf`` and ``nan`` are refused).
    """
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if typing.get_origin(tp) is tuple:
        if wrap_string and isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad
        return tuple(value)
    raise TypeError(f"unsupported settings type {tp!r}")  # pragma: no cover


def _fmt(number: float) -> str:
    return f"{number:g}"


def check_value(key: str, value: Any, metadata: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` when ``value`` breaks the field's checks."""
    allowed = metadata.get("choices")
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{key}: expected one of {', '.join(map(str, allowed))}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    low, above, high = metadata.get("min"), metadata.get("above"), metadata.get("max")
    if above is not None and not value > above:
        raise ConfigError(f"{key}: must be greater than {_fmt(above)}, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{key}: must be {_fmt(low)} or more, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{key}: must be at most {_fmt(high)}, got {value!r}")


def build(
    cls: type[T], data: Mapping[str, Any], *, prefix: str = "", wrap_string: bool = True
) -> T:
    """Build schema ``cls`` from parsed TOML ``data``; nested dataclasses are sections.

    Raises
    ------
    ConfigError
        An unknown key or section, a wrong type or a value out of range.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for unknown in sorted(set(data) - set(fields)):
        where = f"{prefix}{unknown}"
        if prefix:
            raise ConfigError(
                f"{where}: unknown setting; {prefix[:-1]} has " + ", ".join(sorted(fields))
            )
        raise ConfigError(f"{where}: unknown section; the sections are " + ", ".join(fields))
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            continue
        tp, raw, key = hints[name], data[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            if not isinstance(raw, dict):
                raise ConfigError(f"{key}: expected a [section], got {raw!r}")
            values[name] = build(tp, raw, prefix=f"{key}.", wrap_string=wrap_string)  # type: ignore[arg-type]
            continue
        values[name] = coerce_setting(key, raw, tp, wrap_string=wrap_string)
        check_value(key, values[name], field.metadata)
    return cls(**values)


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Merge ``{"section.key": value}`` into ``data``; ``None`` values are skipped."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        *sections, key = dotted.split(".")
        if not sections or not key:
            raise ConfigError(f"{dotted}: an override must name section.key")
        node = data
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{section}: expected a [section], got {node!r}")
        node[key] = value


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML settings file; every failure is one :class:`ConfigError` line."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: settings file not found; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a settings file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
