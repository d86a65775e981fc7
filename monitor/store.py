"""The recording database: its schema, its one writer and its one reader.

``python -m tools.record`` (:mod:`monitor.recorder`) writes it and
``python -m tools.report`` reads it; both go through this module, so the SQL
lives in one place.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`): the table
``updates`` holds one row per tag update (stream, sequence number, wall-clock
times, audio times, model, and the raw and smoothed tag probabilities as
little-endian float32 BLOBs); the tag names are stored once per (model, tag
list) in the table ``tags``, and ``updates.tags_id`` points at the row that
decodes an update's BLOBs.  Since version 2 an update also stores what its
window held (``content``, its probabilities ``p_music``/``p_speech``/``p_silence``
and ``level_dbfs``, and where its sound changes most, ``change_at_s`` and
``change_strength``, with ``change_speech``, the change of speech probability
there; NULL where the worker did not say) and how far behind the stream the
worker was (``shed``, the windows it shed so far, and ``behind_s``), and the table
``events`` holds the worker's events (stream, kind, Unix ``time``, ``at_s`` and
the kind's fields as JSON).  A version-1 file, or a version-2 file written
before the change columns (or before ``change_speech``, ``shed``), is upgraded in place
(ALTER TABLE ADD COLUMN) when opened for writing, and read as it is (the
missing columns read as NULL) for reports; an older program reads a newer
file, ignoring the columns it does not know.

- :func:`open_database` opens (or creates) a database, read-only for reports;
- :func:`write_updates` is the only code that inserts rows, one transaction per batch;
  :class:`RecordWriter` buffers updates and commits them in batches;
- :func:`select_updates` is the one query over a stream and a time range;
  :func:`read_updates` turns its rows back into :class:`protocol.TagUpdate`;
- :func:`write_events` / :func:`read_events` store and read the events;
- :func:`delete_older_than` is the retention pass (updates and events).

Durability
----------
A writing connection runs in WAL mode with ``synchronous=FULL`` by default: a
``kill -9`` never corrupts the file and loses only what was not committed; a
committed transaction also survives a power cut (``NORMAL``: only a process crash).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

import numpy as np

from protocol import Event, TagUpdate
from tagstream.errors import UnavailableError

__all__ = [
    "RECOVERY_SECONDS",
    "SCHEMA_VERSION",
    "SYNCHRONOUS_MODES",
    "UPDATE_COLUMNS",
    "RecordWriter",
    "StoreError",
    "decode_blobs",
    "delete_older_than",
    "free_bytes",
    "open_database",
    "read_events",
    "read_tag_sets",
    "read_updates",
    "select_updates",
    "write_events",
    "write_updates",
]

logger = logging.getLogger(__name__)

#: ``PRAGMA user_version`` of databases this module writes and reads.
SCHEMA_VERSION: Final = 2
#: Older versions this module still reads (and upgrades when writing).
_READABLE_VERSIONS: Final = (1, 2)
#: Columns version 2 added to ``updates``, with their SQL types (the last three came later
#: within version 2: added when missing, NULL when read from a file without them).
_CONTENT_COLUMNS: Final = (
    ("content", "TEXT"),              # "music", "speech", "silence" or NULL
    ("p_music", "REAL"),
    ("p_speech", "REAL"),
    ("p_silence", "REAL"),
    ("level_dbfs", "REAL"),
    ("change_at_s", "REAL"),          # where the window's sound changes most (audio time)
    ("change_strength", "REAL"),
    ("change_speech", "REAL"),        # how much the speech probability changes there
    ("shed", "INTEGER"),              # windows of the stream the worker shed so far (behind)
    ("behind_s", "REAL"),             # the stream's audio the worker had beyond the window
)  # fmt: skip

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
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    event TEXT NOT NULL,              -- silence_start, content_change, now_playing, ...
    time REAL NOT NULL,               -- Unix time the worker noticed it
    at_s REAL NOT NULL,               -- audio time, on the updates' start_s/end_s timeline
    recorded_time REAL NOT NULL,      -- Unix time the recorder received it
    fields_json TEXT NOT NULL         -- the kind's own fields (title, duration_s, ...)
);
CREATE INDEX IF NOT EXISTS events_stream_time ON events (stream, time);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
"""

