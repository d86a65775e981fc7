"""The one config loader every process uses.

Settings come from one TOML file; each ``[section]`` maps to one frozen
dataclass below whose fields carry their own checks (:mod:`config.schema`).
Unknown keys, wrong types and values out of range fail at start-up with the
key's full name::

    >>> load_config(overrides={"inference.hop_seconds": "fast"})
    Traceback (most recent call last):
    config.schema.ConfigError: inference.hop_seconds: expected a number, got 'fast'

Which file (the first that applies wins, whole; nothing is merged):

1. ``--config PATH`` (the ``path`` argument);
2. ``$TAGSTREAM_CONFIG``;
3. ``config.toml`` in the current folder;
4. ``$XDG_CONFIG_HOME/tagstream/config.toml`` (``~/.config/tagstream/config.toml``);
5. none: the built-in defaults below, which equal the repository's ``config.toml``.

Command-line flags override the file through the same checks
(``overrides={"section.key": value}``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.schema import (
    ConfigError,
    apply_overrides,
    build,
    choices,
    coerce_setting,
    read_toml,
    setting,
)

__all__ = [
    "CONFIG_ENV",
    "Config",
    "ConfigError",
    "ContentConfig",
    "InferenceConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ModelConfig",
    "RecordConfig",
    "ReportConfig",
    "SecurityConfig",
    "StreamerConfig",
    "SubscribeConfig",
    "TaggingConfig",
    "WebConfig",
    "choices",
    "coerce_setting",
    "config_path",
    "load_config",
    "user_config_path",
]

CONFIG_ENV = "TAGSTREAM_CONFIG"
CONFIG_NAME = "config.toml"

#: ZeroMQ high-water marks are C ints.
_MAX_HWM = 2**31 - 1
#: Seconds: a day, the most any interval or timeout here sensibly is.
_DAY = 86_400.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "MSD_musicnn"
    cache_dir: str = "~/.cache/tagstream"
    device: str = setting("auto", choices=("auto", "cpu", "gpu"))
    precision: str = setting("float32", choices=("float32", "bfloat16"))
    backend: str = setting("auto", choices=("auto", "tensorflow", "onnxruntime"))


@dataclasses.dataclass(frozen=True)
class TaggingConfig:
    hop_seconds: float = setting(0.0, min=0, max=3600)
    top_k: int = setting(5, above=0, max=50)
    batch_size: int = setting(32, above=0, max=4096)
    pad_short: bool = False


@dataclasses.dataclass(frozen=True)
class StreamerConfig:
    endpoint: str = "tcp://127.0.0.1:5555"
    endpoints: tuple[str, ...] = ()
    device: str = ""
    sample_rate: int = setting(0, min=0, max=768_000)
    channels: int = setting(0, min=0, max=64)
    block_seconds: float = setting(0.1, above=0, max=10)
    queue_blocks: int = setting(100, above=0, max=1_000_000)
    send_hwm: int = setting(1000, above=0, max=_MAX_HWM)
    stream_id: str = ""
    status_interval_seconds: float = setting(10.0, above=0, max=_DAY)
    reopen_seconds: float = setting(3.0, above=0, max=_DAY)
    stall_timeout_seconds: float = setting(15.0, above=0, max=3600)
    reconnect_initial_seconds: float = setting(0.5, above=0, max=3600)
    reconnect_max_seconds: float = setting(30.0, above=0, max=_DAY)


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    input_endpoint: str = "tcp://127.0.0.1:5555"
    publish_endpoint: str = "tcp://127.0.0.1:5556"
    window_seconds: float = setting(3.0, above=0, max=60)
    hop_seconds: float = setting(0.5, above=0, max=60)
    ema_seconds: float = setting(10.0, above=0, max=_DAY)
    idle_timeout_seconds: float = setting(30.0, above=0, max=_DAY)
    max_gap_seconds: float = setting(1.0, above=0, max=3600)
    max_batch: int = setting(16, above=0, max=1024)
    max_streams: int = setting(256, above=0, max=100_000)
    max_streams_per_peer: int = setting(128, above=0, max=100_000)
    status_interval_seconds: float = setting(10.0, above=0, max=_DAY)
    publish_hwm: int = setting(1000, above=0, max=_MAX_HWM)
    max_window_age_seconds: float = setting(10.0, min=0, max=_DAY)
    mode: str = setting("exact", choices=("exact", "streaming"))
    #: fnmatch patterns of stream ids served before the others when the worker is behind.
    priority_streams: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ContentConfig:
    """What the worker says each window holds, and dead air (inference.content)."""

    enabled: bool = True
    silence_dbfs: float = setting(-50.0, above=-120, max=-1)
    silence_seconds: float = setting(10.0, above=0, max=_DAY)
    change_seconds: float = setting(4.0, above=0, max=3600)
    #: Add inaSpeechSegmenter's broadcast speech/music network to the speech/music decision.
    network: bool = True
    #: A station file (streamer.stations) whose per-station silence settings apply by stream id.
    stations: str = ""


@dataclasses.dataclass(frozen=True)
class SubscribeConfig:
    endpoints: tuple[str, ...] = ("tcp://127.0.0.1:5556",)


@dataclasses.dataclass(frozen=True)
class RecordConfig:
    retention_days: float = setting(30.0, min=0, max=36_500)
    commit_interval_seconds: float = setting(1.0, above=0, max=3600)
    retention_interval_seconds: float = setting(3600.0, above=0, max=_DAY)
    status_interval_seconds: float = setting(60.0, above=0, max=_DAY)
    synchronous: str = setting("FULL", choices=("NORMAL", "FULL"))


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """How ``python -m tools.report`` cuts the as-run log (monitor.asrun.AsRunSettings)."""

    min_segment_seconds: float = setting(10.0, min=0, max=3600)
    family_hysteresis: float = setting(0.1, min=0, max=0.99)
    title_item_seconds: float = setting(900.0, min=0, max=86400)


@dataclasses.dataclass(frozen=True)
class SecurityConfig:
    curve: str = setting("auto", choices=("auto", "on", "off"))
    server_secret_key: str = ""
    server_public_key: str = ""
    client_secret_key: str = ""
    allowed_clients_dir: str = ""


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    worker_port: int = setting(0, min=0, max=65535)
    streamer_port: int = setting(0, min=0, max=65535)
    bind: str = "127.0.0.1"
    #: Tags whose smoothed probability the worker exports per stream (bounded cardinality).
    stream_tags: tuple[str, ...] = setting(
        ("rock", "pop", "electronic", "Hip-Hop", "jazz", "female vocalists", "male vocalists")
    )


@dataclasses.dataclass(frozen=True)
class WebConfig:
    bind: str = "127.0.0.1:8080"
    token: str = ""
    history_seconds: float = setting(60.0, above=0, max=_DAY)


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    level: str = setting("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    tagging: TaggingConfig = TaggingConfig()
    streamer: StreamerConfig = StreamerConfig()
    inference: InferenceConfig = InferenceConfig()
    content: ContentConfig = ContentConfig()
    subscribe: SubscribeConfig = SubscribeConfig()
    record: RecordConfig = RecordConfig()
    report: ReportConfig = ReportConfig()
    security: SecurityConfig = SecurityConfig()
    metrics: MetricsConfig = MetricsConfig()
    web: WebConfig = WebConfig()
    logging: LoggingConfig = LoggingConfig()

    @property
    def model_cache_dir(self) -> Path:
        return Path(os.path.expanduser(self.model.cache_dir))


def user_config_path() -> Path:
    """``$XDG_CONFIG_HOME/tagstream/config.toml`` (default ``~/.config/...``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "tagstream" / CONFIG_NAME


def config_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The settings file that applies (see the module doc), or ``None`` for the defaults."""
    if path is not None and str(path) != "":
        return Path(path)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    for candidate in (Path.cwd() / CONFIG_NAME, user_config_path()):
        if candidate.is_file():
            return candidate
    return None


def load_config(
    path: str | os.PathLike[str] | None = None, *, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Read the settings that apply (:func:`config_path`) and check every value.

    Parameters
    ----------
    path : path-like or None
        A TOML file; ``None`` looks in the usual places.  Missing keys take the
        built-in defaults.
    overrides : mapping {"section.key": value}
        Values from the command line; ``None`` values are ignored.

    Raises
    ------
    ConfigError
        One line naming the offending key, the expected type and the value.
    """
    found = config_path(path)
    data = read_toml(found) if found is not None else {}
    apply_overrides(data, overrides or {})
    return build(Config, data)


def default_config() -> Config:
    """The built-in defaults, without reading any file."""
    return Config()
