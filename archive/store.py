"""The output of an archive run: a Parquet dataset written in parts, its resume index and errors.

::

    OUT/
      archive.json            model, tag list, hop, padding and windows of every row here
      tags/part-*.parquet     one row per tagged file
      windows/part-*.parquet  one row per window (``windows=True`` only)
      errors/part-*.parquet   one row per file that failed: its reason

Read it with any Parquet reader: ``pandas.read_parquet("OUT/tags")``,
``pyarrow.dataset.dataset("OUT/tags")``, DuckDB ``'OUT/tags/*.parquet'``.

**Rows** (``tags``): ``path`` (absolute), ``size`` (bytes), ``mtime`` (UTC,
nanoseconds), ``duration_s``, ``model``, ``backend``, ``windows`` (how many),
``padded``, ``silent``, then one float32 column per tag, named as the model's
tags (``rock``, ``female vocalists``, ...), in the model's order: the file's
mean probability.  ``windows`` rows have ``path``, ``size``, ``mtime``,
``start_s`` and the tag columns; ``errors`` rows ``path``, ``size``, ``mtime``,
``error`` (the exception's type) and ``reason`` (its one-line message).

**Parts**: rows are buffered and written as one part every ``part_files`` files
or ``part_seconds`` seconds, whichever comes first.  A part is written under a
hidden temporary name (which Parquet readers skip) and renamed into place, so a
part is either whole or absent: a crash, even ``kill -9``, loses at most the
rows not yet written, never leaves half a part, and the next run removes the
temporary file.

**Resume**: a file's key is its path, size and modification time.
:meth:`ArchiveStore.open` reads the keys of every part (``tags`` and
``errors``) into memory (16 bytes and some Python overhead each: about 100 MB
per million files); the engines are given only files not among them, and a key
is never written twice, so a rerun after any interruption completes the
output with every file exactly once.  A file whose size or modification time
changed is tagged again (its old row stays: filter on the newest ``mtime``).
Files in the errors table are not retried unless ``retry_errors`` is set; a
retried file that fails again adds a new error row.

Only one run writes into a folder at a time (a lock on ``OUT/.lock``), and a
run refuses a folder written with another model, tag list, hop, padding or
windows setting: rows of one dataset are always comparable.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from archive.inputs import InputFile
from tagstream.errors import UnavailableError, UsageError

if TYPE_CHECKING:
    import pyarrow as pa

    from model.tagging import FileTags

__all__ = [
    "FIXED_COLUMNS",
    "SETTINGS_FILE",
    "TABLES",
    "ArchiveSettings",
    "ArchiveStore",
    "FileFailure",
    "StoreError",
    "file_key",
    "read_table",
]

logger = logging.getLogger(__name__)

SETTINGS_FILE: Final = "archive.json"
LOCK_FILE: Final = ".lock"
#: The dataset's tables, each a folder of parts.
TABLES: Final = ("tags", "windows", "errors")
#: Columns of the tags table before the tag columns.
FIXED_COLUMNS: Final = (
    "path",
    "size",
    "mtime",
    "duration_s",
    "model",
    "backend",
    "windows",
    "padded",
    "silent",
)
_FORMAT: Final = 1
_TMP_PREFIX: Final = ".part-"


class StoreError(UsageError):
    """The output folder cannot take this run (another run holds it, other settings)."""


@dataclass(frozen=True)
class FileFailure:
    """Why one file was not tagged: a row of the errors table.

    Attributes
    ----------
    error : str
        The exception's type name (``AudioError``, ``TagError``, ``OSError``).
    reason : str
        Its message, one line.
    """

    error: str
    reason: str

    @classmethod
    def of(cls, exc: BaseException) -> FileFailure:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return cls(type(exc).__name__, reason)


@dataclass(frozen=True)
class ArchiveSettings:
    """What makes rows comparable; stored in ``archive.json`` and checked on every run."""

    model: str
    tags: tuple[str, ...]
    hop_seconds: float
    pad: bool
    windows: bool

    def to_json(self) -> dict[str, Any]:
        return {"format": _FORMAT, **asdict(self), "tags": list(self.tags)}


def file_key(path: str, size: int, mtime_ns: int) -> bytes:
    """A file's resume key: 16 bytes of BLAKE2b over its path, size and modification time."""
    text = f"{path}\0{size}\0{mtime_ns}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(text, digest_size=16).digest()


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("part-*.parquet") if p.is_file())