_INSERT: Final = (
    "INSERT INTO updates (stream, seq, published_time, received_time, capture_time,"
    " recorded_time, start_s, end_s, model, tags_id, gaps, dropped, probabilities, smoothed,"
    " content, p_music, p_speech, p_silence, level_dbfs, change_at_s, change_strength,"
    " change_speech, shed, behind_s)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENT: Final = (
    "INSERT INTO events (stream, event, time, at_s, recorded_time, fields_json)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


#: Rows deleted per retention transaction.
_RETENTION_BATCH_ROWS: Final = 5_000
#: Least seconds between two error lines about failing writes.
_ERROR_LOG_INTERVAL_S: Final = 60.0
#: Seconds of commits without a failure before failing writes count as over.
RECOVERY_SECONDS: Final = 60.0
#: Milliseconds a write waits for another connection's lock before failing.
_BUSY_TIMEOUT_MS: Final = 200
SYNCHRONOUS_MODES: Final = ("NORMAL", "FULL")
#: Probabilities are stored as little-endian float32.
_BLOB_DTYPE: Final = "<f4"


class StoreError(UnavailableError):
    """The database cannot be opened or is not a tagstream recording; the message says which."""


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
    StoreError
        The file is missing (``read_only``), unreadable, not an SQLite
        database, or of another schema version.
    """
    path = Path(path)
    if read_only and not path.is_file():
        raise StoreError(f"{path}: no such database; record one with python -m tools.record")
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous={synchronous!r} must be one of {SYNCHRONOUS_MODES}")
    try:
        if read_only:
            connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
        else:
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open database ({exc})") from None
    try:
        connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, *_READABLE_VERSIONS):
            raise StoreError(
                f"{path}: recording schema version {version} is not supported "
                f"(this program reads version {SCHEMA_VERSION})"
            )
        if read_only:
            names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
            if not {"updates", "tags"} <= names or version not in _READABLE_VERSIONS:
                raise StoreError(f"{path}: not a tagstream recording (no updates/tags tables)")
        else:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("WAL mode unavailable path=%s journal_mode=%s", path, mode)
            connection.execute(f"PRAGMA synchronous = {synchronous}")
            if version != SCHEMA_VERSION or not _schema_complete(connection):
                # Only a new or older file is written to here: an up-to-date one opens
                # without a write, so a recorder starts on a full disk and says so on
                # its first commit instead of failing here.
                connection.executescript(_SCHEMA)
                _add_content_columns(connection)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except StoreError:
        connection.close()
        raise
    except sqlite3.Error as exc:
        connection.close()
        raise StoreError(_open_error(path, exc, writing=not read_only)) from None
    return connection


#: Free bytes below which a failed write is put down to a full disk.
_DISK_FULL_BYTES: Final = 1 << 20
_SQLITE_HEADER: Final = b"SQLite format 3\x00"


def _schema_complete(connection: sqlite3.Connection) -> bool:
    """Whether every table and index of :data:`_SCHEMA` and every content column is there."""
    names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    wanted = {"tags", "updates", "events", "updates_published_time"}
    wanted |= {"updates_stream_published_time", "events_stream_time", "events_time"}
    return wanted <= names and {n for n, _ in _CONTENT_COLUMNS} <= _update_columns(connection)


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes free to this user on the file system that holds ``path`` (None: unknown)."""
    folder = Path(path).resolve().parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _looks_intact(path: Path) -> bool:
    """An SQLite file with the recording's tables, read without writing anything."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
                return False
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            names = {row[0] for row in probe.execute("SELECT name FROM sqlite_master")}
        finally:
            probe.close()
    except (OSError, sqlite3.Error):
        return False
    return {"updates", "tags"} <= names


def _open_error(path: Path, exc: sqlite3.Error, *, writing: bool) -> str:
    """The one line that says why a database could not be opened, and what to do."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    free = free_bytes(path)
    disk_full = primary == sqlite3.SQLITE_FULL or (
        primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN)
        and free is not None
        and free < _DISK_FULL_BYTES
    )
    if writing and disk_full:
        state = (
            "the recording in it is intact"
            if path.is_file() and _looks_intact(path)
            else "nothing was written"
        )
        room = "" if free is None else f", {free} bytes free"
        return (
            f"{path}: cannot record: the disk is full ({exc}{room}); {state}. "
            "Free disk space (or lower record.retention_days) and start again"
        )
    if primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY) and (
        path.is_file() and _looks_intact(path)
    ):
        return (
            f"{path}: cannot {'write' if writing else 'read'} the database ({exc}); "
            "the file itself is a recording: check its folder's permissions and the disk"
        )
    return f"{path}: not a usable recording database ({exc})"


