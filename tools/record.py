"""Record every tag update from inference workers into an SQLite database.

    python -m tools.record --db PATH [--endpoint E ...] [--config PATH]
                           [--retention-days N] [--commit-interval S] [--traceback]

The recorder subscribes to every worker PUB endpoint (default: config.toml
``[subscribe] endpoints``) and appends each update to the table ``updates``:
stream, sequence number, wall-clock times, audio times, model and the raw and
smoothed tag probabilities as little-endian float32 BLOBs.  The tag names are
stored once per (model, tag list) in the table ``tags``; ``updates.tags_id``
points at the row that decodes an update's BLOBs.  :func:`read_updates` turns
rows back into :class:`protocol.TagUpdate`; ``python -m tools.report`` summarises them.

Durability
----------
The database runs in WAL mode with ``synchronous=FULL``.  Updates are buffered
and committed in one transaction every ``commit_interval_seconds`` (1 s), so a
``kill -9`` loses at most the updates of the last, uncommitted interval and
never corrupts the file: a committed WAL transaction is in the operating
system's file cache, which survives the death of the process.  ``NORMAL``
would already give that; ``FULL`` also fsyncs the WAL at every commit, so the
committed rows survive a power cut or kernel crash too.  At one commit per
second that fsync costs nothing noticeable.

SIGTERM or Ctrl-C: the recorder stops receiving, takes what is already
arriving on its socket (at most ``0.5 s``), commits everything buffered, closes
the database and exits 0, within a second.

A failing write (disk full, database locked, I/O error) is logged as one error
line (repeated at most every 60 s while it lasts); the batch is dropped and
counted, and recording goes on.

Exit status (:class:`ExitStatus`): 0 stopped by SIGTERM or Ctrl-C, 1 unexpected
error, 2 usage or config error, or a database that cannot be opened.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, Self, TextIO

import numpy as np
import zmq

from config import ConfigError, SecurityConfig, load_config
from protocol import TagUpdate
from protocol.subscriber import Subscriber

__all__ = [
    "SCHEMA_VERSION",
    "ExitStatus",
    "RecordError",
    "RecordSettings",
    "RecordWriter",
    "Recorder",
    "delete_older_than",
    "main",
    "open_database",
    "read_tag_sets",
    "read_updates",
    "write_updates",
]

logger = logging.getLogger(__name__)

#: ``PRAGMA user_version`` of databases this module writes and reads.
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tags (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    tags_json TEXT NOT NULL,          -- JSON list of tag names, in probability order
    UNIQUE (model, tags_json)
);
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    published_time REAL NOT NULL,     -- Unix time the worker published the update
    received_time REAL NOT NULL,      -- Unix time the worker received the window's last sample
    capture_time REAL NOT NULL,       -- Unix time that sample was captured
    recorded_time REAL NOT NULL,      -- Unix time the recorder received the update
    start_s REAL NOT NULL,            -- audio time of the window, seconds into the stream
    end_s REAL NOT NULL,
    model TEXT NOT NULL,
    tags_id INTEGER NOT NULL REFERENCES tags (id),
    gaps INTEGER NOT NULL,
    dropped INTEGER NOT NULL,
    probabilities BLOB NOT NULL,      -- little-endian float32, one per tag
    smoothed BLOB NOT NULL            -- little-endian float32, one per tag
);
CREATE INDEX IF NOT EXISTS updates_published_time ON updates (published_time);
CREATE INDEX IF NOT EXISTS updates_stream_published_time ON updates (stream, published_time);
"""