def read_table(out: str | os.PathLike[str], table: str = "tags") -> pa.Table:
    """One table of an archive's output as a ``pyarrow.Table`` (empty when it has no part yet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if table not in TABLES:
        raise UsageError(f"table={table!r} must be one of {', '.join(TABLES)}")
    parts = _parts(Path(out) / table)
    if not parts:
        return pa.table({})
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")


class ArchiveStore:
    """The output folder of one run: resume index, buffered rows, parts written atomically.

    Parameters
    ----------
    out : path-like
        The dataset's folder (created when missing).
    settings : ArchiveSettings
    part_files : int > 0
        Files per part (rows of ``tags`` plus ``errors``).
    part_seconds : float > 0
        Write the rows buffered so far once the oldest is this old.
    retry_errors : bool
        Files in the errors table are tagged again.

    Use as a context manager, or call :meth:`open` and :meth:`close`.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        settings: ArchiveSettings,
        *,
        part_files: int = 1000,
        part_seconds: float = 60.0,
        retry_errors: bool = False,
    ) -> None:
        if part_files <= 0:
            raise UsageError(f"part_files={part_files} must be > 0")
        if not part_seconds > 0:
            raise UsageError(f"part_seconds={part_seconds} must be > 0")
        clash = set(FIXED_COLUMNS) & set(settings.tags)
        if clash:
            raise UsageError(f"the model's tags {sorted(clash)} clash with the output's columns")
        self.out = Path(out)
        self.settings = settings
        self.part_files = part_files
        self.part_seconds = part_seconds
        self.retry_errors = retry_errors
        self._keys: set[bytes] = set()
        self._lock: int | None = None
        self._run = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self._rows: dict[str, list[dict[str, Any]]] = {table: [] for table in TABLES}
        self._buffered_files = 0
        self._oldest: float | None = None
        #: Files written by this run: tagged, failed.
        self.tagged = 0
        self.failed = 0
        #: Files found in the output when opened.
        self.indexed = 0

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> ArchiveStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Lock the folder, check or write its settings, drop temporary parts, read the index.

        Raises
        ------
        StoreError
            Another run holds the folder, or it holds rows of other settings (exit status 2).
        tagstream.errors.UnavailableError
            The folder cannot be created or a part cannot be read (exit status 3).
        """
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UnavailableError(
                "the archive's Parquet output needs pyarrow: pip install 'tagstream[archive]'"
            ) from None
        try:
            for table in TABLES:
                (self.out / table).mkdir(parents=True, exist_ok=True)
            fd = os.open(self.out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UnavailableError(
                f"{self.out}: cannot create the output folder ({exc.strerror or exc})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"{self.out}: another archive run is writing here; wait for it or use another --out"
            ) from None
        self._lock = fd
        try:
            self._check_settings()
            for table in TABLES:
                for tmp in (self.out / table).glob(_TMP_PREFIX + "*"):
                    logger.info("removing unfinished part=%s (an interrupted run's)", tmp)
                    tmp.unlink(missing_ok=True)
            committed = {p.name for p in _parts(self.out / "tags")}
            for orphan in _parts(self.out / "windows"):
                if orphan.name not in committed:
                    logger.info("removing windows part=%s: its tags part was never written", orphan)
                    orphan.unlink()
            self._read_index()
        except BaseException:
            self._unlock()
            raise

    def close(self) -> None:
        """Write the buffered rows and release the folder; safe to call twice."""
        if self._lock is None:
            return
        try:
            self.flush()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        fd, self._lock = self._lock, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _check_settings(self) -> None:
        path = self.out / SETTINGS_FILE
        wanted = self.settings.to_json()
        if path.is_file():
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise StoreError(
                    f"{path}: unreadable ({exc}); is {self.out} an archive output?"
                ) from None
            differing = [k for k in wanted if k != "format" and found.get(k) != wanted[k]]
            if differing:
                names = ", ".join(differing)
                raise StoreError(
                    f"{self.out} holds rows made with other settings ({names}: "
                    f"{', '.join(f'{found.get(k)!r}' for k in differing if k != 'tags')}); "
                    "rerun with the same settings or use another --out"
                )
            return
        if any(_parts(self.out / table) for table in TABLES):
            raise StoreError(f"{self.out} has parts but no {SETTINGS_FILE}; use another --out")
        tmp = path.with_name(f".{SETTINGS_FILE}.tmp")
        tmp.write_text(json.dumps(wanted, indent=2) + "\n")
        os.replace(tmp, path)

    def _read_index(self) -> None:
        import pyarrow.parquet as pq

        tables = ("tags",) if self.retry_errors else ("tags", "errors")
        for table in tables:
            for part in _parts(self.out / table):
                try:
                    columns = pq.read_table(part, columns=["path", "size", "mtime"])
                except Exception as exc:  # pyarrow's ArrowInvalid, OSError: a damaged file
                    raise UnavailableError(
                        f"{part}: cannot read this part ({exc}); move it out of {self.out} "
                        "(its files are tagged again) and rerun"
                    ) from None
                paths = columns.column("path").to_pylist()
                sizes = columns.column("size").to_pylist()
                mtimes = columns.column("mtime").cast("int64").to_pylist()
                for path, size, mtime in zip(paths, sizes, mtimes, strict=True):
                    self._keys.add(file_key(path, size, mtime))
        self.indexed = len(self._keys)
        logger.debug("out=%s indexed files=%d", self.out, self.indexed)

    # -- resume index ---------------------------------------------------------------------

    def __contains__(self, file: InputFile) -> bool:
        return file_key(file.path, file.size, file.mtime_ns) in self._keys

    def pending(self, files: Sequence[InputFile]) -> list[InputFile]:
        """The files not yet in the output, in order."""
        return [f for f in files if f not in self]

    # -- rows -----------------------------------------------------------------------------

    def add(self, file: InputFile, result: FileTags | FileFailure, *, backend: str = "") -> bool:
        """Buffer one file's row(s); write a part when it is due.

        Returns
        -------
        bool
            False when the file is already in the output (nothing is added).
        """
        key = file_key(file.path, file.size, file.mtime_ns)
        if key in self._keys:
            return False
        self._keys.add(key)
        ident = {"path": file.path, "size": file.size, "mtime": file.mtime_ns}
        if isinstance(result, FileFailure):
            self._rows["errors"].append({**ident, "error": result.error, "reason": result.reason})
            self.failed += 1
        else:
            self._rows["tags"].append(
                {
                    **ident,
                    "duration_s": result.duration_s,
                    "model": result.model,
                    "backend": backend,
                    "windows": len(result.windows),
                    "padded": result.padded,
                    "silent": result.silent,
                    "_tags": list(result.tags.values()),
                }
            )
            if self.settings.windows:
                self._rows["windows"].extend(
                    {**ident, "start_s": w.start_s, "_tags": list(w.tags.values())}
                    for w in result.windows
                )
            self.tagged += 1
        self._buffered_files += 1
        now = time.monotonic()
        if self._oldest is None:
            self._oldest = now
        if self._buffered_files >= self.part_files or now - self._oldest >= self.part_seconds:
            self.flush()
        return True

    def flush(self) -> None:
        """Write every buffered row now (one part per table that has rows)."""
        if not self._buffered_files:
            return
        name = f"part-{self._run}-{self._seq:06d}.parquet"
        self._seq += 1
        # The tags part is the commit point of its files: their windows part (same name)
        # is written first, and one left without its tags part is removed by open().
        for table in ("errors", "windows", "tags"):
            rows = self._rows[table]
            if rows:
                self._write_part(table, name, rows)
                rows.clear()
        self._buffered_files = 0
        self._oldest = None

    def _schema(self, table: str) -> pa.Schema:
        import pyarrow as pa

        ident = [
            pa.field("path", pa.string(), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("mtime", pa.timestamp("ns", tz="UTC"), nullable=False),
        ]
        tag_fields = [pa.field(tag, pa.float32()) for tag in self.settings.tags]
        if table == "errors":
            return pa.schema(
                [*ident, pa.field("error", pa.string()), pa.field("reason", pa.string())]
            )
        if table == "windows":
            return pa.schema([*ident, pa.field("start_s", pa.float64()), *tag_fields])
        return pa.schema(
            [
                *ident,
                pa.field("duration_s", pa.float64()),
                pa.field("model", pa.string()),
                pa.field("backend", pa.string()),
                pa.field("windows", pa.int32()),
                pa.field("padded", pa.bool_()),
                pa.field("silent", pa.bool_()),
                *tag_fields,
            ]
        )

    def _columns(self, table: str, rows: list[dict[str, Any]]) -> Iterator[list[Any]]:
        schema = self._schema(table)
        n_fixed = len(schema) - (0 if table == "errors" else len(self.settings.tags))
        for name in schema.names[:n_fixed]:
            yield [row[name] for row in rows]
        if table != "errors":
            for i in range(len(self.settings.tags)):
                yield [row["_tags"][i] for row in rows]

    def _write_part(self, table: str, name: str, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = self._schema(table)
        arrays = [
            pa.array(values, type=field.type)
            for values, field in zip(self._columns(table, rows), schema, strict=True)
        ]
        data = pa.Table.from_arrays(arrays, schema=schema)
        folder = self.out / table
        tmp = folder / f"{_TMP_PREFIX}{name}.tmp"
        try:
            with tmp.open("wb") as f:
                pq.write_table(data, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / name)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UnavailableError(
                f"{folder / name}: cannot write this part ({exc.strerror or exc}); "
                "free space or fix permissions, then rerun (the run resumes)"
            ) from None
        logger.debug("wrote part=%s rows=%d", folder / name, len(rows))