def _update_columns(connection: sqlite3.Connection) -> set[str]:
    return {row[1] for row in connection.execute("PRAGMA table_info(updates)")}


def _add_content_columns(connection: sqlite3.Connection) -> None:
    """Add the missing content columns to ``updates`` in place (its rows get NULL there)."""
    present = _update_columns(connection)
    for name, kind in _CONTENT_COLUMNS:
        if name not in present:
            connection.execute(f"ALTER TABLE updates ADD COLUMN {name} {kind}")


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
    return np.ascontiguousarray(values, dtype=_BLOB_DTYPE).tobytes()


def decode_blobs(blobs: Sequence[bytes], n_tags: int, *, what: str = "probability") -> np.ndarray:
    """Probability BLOBs of one tag set as one array.

    Parameters
    ----------
    blobs : sequence of bytes
        ``probabilities`` or ``smoothed`` values of rows that share a ``tags_id``.
    n_tags : int >= 0
        Tags in that tag set.
    what : str
        Names the BLOBs in the error message (``"smoothed of tag set 3"``).

    Returns
    -------
    np.ndarray [shape=(len(blobs), n_tags), dtype=float32]

    Raises
    ------
    StoreError
        A BLOB is not ``n_tags`` float32 values: the recording is damaged.
    """
    joined = b"".join(blobs)
    if len(joined) != 4 * n_tags * len(blobs):
        raise StoreError(
            f"{what} BLOBs are not {n_tags} float32 values each; the recording is damaged"
        )
    return np.frombuffer(joined, dtype=_BLOB_DTYPE).reshape(len(blobs), n_tags)


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
                    *_content_values(update),
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


def _content_values(update: TagUpdate) -> tuple[str | float | None, ...]:
    p = update.content_probabilities or {}
    return (
        update.content,
        p.get("music"),
        p.get("speech"),
        p.get("silence"),
        update.level_dbfs,
        update.change_at_s,
        update.change_strength,
        update.change_speech,
        int(update.shed),
        update.behind_s,
    )


def write_events(
    connection: sqlite3.Connection,
    events: Iterable[Event],
    *,
    recorded_times: Iterable[float] | None = None,
) -> int:
    """Insert events in one transaction; the only code that writes ``events`` rows.

    Parameters
    ----------
    connection : sqlite3.Connection
    events : iterable of protocol.Event
    recorded_times : iterable of float or None
        Unix time each event reached the recorder; ``None`` uses the event's ``time``.

    Returns
    -------
    int
        Rows inserted.

    Raises
    ------
    sqlite3.Error
        The transaction was rolled back; nothing of this batch is stored.
    """
    events = list(events)
    times = [e.time for e in events] if recorded_times is None else list(recorded_times)
    if len(times) != len(events):
        raise ValueError(f"{len(times)} recorded_times for {len(events)} events")
    if not events:
        return 0
    rows = [
        (
            e.stream,
            e.event,
            float(e.time),
            float(e.at_s),
            float(t),
            json.dumps(dict(e.fields), ensure_ascii=False),
        )
        for e, t in zip(events, times, strict=True)
    ]
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.executemany(_INSERT_EVENT, rows)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error as exc:
                logger.debug("rollback failed error=%r", str(exc))
        raise
    return len(rows)


