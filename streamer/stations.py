"""Many stations in one streamer process: ``python -m streamer --stations stations.toml``.

A *station file* lists the stations to follow, one ``[[station]]`` table each::

    [[station]]
    id = "jazz-fm"                                 # the stream id on the wire
    url = "http://radio.example:8000/jazz.mp3"     # or: device = "hw:1"
    stall_timeout_seconds = 20                     # optional, per station
    silence_dbfs = -60                             # optional, read by the worker

:func:`load_stations` reads and checks the whole file before anything starts, the
way :func:`config.load_config` checks ``config.toml``: unknown keys, wrong types,
values out of range, a missing or repeated id, a station with neither or both of
``url`` and ``device`` fail with one line that names the station and the key
(:class:`config.ConfigError`, exit status 2).  A station's options take their
ranges and their defaults from the settings they override (``[streamer]`` for
the reader, ``[content]`` for the worker's silence settings), so a value that
``config.toml`` refuses is refused here too.

:class:`Stations` runs one :class:`StationRunner` per station, each in its own
thread with its own source (:class:`streamer.network.NetworkSource` or a sound
device), its own reconnect loop, its own :class:`streamer.core.Streamer` (own
socket, own counters and status line) and its own worker endpoint when
``streamer.endpoints`` names several (:func:`streamer.routing.endpoint_for`).
One station failing never stops another: a source that cannot be made (a
station down at start-up, a device not plugged in) or a streamer that fails is
retried by that station alone, with its own exponential backoff.

The worker reads the same file for the per-station silence settings
(``[content] stations``; :mod:`inference.content`): they are analysis settings,
and a worker that restarts keeps them without any streamer resending them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import zmq

import protocol
from config import Config, ConfigError, ContentConfig, StreamerConfig, coerce_setting
from config.schema import check_value, read_toml
from streamer.core import Source, Streamer, StreamerStats
from streamer.routing import endpoint_for
from tagstream.errors import TagstreamError, UnavailableError, UsageError

if TYPE_CHECKING:
    from config import SecurityConfig

__all__ = [
    "STATION_OPTIONS",
    "Station",
    "StationRunner",
    "Stations",
    "load_stations",
]

logger = logging.getLogger(__name__)

#: A station's options -> (the settings section whose field gives its type, range and default,
#: and which kind of station it applies to: "url", "device" or "any").
STATION_OPTIONS: Final[Mapping[str, tuple[type, str]]] = {
    "stall_timeout_seconds": (StreamerConfig, "url"),
    "reconnect_initial_seconds": (StreamerConfig, "url"),
    "reconnect_max_seconds": (StreamerConfig, "url"),
    "sample_rate": (StreamerConfig, "any"),
    "channels": (StreamerConfig, "device"),
    "reopen_seconds": (StreamerConfig, "device"),
    "silence_dbfs": (ContentConfig, "any"),
    "silence_seconds": (ContentConfig, "any"),
}
_KEYS: Final = ("id", "url", "device", *STATION_OPTIONS)
#: Longest wait before a station whose source cannot be made (or whose streamer failed)
#: is tried again; the first wait is its ``reconnect_initial_seconds``.
_RETRY_MAX_S: Final = 60.0
#: A station that streamed this long before failing starts its backoff afresh.
_STABLE_AFTER_S: Final = 30.0


@dataclasses.dataclass(frozen=True)
class Station:
    """One checked ``[[station]]`` of a station file, its options resolved.

    Attributes
    ----------
    id : str
        The stream id (unique in the file).
    url : str
        The network stream; ``""`` for a device station.
    device : str or None
        The input device (``""`` = the default input); ``None`` for a URL station.
    stall_timeout_seconds, reconnect_initial_seconds, reconnect_max_seconds : float > 0
        The URL reader's stall timeout and reconnect backoff.
    sample_rate : int >= 0
        Rate sent to the worker (0: the model's 16 kHz for URLs, the device's own rate).
    channels : int >= 0
        Device channels captured (downmixed to mono); 0 = 1.
    reopen_seconds : float > 0
        Seconds between attempts to reopen a device that disappeared.
    silence_dbfs : float
        The worker's silence threshold for this station, dBFS.
    silence_seconds : float > 0
        The worker's dead-air duration for this station.
    """

    id: str
    url: str
    device: str | None
    stall_timeout_seconds: float
    reconnect_initial_seconds: float
    reconnect_max_seconds: float
    sample_rate: int
    channels: int
    reopen_seconds: float
    silence_dbfs: float
    silence_seconds: float

    @property
    def kind(self) -> str:
        """``"url"`` or ``"device"``."""
        return "device" if self.device is not None else "url"


def _field(cls: type, name: str) -> dataclasses.Field[Any]:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def load_stations(path: str | os.PathLike[str], config: Config | None = None) -> list[Station]:
    """Read and check a station file; options not given take ``config``'s values.

    Parameters
    ----------
    path : path-like
        The TOML station file.
    config : Config or None
        The settings the defaults come from (``None``: the built-in defaults).

    Raises
    ------
    config.ConfigError
        One line naming the file, the station and the key, and what to write instead.
    """
    config = config or Config()
    path = Path(path)
    data = read_toml(path)
    where = path.name
    for key in data:
        if key != "station":
            raise ConfigError(
                f"{where}: {key}: unknown; a station file holds [[station]] tables only "
                "(see deploy/stations.example.toml)"
            )
    tables = data.get("station")
    if not tables:
        raise ConfigError(
            f"{where}: no stations; add a [[station]] table with an id and a url or device "
            "per station (see deploy/stations.example.toml)"
        )
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{where}: station: write each station as a [[station]] table")
    stations: list[Station] = []
    seen: dict[str, int] = {}
    for number, table in enumerate(tables, 1):
        station = _station(table, number, where, config)
        if station.id in seen:
            raise ConfigError(
                f'{where}: station "{station.id}" is listed twice (stations {seen[station.id]} '
                f"and {number}); give each station its own id"
            )
        seen[station.id] = number
        stations.append(station)
    return stations


def _station(table: Mapping[str, Any], number: int, where: str, config: Config) -> Station:
    raw_id = table.get("id")
    name = f"station {number}" if not isinstance(raw_id, str) else f'station "{raw_id}"'
    for key in table:
        if key not in _KEYS:
            raise ConfigError(
                f"{where}: {name}: {key}: unknown setting; a station has " + ", ".join(_KEYS)
            )
    if raw_id is None:
        raise ConfigError(f'{where}: {name}: id missing; give it one, e.g. id = "radio-1"')
    station_id = coerce_setting(f"{where}: {name}: id", raw_id, str)
    try:
        protocol.check_stream_id(station_id)
    except protocol.ProtocolError as exc:
        raise ConfigError(f"{where}: {name}: id: {exc}") from None
    has_url, has_device = "url" in table, "device" in table
    if has_url == has_device:
        what = "both url and device" if has_url else "neither url nor device"
        raise ConfigError(
            f'{where}: {name}: has {what}; give one: url = "http://host:8000/live.mp3" '
            'or device = "hw:1"'
        )
    kind = "url" if has_url else "device"
    value = coerce_setting(f"{where}: {name}: {kind}", table[kind], str)
    if kind == "url":
        parts = urllib.parse.urlsplit(value)
        if not parts.scheme or not (parts.netloc or parts.path) or len(parts.scheme) < 2:
            raise ConfigError(
                f"{where}: {name}: url: {value!r} is not a URL; "
                "give e.g. http://radio.example:8000/live.mp3"
            )
    options: dict[str, Any] = {}
    for option, (section, applies) in STATION_OPTIONS.items():
        default = getattr(config.content if section is ContentConfig else config.streamer, option)
        if option not in table:
            options[option] = default
            continue
        if applies not in ("any", kind):
            raise ConfigError(
                f"{where}: {name}: {option}: applies to {applies} stations only; remove it"
            )
        field = _field(section, option)
        key = f"{where}: {name}: {option}"
        options[option] = coerce_setting(key, table[option], type(field.default))
        check_value(key, options[option], field.metadata)
    return Station(
        id=station_id,
        url=value if kind == "url" else "",
        device=value if kind == "device" else None,
        **options,
    )


class StationRunner:
    """One station: its source, its streamer and its own retry loop, in one thread.

    Parameters
    ----------
    station : Station
    settings : StreamerConfig
        ``[streamer]``: block length, send queue, status interval.
    endpoint : str
        The worker input endpoint this station's audio goes to.
    context : zmq.Context
        Shared by all stations' sockets (the caller terminates it).
    security : SecurityConfig or None
        CURVE keys.

    Notes
    -----
    :meth:`run` returns when :meth:`stop` is called, or when a static stream (a file
    over HTTP, an HLS VOD) has been read to its end.  Everything else is retried:
    a source that cannot be made waits ``reconnect_initial_seconds`` doubling up to
    60 s; a network source reconnects by itself (:class:`streamer.network.NetworkSource`).
    """

    def __init__(
        self,
        station: Station,
        *,
        settings: StreamerConfig,
        endpoint: str,
        context: zmq.Context[zmq.Socket[bytes]],
        security: SecurityConfig | None = None,
    ) -> None:
        self.station = station
        self.settings = settings
        self.endpoint = endpoint
        self.context = context
        self.security = security
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._streamer: Streamer | None = None
        self._last: StreamerStats | None = None
        #: Sources that could not be made, and streamers that failed (both retried).
        self.open_failures = 0
        self.failures = 0
        self.ended = False
        #: A usage error (a bad endpoint or key setting): retrying cannot help.
        self.fatal: UsageError | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to return (thread-safe)."""
        self._stop.set()
        with self._lock:
            if self._streamer is not None:
                self._streamer.stop()

    def stats(self) -> StreamerStats | None:
        """This station's counters: the running streamer's, else the last one's."""
        streamer = self._streamer
        return streamer.stats() if streamer is not None else self._last

    def run(self) -> None:
        """Follow the station until :meth:`stop` (or its static stream ends)."""
        station = self.station
        backoff_s = station.reconnect_initial_seconds
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                source = self._open_source()
            except UsageError as exc:
                self.fatal = exc
                return
            except TagstreamError as exc:
                self.open_failures += 1
                logger.warning(
                    "station unavailable stream=%s error=%s retry_in_s=%.1f",
                    station.id,
                    exc,
                    backoff_s,
                )
            else:
                ended = self._stream(source)
                if ended or self._stop.is_set():
                    return
                if time.monotonic() - started >= _STABLE_AFTER_S:
                    backoff_s = station.reconnect_initial_seconds
            if self._stop.wait(backoff_s):
                return
            backoff_s = min(backoff_s * 2, max(_RETRY_MAX_S, station.reconnect_initial_seconds))

    def _stream(self, source: Source) -> bool:
        """Run one streamer on ``source``; whether the station is done (a static end)."""
        station = self.station
        try:
            streamer = Streamer(
                source,
                endpoint=self.endpoint,
                stream_id=station.id,
                send_hwm=self.settings.send_hwm,
                status_interval_s=self.settings.status_interval_seconds,
                context=self.context,
                security=self.security,
            )
        except BaseException:
            source.close()
            raise
        with self._lock:
            self._streamer = streamer
            if self._stop.is_set():
                streamer.stop()
        try:
            streamer.run()
        except UsageError as exc:  # the endpoint or the keys: the same for every retry
            self.fatal = exc
            return True
        except TagstreamError as exc:
            self.failures += 1
            logger.error("station failed stream=%s error=%s; retrying", station.id, exc)
            return False
        except Exception:  # one station's bug must not end the others
            self.failures += 1
            logger.exception("station failed stream=%s; retrying", station.id)
            return False
        finally:
            with self._lock:
                self._last = streamer.stats()
                self._streamer = None
        if self._stop.is_set():
            return True
        if not source.live:
            self.ended = True
            logger.info("station ended stream=%s (its stream is static)", station.id)
            return True
        logger.warning("station source ended stream=%s; restarting it", station.id)
        return False

    def _open_source(self) -> Source:
        station = self.station
        block_seconds = self.settings.block_seconds
        if station.device is not None:
            from streamer.capture import open_device

            return open_device(
                station.device,
                sample_rate=station.sample_rate,
                channels=station.channels,
                block_seconds=block_seconds,
                queue_blocks=self.settings.queue_blocks,
                retry_seconds=station.reopen_seconds,
            )
        from streamer.network import NetworkSource

        options: dict[str, Any] = {
            "sample_rate": station.sample_rate or 16000,
            "block_seconds": block_seconds,
            "stall_timeout_s": station.stall_timeout_seconds,
            "backoff_initial_s": station.reconnect_initial_seconds,
            "backoff_max_s": station.reconnect_max_seconds,
        }
        try:
            return NetworkSource(station.url, **options)  # asks whether it is live
        except UnavailableError as exc:
            if shutil.which("ffmpeg") is None:
                raise
            # Down at start-up: taken as live, so its own reconnect loop retries it.
            logger.warning(
                "station not answering stream=%s error=%s; following it as a live stream",
                station.id,
                exc,
            )
            return NetworkSource(station.url, live=True, **options)


