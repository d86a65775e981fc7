"""The recorder: a subscription to inference workers, recorded into the store.

Every tag update (with what its window held: content and level) and every
event (silence, content changes, titles, source down/up) is stored.

:class:`Recorder` owns one SUB socket (:func:`monitor.connect`) and one
:class:`monitor.store.RecordWriter`; ``python -m tools.record`` is its command.

Updates are buffered and committed in one transaction every
``commit_interval_seconds`` (1 s), so a ``kill -9`` loses at most the updates
of the last, uncommitted interval and never corrupts the file (the store's WAL
mode).  On :meth:`Recorder.stop` it stops receiving, takes what is already
arriving on its socket (at most ``0.5 s``), commits everything buffered and
returns, within a second.  A failing write (disk full, database locked, I/O
error) is logged as one error line (repeated at most every 60 s while it
lasts, with how many commits failed and went through since the last line); the
batch is dropped and counted, and recording goes on.  "database writes work
again" is logged once, after commits have gone through for a minute without
one failing (:class:`monitor.store.RecordWriter`).  Started on a full disk,
the recorder says that the disk is full and whether the recording in the file
is intact, and exits with status 3.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final, Self

import zmq

from config import RecordConfig
from config.schema import build
from monitor import connect
from monitor.store import RecordWriter
from protocol import Event

if TYPE_CHECKING:
    from protocol.security import SecuritySettings

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)

#: Longest receive wait of the run loop, so that stop() is seen promptly.
_STOP_POLL_S: Final = 0.1
#: On stop: keep receiving while updates keep arriving, up to this long in all ...
_DRAIN_MAX_S: Final = 0.5
#: ... and stop as soon as none arrived for this long.
_DRAIN_QUIET_S: Final = 0.1
#: Commit early when this many updates are buffered.
_MAX_PENDING: Final = 10_000
_SECONDS_PER_DAY: Final = 86_400.0


class Recorder:
    """Subscribe to worker PUB endpoints and record every update into SQLite.

    Parameters
    ----------
    db_path : path-like
        The recording database (created if missing).
    endpoints : str or sequence of str
        Worker PUB endpoints; the SUB socket connects to each.
    settings : config.RecordConfig or None
        Commit interval, retention, ... (``[record]`` in ``config.toml``);
        defaults to ``RecordConfig()``.
    streams : iterable of str or None
        Only these stream ids (``None``: all).
    context : zmq.Context or None
        Defaults to ``zmq.Context.instance()``.
    clock : callable
        Wall clock for ``recorded_time`` and retention (Unix seconds).
    security : protocol.security.SecuritySettings or None
        CURVE keys for the SUB socket, e.g. ``config.SecurityConfig``.

    Raises
    ------
    config.ConfigError
        A setting out of range (``record.commit_interval_seconds: must be ...``).
    monitor.store.StoreError
        The database cannot be opened.
    tagstream.errors.EndpointError
        An endpoint is malformed.

    Notes
    -----
    Lifecycle: :meth:`run` blocks (in any one thread) until :meth:`stop`
    (thread- and signal-safe); it then takes what is still arriving, commits
    and returns.  :meth:`close` commits what is left and closes the socket and
    the database; it is safe to call twice, and from another thread it stops
    :meth:`run` first and waits for it.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        endpoints: str | Sequence[str],
        *,
        settings: RecordConfig | None = None,
        streams: Iterable[str] | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        clock: Callable[[], float] = time.time,
        security: SecuritySettings | None = None,
    ) -> None:
        # the settings file's checks, for settings built in code too
        given = settings if settings is not None else RecordConfig()
        self.settings = build(RecordConfig, dataclasses.asdict(given), prefix="record.")
        self.clock = clock
        self.writer = RecordWriter(db_path, synchronous=self.settings.synchronous)
        try:
            self._subscriber = connect(
                endpoints, streams=streams, context=context, security=security, events=True
            )
        except BaseException:
            self.writer.close()
            raise
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        logger.info(
            "recording path=%s endpoints=%s commit_interval_s=%g retention_days=%g",
            self.writer.db_path,
            ",".join(self._subscriber.endpoints),
            self.settings.commit_interval_seconds,
            self.settings.retention_days,
        )

    @property
    def received(self) -> int:
        """Updates received so far."""
        return self._subscriber.received

    @property
    def events_received(self) -> int:
        """Events received so far."""
        return self._subscriber.events_received

    def stop(self) -> None:
        """Ask :meth:`run` to finish (commit and return); safe from a signal handler."""
        self._stop.set()

    def apply_retention(self) -> int:
        """Delete updates older than ``settings.retention_days``; return how many went."""
        if self.settings.retention_days <= 0:
            return 0
        cutoff = self.clock() - self.settings.retention_days * _SECONDS_PER_DAY
        deleted = self.writer.delete_older_than(cutoff, should_stop=self._stop.is_set)
        if deleted:
            logger.info(
                "retention deleted=%d older_than_days=%g", deleted, self.settings.retention_days
            )
        return deleted

    def _receive(self, timeout_s: float) -> bool:
        message = self._subscriber.receive_message(timeout_s=timeout_s)
        if message is None:
            return False
        if isinstance(message, Event):
            self.writer.add_event(message, recorded_time=self.clock())
        else:
            self.writer.add(message, recorded_time=self.clock())
        return True

    def _log_status(self) -> None:
        logger.info(
            "recorder status received=%d events=%d written=%d dropped=%d pending=%d rejected=%d",
            self.received,
            self.events_received,
            self.writer.written,
            self.writer.dropped,
            self.writer.pending,
            sum(self._subscriber.rejected.values()),
        )

    def run(self) -> None:
        """Record until :meth:`stop`; then drain the socket briefly and commit."""
        if self._closed:
            raise RuntimeError("run() on a closed Recorder")
        settings = self.settings
        self._idle.clear()
        try:
            self.apply_retention()
            now = time.monotonic()
            next_commit = now + settings.commit_interval_seconds
            next_retention = now + settings.retention_interval_seconds
            next_status = now + settings.status_interval_seconds
            while not self._stop.is_set():
                wait_s = min(_STOP_POLL_S, max(next_commit - time.monotonic(), 0.001))
                self._receive(wait_s)
                now = time.monotonic()
                if now >= next_commit or self.writer.pending >= _MAX_PENDING:
                    self.writer.flush()
                    next_commit = now + settings.commit_interval_seconds
                if now >= next_retention:
                    self.apply_retention()
                    next_retention = now + settings.retention_interval_seconds
                if now >= next_status:
                    self._log_status()
                    next_status = now + settings.status_interval_seconds
            # Take what is already on its way, then commit it.
            drain_end = time.monotonic() + _DRAIN_MAX_S
            while time.monotonic() < drain_end and self._receive(_DRAIN_QUIET_S):
                pass
            self.writer.flush()
            self._log_status()
        finally:
            self._idle.set()

    def close(self) -> None:
        """Stop :meth:`run` if it is running elsewhere, commit, close; safe to call twice."""
        if self._closed:
            return
        if not self._idle.is_set():
            self.stop()
            self._idle.wait()
        self._closed = True
        try:
            self.writer.close()
        finally:
            self._subscriber.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