_INSERT: Final = (
    "INSERT INTO updates (stream, seq, published_time, received_time, capture_time,"
    " recorded_time, start_s, end_s, model, tags_id, gaps, dropped, probabilities, smoothed)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: Longest receive wait of the run loop, so that stop() is seen promptly.
_STOP_POLL_S: Final = 0.1
#: On stop: keep receiving while updates keep arriving, up to this long in all ...
_DRAIN_MAX_S: Final = 0.5
#: ... and stop as soon as none arrived for this long.
_DRAIN_QUIET_S: Final = 0.1
#: Commit early when this many updates are buffered.
_MAX_PENDING: Final = 10_000
#: Rows deleted per retention transaction.
_RETENTION_BATCH_ROWS: Final = 5_000
#: Least seconds between two error lines about failing writes.
_ERROR_LOG_INTERVAL_S: Final = 60.0
#: Milliseconds a write waits for another connection's lock before failing.
_BUSY_TIMEOUT_MS: Final = 200
_SECONDS_PER_DAY: Final = 86_400.0
_SYNCHRONOUS_MODES: Final = ("NORMAL", "FULL")


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2


class RecordError(RuntimeError):
    """The database cannot be opened or is not a tagstream recording; the message says which."""


@dataclasses.dataclass(frozen=True)
class RecordSettings:
    """Settings of :class:`Recorder`: the ``[record]`` section of config.toml.

    Attributes
    ----------
    retention_days : float >= 0
        Delete updates published more than this many days ago; 0 keeps everything.
    commit_interval_seconds : float > 0
        Seconds between commits: a ``kill -9`` loses at most this much.
    retention_interval_seconds : float > 0
        Seconds between retention passes (one also runs at start).
    status_interval_seconds : float > 0
        Seconds between one-line status logs.
    synchronous : {"FULL", "NORMAL"}
        SQLite ``synchronous`` in WAL mode; both keep committed rows across a
        ``kill -9``, only FULL across a power cut.
    """

    retention_days: float = 30.0
    commit_interval_seconds: float = 1.0
    retention_interval_seconds: float = 3600.0
    status_interval_seconds: float = 60.0
    synchronous: str = "FULL"

    def __post_init__(self) -> None:
        if not self.retention_days >= 0:
            raise ConfigError(f"retention_days={self.retention_days} must be 0 or more")
        for name in (
            "commit_interval_seconds",
            "retention_interval_seconds",
            "status_interval_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be greater than 0")
        if self.synchronous not in _SYNCHRONOUS_MODES:
            raise ConfigError(
                f"synchronous={self.synchronous!r} must be one of {', '.join(_SYNCHRONOUS_MODES)}"
            )


# ---------------------------------------------------------------------------
# Database: the one home of the schema, its writer and its reader.
# ---------------------------------------------------------------------------


def open_database(
    path: str | os.PathLike[str], *, read_only: bool = False, synchronous: str = "FULL"
) -> sqlite3.Connection:
    """Open (and, unless ``read_only``, create) a recording database.

    Parameters
    ----------
    path : path-like
        The SQLite file.
    read_only : bool
        Open an existing file without writing to it (for reports); the schema
        must already be there.
    synchronous : {"FULL", "NORMAL"}
        ``PRAGMA synchronous`` of a writing connection.

    Returns
    -------
    sqlite3.Connection
        In autocommit mode (``isolation_level=None``): callers open their own
        transactions.  Usable from one thread at a time.

    Raises
    ------
    RecordError
        The file is missing (``read_only``), unreadable, not an SQLite
        database, or of another schema version.
    """
    path = Path(path)
    if read_only and not path.is_file():
        raise RecordError(f"{path}: no such database; record one with python -m tools.record")
    if synchronous not in _SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous={synchronous!r} must be one of {_SYNCHRONOUS_MODES}")
    try:
        if read_only:
            connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
        else:
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise RecordError(f"{path}: cannot open database ({exc})") from None
    try:
        connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise RecordError(
                f"{path}: recording schema version {version} is not supported "
                f"(this program reads version {SCHEMA_VERSION})"
            )
        if read_only:
            names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
            if not {"updates", "tags"} <= names or version != SCHEMA_VERSION:
                raise RecordError(f"{path}: not a tagstream recording (no updates/tags tables)")
        else:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("WAL mode unavailable path=%s journal_mode=%s", path, mode)
            connection.execute(f"PRAGMA synchronous = {synchronous}")
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except RecordError:
        connection.close()
        raise
    except sqlite3.Error as exc:
        connection.close()
        raise RecordError(f"{path}: not a usable recording database ({exc})") from None
    return connection


def _tags_id(connection: sqlite3.Connection, model: str, tags: tuple[str, ...]) -> int:
    tags_json = json.dumps(list(tags), ensure_ascii=False)
    connection.execute(
        "INSERT OR IGNORE INTO tags (model, tags_json) VALUES (?, ?)", (model, tags_json)
    )
    row = connection.execute(
        "SELECT id FROM tags WHERE model = ? AND tags_json = ?", (model, tags_json)
    ).fetchone()
    return int(row[0])


def _float32_blob(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def write_updates(
    connection: sqlite3.Connection,
    updates: Iterable[TagUpdate],
    *,
    recorded_times: Iterable[float] | None = None,
) -> int:
    """Insert updates in one transaction; the only code that writes ``updates`` rows.

    Parameters
    ----------
    connection : sqlite3.Connection
        From :func:`open_database` (autocommit mode).
    updates : iterable of TagUpdate
    recorded_times : iterable of float or None
        Unix time each update reached the recorder; ``None`` uses each
        update's ``published_time``.

    Returns
    -------
    int
        Rows inserted.

    Raises
    ------
    sqlite3.Error
        The transaction was rolled back; nothing of this batch is stored.
    """
    updates = list(updates)
    times = [u.published_time for u in updates] if recorded_times is None else list(recorded_times)
    if len(times) != len(updates):
        raise ValueError(f"{len(times)} recorded_times for {len(updates)} updates")
    if not updates:
        return 0
    connection.execute("BEGIN IMMEDIATE")
    try:
        tag_set_ids: dict[tuple[str, tuple[str, ...]], int] = {}
        rows = []
        for update, recorded_time in zip(updates, times, strict=True):
            key = (update.model, update.tags)
            if key not in tag_set_ids:
                tag_set_ids[key] = _tags_id(connection, *key)
            rows.append(
                (
                    update.stream,
                    int(update.seq),
                    float(update.published_time),
                    float(update.received_time),
                    float(update.capture_time),
                    float(recorded_time),
                    float(update.start_s),
                    float(update.end_s),
                    update.model,
                    tag_set_ids[key],
                    int(update.gaps),
                    int(update.dropped),
                    _float32_blob(update.probabilities),
                    _float32_blob(update.smoothed),
                )
            )
        connection.executemany(_INSERT, rows)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error as exc:  # SQLite may have rolled back already
                logger.debug("rollback failed error=%r", str(exc))
        raise
    return len(rows)


def delete_older_than(
    connection: sqlite3.Connection,
    cutoff_time: float,
    *,
    batch_rows: int = _RETENTION_BATCH_ROWS,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Delete updates published before ``cutoff_time``, ``batch_rows`` per transaction.

    Parameters
    ----------
    connection : sqlite3.Connection
    cutoff_time : float
        Unix time; rows with ``published_time < cutoff_time`` go.
    batch_rows : int > 0
        Rows per transaction, so that a large first pass never holds the
        write lock for long.
    should_stop : callable or None
        Checked between batches; returning True ends the pass early.

    Returns
    -------
    int
        Rows deleted.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows={batch_rows} must be at least 1")
    deleted = 0
    while should_stop is None or not should_stop():
        cursor = connection.execute(
            "DELETE FROM updates WHERE id IN (SELECT id FROM updates"
            " WHERE published_time < ? LIMIT ?)",
            (cutoff_time, batch_rows),
        )
        deleted += cursor.rowcount
        if cursor.rowcount < batch_rows:
            break
    return deleted


def read_tag_sets(connection: sqlite3.Connection) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Return ``{tags_id: (model, tag names)}`` of every tag set in the database."""
    return {
        int(row[0]): (row[1], tuple(json.loads(row[2])))
        for row in connection.execute("SELECT id, model, tags_json FROM tags")
    }


def read_updates(
    connection: sqlite3.Connection,
    *,
    stream: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Iterator[TagUpdate]:
    """Yield recorded updates as :class:`TagUpdate`, by stream then publication time.

    Parameters
    ----------
    connection : sqlite3.Connection
    stream : str or None
        Only this stream id.
    since, until : float or None
        Unix times: ``since <= published_time < until``.
    """
    tag_sets = read_tag_sets(connection)
    query = (
        "SELECT stream, seq, start_s, end_s, tags_id, probabilities, smoothed, capture_time,"
        " received_time, published_time, gaps, dropped FROM updates"
        " WHERE published_time >= ? AND published_time < ?"
    )
    params: list[Any] = [
        float("-inf") if since is None else since,
        float("inf") if until is None else until,
    ]
    if stream is not None:
        query += " AND stream = ?"
        params.append(stream)
    for row in connection.execute(query + " ORDER BY stream, published_time, id", params):
        model, tags = tag_sets[row[4]]
        yield TagUpdate(
            stream=row[0],
            seq=row[1],
            start_s=row[2],
            end_s=row[3],
            model=model,
            tags=tags,
            probabilities=np.frombuffer(row[5], dtype="<f4"),
            smoothed=np.frombuffer(row[6], dtype="<f4"),
            capture_time=row[7],
            received_time=row[8],
            published_time=row[9],
            gaps=row[10],
            dropped=row[11],
        )


class RecordWriter:
    """Buffers updates and commits them in batches; a failing batch is dropped and counted.

    Parameters
    ----------
    db_path : path-like
        Created if missing.
    synchronous : {"FULL", "NORMAL"}

    Attributes
    ----------
    connection : sqlite3.Connection
    written : int
        Updates committed.
    dropped : int
        Updates lost to failing writes.
    failed_commits : int
        Batches that failed.
    """

    def __init__(self, db_path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        self.db_path = Path(db_path)
        self.connection: sqlite3.Connection | None = open_database(
            self.db_path, synchronous=synchronous
        )
        self.written = 0
        self.dropped = 0
        self.failed_commits = 0
        self._updates: list[TagUpdate] = []
        self._recorded_times: list[float] = []
        self._failing = False
        self._last_error_log = float("-inf")

    @property
    def pending(self) -> int:
        """Updates buffered and not yet committed."""
        return len(self._updates)

    def add(self, update: TagUpdate, *, recorded_time: float) -> None:
        """Buffer one update; it is written by the next :meth:`flush`."""
        self._updates.append(update)
        self._recorded_times.append(recorded_time)

    def flush(self) -> int:
        """Commit the buffered updates in one transaction; return how many were committed.

        A database error (disk full, locked, I/O) never escapes: the batch is
        dropped, counted in :attr:`dropped` and logged.
        """
        if not self._updates:
            return 0
        if self.connection is None:
            raise RuntimeError("flush() on a closed RecordWriter")
        updates, times = self._updates, self._recorded_times
        self._updates, self._recorded_times = [], []
        try:
            written = write_updates(self.connection, updates, recorded_times=times)
        except sqlite3.DatabaseError as exc:
            self._failed(exc, len(updates))
            return 0
        self.written += written
        if self._failing:
            self._failing = False
            logger.warning(
                "database writes work again path=%s total_dropped=%d", self.db_path, self.dropped
            )
        return written

    def _failed(self, exc: sqlite3.Error, count: int) -> None:
        self.dropped += count
        self.failed_commits += 1
        self._failing = True
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            logger.error(
                "cannot write to database path=%s error=%r dropped=%d total_dropped=%d "
                "(recording continues; free disk space or fix the file)",
                self.db_path,
                str(exc),
                count,
                self.dropped,
            )

    def delete_older_than(
        self, cutoff_time: float, *, should_stop: Callable[[], bool] | None = None
    ) -> int:
        """Retention pass (:func:`delete_older_than`); a database error is logged, not raised."""
        if self.connection is None:
            raise RuntimeError("delete_older_than() on a closed RecordWriter")
        try:
            return delete_older_than(self.connection, cutoff_time, should_stop=should_stop)
        except sqlite3.DatabaseError as exc:
            logger.error("retention pass failed path=%s error=%r", self.db_path, str(exc))
            return 0

    def close(self) -> None:
        """Commit what is buffered and close the database; safe to call twice."""
        if self.connection is None:
            return
        try:
            self.flush()
        finally:
            try:
                self.connection.close()
            except sqlite3.Error as exc:
                logger.error("closing database failed path=%s error=%r", self.db_path, str(exc))
            self.connection = None


# ---------------------------------------------------------------------------
# The recorder: one SUB socket and one writer, driven by run() in one thread.
# ---------------------------------------------------------------------------


class Recorder:
    """Subscribe to worker PUB endpoints and record every update into SQLite.

    Parameters
    ----------
    db_path : path-like
        The recording database (created if missing).
    endpoints : str or sequence of str
        Worker PUB endpoints; the SUB socket connects to each.
    settings : RecordSettings or None
        Commit interval, retention, ...; defaults to ``RecordSettings()``.
    streams : iterable of str or None
        Only these stream ids (``None``: all).
    context : zmq.Context or None
        Defaults to ``zmq.Context.instance()``.
    clock : callable
        Wall clock for ``recorded_time`` and retention (Unix seconds).
    security : SecurityConfig or None
        CURVE keys for the SUB socket (:mod:`protocol.security`).

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
        settings: RecordSettings | None = None,
        streams: Iterable[str] | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        clock: Callable[[], float] = time.time,
        security: SecurityConfig | None = None,
    ) -> None:
        self.settings = settings if settings is not None else RecordSettings()
        self.clock = clock
        self.writer = RecordWriter(db_path, synchronous=self.settings.synchronous)
        try:
            self._subscriber = Subscriber(
                endpoints, streams=streams, context=context, security=security
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
        update = self._subscriber.receive(timeout_s=timeout_s)
        if update is None:
            return False
        self.writer.add(update, recorded_time=self.clock())
        return True

    def _log_status(self) -> None:
        logger.info(
            "recorder status received=%d written=%d dropped=%d pending=%d rejected=%d",
            self.received,
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.record",
        description="Record every tag update from tagstream workers into an SQLite database.",
        epilog="Endpoints default to config.toml [subscribe] endpoints. Stop with Ctrl-C or "
        "SIGTERM: buffered updates are committed first.",
    )
    parser.add_argument("--db", required=True, metavar="PATH", help="SQLite database to write")
    parser.add_argument(
        "--endpoint", action="append", metavar="E", help="worker PUB endpoint (repeatable)"
    )
    parser.add_argument("--config", metavar="PATH", help="config file (default: config.toml)")
    defaults = RecordSettings()
    parser.add_argument(
        "--retention-days",
        type=float,
        metavar="N",
        help=f"delete updates older than N days; 0 keeps all ({defaults.retention_days:g})",
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        metavar="S",
        help="seconds between commits: at most this much is lost to kill -9 "
        f"({defaults.commit_interval_seconds:g})",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback on errors"
    )
    return parser


def record_overrides(args: argparse.Namespace) -> dict[str, float | None]:
    """The ``record.*`` settings given on the command line (``None``: not given)."""
    return {
        "record.retention_days": args.retention_days,
        "record.commit_interval_seconds": args.commit_interval,
    }


def main(
    argv: Sequence[str] | None = None,
    *,
    stderr: TextIO | None = None,
) -> int:
    """Run the recorder CLI; return the exit status (:class:`ExitStatus`)."""
    err = stderr if stderr is not None else sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    recorder: Recorder | None = None

    def handler(signum: int, frame: FrameType | None) -> None:
        if recorder is not None:
            recorder.stop()
        else:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        cfg = load_config(
            args.config,
            overrides={"subscribe.endpoints": args.endpoint, **record_overrides(args)},
        )
        settings = RecordSettings(**dataclasses.asdict(cfg.record))
        logging.basicConfig(
            level=cfg.logging.level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=err,
        )
        recorder = Recorder(
            args.db, cfg.subscribe.endpoints, settings=settings, security=cfg.security
        )
        try:
            recorder.run()
        finally:
            recorder.close()
        return int(ExitStatus.OK)
    except KeyboardInterrupt:
        return int(ExitStatus.OK)
    except (ConfigError, RecordError) as exc:
        if args.traceback:
            traceback.print_exc(file=err)
        print(f"error: {exc}", file=err)
        return int(ExitStatus.USAGE)
    except Exception as exc:  # the CLI's one error boundary
        if args.traceback:
            traceback.print_exc(file=err)
        print(f"error: {type(exc).__name__}: {exc} (rerun with --traceback for details)", file=err)
        return int(ExitStatus.ERROR)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


if __name__ == "__main__":
    sys.exit(main())