class Stations:
    """All stations of a station file, each followed by its own :class:`StationRunner`.

    Parameters
    ----------
    stations : sequence of Station
        From :func:`load_stations`.
    config : Config
        ``[streamer]`` (endpoint or scale-out endpoints, block length, send queue) and
        ``[security]``.

    Raises
    ------
    tagstream.errors.UnavailableError
        A URL station needs ffmpeg and it is not installed (exit status 3).
    config.ConfigError
        ``streamer.endpoints`` is invalid.
    """

    def __init__(self, stations: Sequence[Station], config: Config) -> None:
        if any(s.kind == "url" for s in stations) and shutil.which("ffmpeg") is None:
            raise UnavailableError(
                "ffmpeg not found: network stations are decoded by FFmpeg; "
                "install it (apt-get install ffmpeg)"
            )
        settings = config.streamer
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.runners: list[StationRunner] = []
        for station in stations:
            endpoint = settings.endpoint
            if settings.endpoints:
                try:
                    endpoint = endpoint_for(station.id, settings.endpoints)
                except ValueError as exc:
                    self.context.term()
                    raise ConfigError(f"streamer.endpoints: {exc}") from None
            self.runners.append(
                StationRunner(
                    station,
                    settings=settings,
                    endpoint=endpoint,
                    context=self.context,
                    security=config.security,
                )
            )
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def stop(self) -> None:
        """Stop every station (thread- and signal-safe)."""
        self._stop.set()
        for runner in self.runners:
            runner.stop()

    def start(self) -> None:
        """Start one thread per station."""
        for runner in self.runners:
            thread = threading.Thread(
                target=runner.run, name=f"station-{runner.station.id}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        logger.info("following stations=%d", len(self.runners))

    def stats(self) -> dict[str, StreamerStats | None]:
        """Each station's counters, by stream id."""
        return {runner.station.id: runner.stats() for runner in self.runners}

    def run(self) -> None:
        """Start the stations and wait until :meth:`stop` or every station has ended.

        Raises
        ------
        tagstream.errors.UsageError
            A station met a usage error that no retry can mend (a bad endpoint, a
            missing CURVE key): every station is stopped and the first such error raised.
        """
        self.start()
        try:
            while not self._stop.wait(0.2):
                fatal = next((r.fatal for r in self.runners if r.fatal is not None), None)
                if fatal is not None:
                    raise fatal
                if not any(thread.is_alive() for thread in self._threads):
                    logger.info("every station has ended")
                    break
        finally:
            self.close()

    def close(self, *, timeout_s: float = 5.0) -> None:
        """Stop the stations and wait for their threads (at most ``timeout_s`` in all)."""
        self.stop()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:  # a source still connecting; the process exits without it
            logger.warning(
                "stations still stopping at exit count=%d first=%s", len(stuck), stuck[0]
            )
            return
        if not self.context.closed:
            self.context.term()