def read_events(
    connection: sqlite3.Connection,
    *,
    stream: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Iterator[Event]:
    """Yield recorded events (``since <= time < until``) by stream, then time.

    A version-1 recording has none.
    """
    names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    if "events" not in names:
        return
    query = "SELECT stream, event, time, at_s, fields_json FROM events WHERE time >= ? AND time < ?"
    params: list[float | str] = [
        float("-inf") if since is None else since,
        float("inf") if until is None else until,
    ]
    if stream is not None:
        query += " AND stream = ?"
        params.append(stream)
    for row in connection.execute(query + " ORDER BY stream, time, id", params):
        yield Event(row[0], row[1], time=row[2], at_s=row[3], fields=json.loads(row[4]))


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
    if should_stop is None or not should_stop():
        connection.execute("DELETE FROM events WHERE time < ?", (cutoff_time,))
    return deleted


def read_tag_sets(connection: sqlite3.Connection) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Return ``{tags_id: (model, tag names)}`` of every tag set in the database."""
    return {
        int(row[0]): (row[1], tuple(json.loads(row[2])))
        for row in connection.execute("SELECT id, model, tags_json FROM tags")
    }


#: Columns of ``updates`` that :func:`select_updates` may return.
UPDATE_COLUMNS: Final = (
    "id", "stream", "seq", "published_time", "received_time", "capture_time", "recorded_time",
    "start_s", "end_s", "model", "tags_id", "gaps", "dropped", "probabilities", "smoothed",
    "content", "p_music", "p_speech", "p_silence", "level_dbfs", "change_at_s", "change_strength",
    "change_speech", "shed", "behind_s",
)  # fmt: skip


def select_updates(
    connection: sqlite3.Connection,
    columns: Sequence[str],
    *,
    stream: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> sqlite3.Cursor:
    """The one query over recorded updates: ``columns`` of a stream and a time range.

    Parameters
    ----------
    connection : sqlite3.Connection
    columns : sequence of str
        Names from :data:`UPDATE_COLUMNS`, in the order the rows give them.
    stream : str or None
        Only this stream id.
    since, until : float or None
        Unix times: ``since <= published_time < until``.

    Returns
    -------
    sqlite3.Cursor
        Rows ordered by stream, then publication time (then insertion).  Fetch
        them in chunks (``fetchmany``) to bound memory.
    """
    unknown = [c for c in columns if c not in UPDATE_COLUMNS]
    if unknown or not columns:
        raise ValueError(f"columns={list(columns)!r} must name some of {UPDATE_COLUMNS}")
    present = _update_columns(connection)  # a version-1 file has no content columns: NULL
    selected = ", ".join(c if c in present else f"NULL AS {c}" for c in columns)
    query = f"SELECT {selected} FROM updates WHERE published_time >= ? AND published_time < ?"
    params: list[float | str] = [
        float("-inf") if since is None else since,
        float("inf") if until is None else until,
    ]
    if stream is not None:
        query += " AND stream = ?"
        params.append(stream)
    return connection.execute(query + " ORDER BY stream, published_time, id", params)


_TAG_UPDATE_COLUMNS: Final = (
    "stream", "seq", "start_s", "end_s", "tags_id", "probabilities", "smoothed",
    "capture_time", "received_time", "published_time", "gaps", "dropped",
    "content", "p_music", "p_speech", "p_silence", "level_dbfs", "change_at_s", "change_strength",
    "change_speech", "shed", "behind_s",
)  # fmt: skip


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
    rows = select_updates(connection, _TAG_UPDATE_COLUMNS, stream=stream, since=since, until=until)
    for row in rows:
        model, tags = tag_sets[row[4]]
        yield TagUpdate(
            stream=row[0],
            seq=row[1],
            start_s=row[2],
            end_s=row[3],
            model=model,
            tags=tags,
            probabilities=np.frombuffer(row[5], dtype=_BLOB_DTYPE),
            smoothed=np.frombuffer(row[6], dtype=_BLOB_DTYPE),
            capture_time=row[7],
            received_time=row[8],
            published_time=row[9],
            gaps=row[10],
            dropped=row[11],
            content=row[12],
            content_probabilities=(
                None
                if None in row[13:16]
                else {"music": row[13], "speech": row[14], "silence": row[15]}
            ),
            level_dbfs=row[16],
            change_at_s=row[17],
            change_strength=row[18],
            change_speech=row[19],
            shed=row[20] or 0,
            behind_s=row[21],
        )


class RecordWriter:
    """Buffers updates and commits them in batches; a failing batch is dropped and counted.

    Parameters
    ----------
    db_path : path-like
        Created if missing.
    synchronous : {"FULL", "NORMAL"}
    clock : callable
        Monotonic seconds, for the rate of the error lines and the recovery time.

    Attributes
    ----------
    connection : sqlite3.Connection
    written : int
        Updates committed.
    dropped : int
        Updates lost to failing writes.
    failed_commits : int
        Batches that failed.

    Notes
    -----
    While writes fail, one error line every 60 s says so, with how many commits
    failed and how many went through since the previous line (a disk that is
    full except for the space a checkpoint or the retention pass frees now and
    then lets some commits through).  "database writes work again" is said once,
    when commits have gone through for :data:`RECOVERY_SECONDS` without one failing.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db_path = Path(db_path)
        self._clock = clock
        self.connection: sqlite3.Connection | None = open_database(
            self.db_path, synchronous=synchronous
        )
        self.written = 0
        self.dropped = 0
        self.failed_commits = 0
        self._updates: list[TagUpdate] = []
        self._recorded_times: list[float] = []
        self._events: list[tuple[Event, float]] = []
        #: Events committed.
        self.events_written = 0
        self._failing = False
        self._last_error_log = float("-inf")
        #: Since the last error line: commits that failed, and that went through.
        self._failed_since_log = 0
        self._ok_since_log = 0
        #: When commits began to go through again without one failing (None: not yet).
        self._ok_since: float | None = None

    @property
    def pending(self) -> int:
        """Updates and events buffered and not yet committed."""
        return len(self._updates) + len(self._events)

    def add_event(self, event: Event, *, recorded_time: float) -> None:
        """Buffer one event; it is written by the next :meth:`flush`."""
        self._events.append((event, recorded_time))

    def add(self, update: TagUpdate, *, recorded_time: float) -> None:
        """Buffer one update; it is written by the next :meth:`flush`."""
        self._updates.append(update)
        self._recorded_times.append(recorded_time)

    def flush(self) -> int:
        """Commit the buffered updates in one transaction; return how many were committed.

        A database error (disk full, locked, I/O) never escapes: the batch is
        dropped, counted in :attr:`dropped` and logged.
        """
        if self._events and self.connection is not None:
            events, self._events = self._events, []
            try:
                self.events_written += write_events(
                    self.connection, [e for e, _ in events], recorded_times=[t for _, t in events]
                )
            except sqlite3.DatabaseError as exc:
                self._failed(exc, len(events))
            else:
                self._succeeded()
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
        self._succeeded()
        return written

    def _succeeded(self) -> None:
        if not self._failing:
            return
        self._ok_since_log += 1
        now = self._clock()
        if self._ok_since is None:
            self._ok_since = now
        elif now - self._ok_since >= RECOVERY_SECONDS:
            self._failing = False
            self._ok_since = None
            logger.warning(
                "database writes work again path=%s ok_for_s=%.0f total_dropped=%d",
                self.db_path,
                RECOVERY_SECONDS,
                self.dropped,
            )

    def _failed(self, exc: sqlite3.Error, count: int) -> None:
        self.dropped += count
        self.failed_commits += 1
        self._failing = True
        self._ok_since = None
        self._failed_since_log += 1
        now = self._clock()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_S:
            first = self._last_error_log == float("-inf")
            self._last_error_log = now
            free = free_bytes(self.db_path)
            logger.error(
                "cannot write to database path=%s error=%r dropped=%d total_dropped=%d "
                "%sfree_bytes=%s (recording continues; free disk space or fix the file)",
                self.db_path,
                str(exc),
                count,
                self.dropped,
                ""
                if first
                else f"commits_failed={self._failed_since_log} "
                f"commits_ok={self._ok_since_log} since_s={_ERROR_LOG_INTERVAL_S:.0f} ",
                "unknown" if free is None else free,
            )
            self._failed_since_log = self._ok_since_log = 0

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
