"""The one config loader every process uses.

``config.toml`` at the repository root holds every setting; each ``[section]``
maps to one frozen dataclass below.  Unknown keys and wrong types fail at
start-up with the key's full name::

    >>> load_config(overrides={"inference.hop_seconds": "fast"})
    Traceback (most recent call last):
    config.ConfigError: inference.hop_seconds: expected a number, got 'fast'

Command-line flags override the file through the same checks
(``overrides={"section.key": value}``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "ConfigError",
    "InferenceConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ModelConfig",
    "RecordConfig",
    "SecurityConfig",
    "StreamerConfig",
    "SubscribeConfig",
    "TaggingConfig",
    "WebConfig",
    "load_config",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "config.toml"
CONFIG_ENV = "TAGSTREAM_CONFIG"


class ConfigError(ValueError):
    """A setting is missing, unknown or of the wrong type; the message names its key."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "MSD_musicnn"
    cache_dir: str = "~/.cache/tagstream"
    device: str = "auto"
    precision: str = "float32"


@dataclasses.dataclass(frozen=True)
class TaggingConfig:
    hop_seconds: float = 0.0
    top_k: int = 5
    batch_size: int = 32
    pad_short: bool = False


@dataclasses.dataclass(frozen=True)
class StreamerConfig:
    endpoint: str = "tcp://127.0.0.1:5555"
    endpoints: tuple[str, ...] = ()
    device: str = ""
    sample_rate: int = 0
    channels: int = 0
    block_seconds: float = 0.1
    queue_blocks: int = 100
    send_hwm: int = 1000
    stream_id: str = ""
    status_interval_seconds: float = 10.0
    reopen_seconds: float = 3.0


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    input_endpoint: str = "tcp://127.0.0.1:5555"
    publish_endpoint: str = "tcp://127.0.0.1:5556"
    window_seconds: float = 3.0
    hop_seconds: float = 0.5
    ema_seconds: float = 10.0
    idle_timeout_seconds: float = 30.0
    max_gap_seconds: float = 1.0
    max_batch: int = 16
    max_streams: int = 256
    status_interval_seconds: float = 10.0
    publish_hwm: int = 1000
    mode: str = "exact"


@dataclasses.dataclass(frozen=True)
class SubscribeConfig:
    endpoints: tuple[str, ...] = ("tcp://127.0.0.1:5556",)


@dataclasses.dataclass(frozen=True)
class RecordConfig:
    retention_days: float = 30.0
    commit_interval_seconds: float = 1.0
    retention_interval_seconds: float = 3600.0
    status_interval_seconds: float = 60.0
    synchronous: str = "FULL"


@dataclasses.dataclass(frozen=True)
class SecurityConfig:
    curve: str = "auto"
    server_secret_key: str = ""
    server_public_key: str = ""
    client_secret_key: str = ""
    allowed_clients_dir: str = ""


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    worker_port: int = 0
    streamer_port: int = 0
    bind: str = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class WebConfig:
    bind: str = "127.0.0.1:8080"
    token: str = ""
    history_seconds: float = 60.0


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    tagging: TaggingConfig = TaggingConfig()
    streamer: StreamerConfig = StreamerConfig()
    inference: InferenceConfig = InferenceConfig()
    subscribe: SubscribeConfig = SubscribeConfig()
    record: RecordConfig = RecordConfig()
    security: SecurityConfig = SecurityConfig()
    metrics: MetricsConfig = MetricsConfig()
    web: WebConfig = WebConfig()
    logging: LoggingConfig = LoggingConfig()

    @property
    def model_cache_dir(self) -> Path:
        return Path(os.path.expanduser(self.model.cache_dir))


_ALLOWED = {
    "model.device": ("auto", "cpu", "gpu"),
    "model.precision": ("float32", "bfloat16"),
    "inference.mode": ("exact", "streaming"),
    "logging.level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "record.synchronous": ("NORMAL", "FULL"),
    "security.curve": ("auto", "on", "off"),
}
_POSITIVE = {
    "tagging.top_k",
    "tagging.batch_size",
    "streamer.block_seconds",
    "streamer.queue_blocks",
    "streamer.send_hwm",
    "streamer.status_interval_seconds",
    "streamer.reopen_seconds",
    "inference.window_seconds",
    "inference.hop_seconds",
    "inference.ema_seconds",
    "inference.idle_timeout_seconds",
    "inference.max_gap_seconds",
    "inference.max_batch",
    "inference.max_streams",
    "inference.status_interval_seconds",
    "inference.publish_hwm",
    "record.commit_interval_seconds",
    "record.retention_interval_seconds",
    "record.status_interval_seconds",
    "web.history_seconds",
}
_NON_NEGATIVE = {
    "tagging.hop_seconds",
    "streamer.sample_rate",
    "streamer.channels",
    "record.retention_days",
    "metrics.worker_port",
    "metrics.streamer_port",
}


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, "a list of strings"
    )


def coerce_setting(key: str, value: Any, tp: Any, *, wrap_string: bool = True) -> Any:
    """Check ``value`` against the field type ``tp``; return it in that type.

    Shared by every TOML settings loader (``config.toml``, training configs).
    With ``wrap_string`` a bare string is accepted for a list of strings.
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
    raise TypeError(f"unsupported config type {tp!r}")  # pragma: no cover


def _check_value(key: str, value: Any) -> None:
    if key in _ALLOWED and value not in _ALLOWED[key]:
        raise ConfigError(f"{key}: expected one of {', '.join(_ALLOWED[key])}, got {value!r}")
    if key in _POSITIVE and not value > 0:
        raise ConfigError(f"{key}: must be greater than 0, got {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"{key}: must be 0 or more, got {value!r}")


def _build(data: dict[str, Any]) -> Config:
    sections: dict[str, Any] = {}
    for unknown in sorted(set(data) - {f.name for f in dataclasses.fields(Config)}):
        raise ConfigError(
            f"{unknown}: unknown section; the sections are "
            + ", ".join(f.name for f in dataclasses.fields(Config))
        )
    section_types = typing.get_type_hints(Config)
    for section_field in dataclasses.fields(Config):
        cls = section_types[section_field.name]
        raw = data.get(section_field.name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{section_field.name}: expected a [section], got {raw!r}")
        hints = typing.get_type_hints(cls)
        for key in sorted(set(raw) - set(hints)):
            raise ConfigError(
                f"{section_field.name}.{key}: unknown setting; "
                f"{section_field.name} has " + ", ".join(sorted(hints))
            )
        values = {}
        for name, tp in hints.items():
            if name in raw:
                full = f"{section_field.name}.{name}"
                values[name] = coerce_setting(full, raw[name], tp)
                _check_value(full, values[name])
        sections[section_field.name] = cls(**values)
    return Config(**sections)


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"{dotted}: an override must name section.key")
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"{section}: expected a [section], got {data[section]!r}")
        data[section][key] = value


def load_config(
    path: str | os.PathLike[str] | None = None, *, overrides: dict[str, Any] | None = None
) -> Config:
    """Read ``path`` (default: ``$TAGSTREAM_CONFIG`` or the repository's ``config.toml``).

    Parameters
    ----------
    path : path-like or None
        A TOML file.  Missing keys take the defaults shown in ``config.toml``.
    overrides : dict {"section.key": value}
        Values from the command line; ``None`` values are ignored.

    Raises
    ------
    ConfigError
        One line naming the offending key, the expected type and the value.
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass --config PATH") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    _apply_overrides(data, overrides or {})
    return _build(data)


def default_config() -> Config:
    """The built-in defaults, without reading any file."""
    return Config()
