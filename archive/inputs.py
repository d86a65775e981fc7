"""What to tag: files, folders, glob patterns and manifests, expanded to a list of files.

>>> files = list(expand_inputs(["/music", "extra/*.mp3", "list.csv"]))   # doctest: +SKIP

Each argument is, in this order of checks:

- ``-``: paths on standard input, one per line (given as ``stdin``);
- a **manifest**, an existing file ending in ``.txt`` (one path per line, ``#``
  comments and blank lines skipped) or ``.csv`` (the ``path`` column, else the
  first column); relative paths are relative to the manifest's folder;
- a **folder**: every file below it, recursively, whose extension is one of
  ``extensions`` (case-insensitive), in sorted order;
- an existing **file**: taken whatever its extension;
- a **glob pattern** (``*``, ``?``, ``[``; ``**`` crosses folders): the files it
  matches whose extension is one of ``extensions``.

Paths are made absolute (not resolved through symlinks), so the same file keeps the
same key in the output whatever folder a run starts from; a file named twice is
listed once.  Each file's size and modification time are read once here: with
its path they are its key in the output (:mod:`archive.store`).
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from model.audio import AUDIO_EXTENSIONS
from tagstream.errors import UsageError

__all__ = [
    "MANIFEST_SUFFIXES",
    "InputFile",
    "expand_inputs",
    "expand_paths",
    "parse_extensions",
]

#: A file argument with one of these suffixes is a list of paths, not audio.
MANIFEST_SUFFIXES = (".txt", ".csv")

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, order=True)
class InputFile:
    """One file to tag, as it was when listed.

    Attributes
    ----------
    path : str
        Absolute path.
    size : int >= 0
        Bytes.
    mtime_ns : int
        Modification time, nanoseconds since the epoch.
    """

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def stat(cls, path: str | os.PathLike[str]) -> InputFile:
        """Read ``path``'s size and modification time (``OSError`` when it cannot be)."""
        absolute = os.path.abspath(os.fspath(path))
        st = os.stat(absolute)
        return cls(absolute, int(st.st_size), int(st.st_mtime_ns))


def parse_extensions(text: str) -> tuple[str, ...]:
    """``"wav,.MP3"`` -> ``(".wav", ".mp3")``.

    Raises
    ------
    UsageError
        No extension in ``text``.
    """
    found = tuple(
        "." + part.strip().lower().lstrip(".") for part in text.split(",") if part.strip(" .")
    )
    if not found:
        raise UsageError(f"extensions={text!r} names no extension; give e.g. wav,flac,mp3")
    return found


def _has_extension(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions)


def _walk(folder: str, extensions: tuple[str, ...]) -> Iterator[str]:
    """Files below ``folder`` with one of ``extensions``, sorted, folders walked in sorted order."""
    for root, dirs, files in os.walk(folder, onerror=None, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if _has_extension(name, extensions):
                yield os.path.join(root, name)


def _manifest_paths(path: Path) -> Iterator[str]:
    """The paths a ``.txt`` or ``.csv`` manifest lists, relative ones against its folder."""
    base = path.parent
    try:
        with path.open(newline="", encoding="utf-8") as f:
            if path.suffix.lower() == ".csv":
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None:
                    return
                names = [h.strip().lower() for h in header]
                rows: Iterable[list[str]] = reader
                if "path" in names:
                    column = names.index("path")
                else:  # no header: the first column, and the first row is a path too
                    column = 0
                    rows = [header, *reader]
                entries: Iterable[str] = (row[column] for row in rows if len(row) > column)
            else:
                entries = (line.rstrip("\n") for line in f if not line.lstrip().startswith("#"))
            for entry in entries:
                entry = entry.strip()
                if entry:
                    yield str(base / entry) if not os.path.isabs(entry) else entry
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path}: cannot read this manifest ({exc}); give a UTF-8 text or CSV file"
        ) from None


def _stdin_paths(stdin: TextIO) -> Iterator[str]:
    for line in stdin:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield entry


def _expand_one(
    arg: str,
    extensions: tuple[str, ...],
    stdin: TextIO | None,
    *,
    manifests: bool,
    patterns: bool,
    strict: bool,
) -> Iterator[str]:
    if arg == "-":
        if stdin is None:
            raise UsageError("'-' reads paths from standard input, which this caller does not give")
        yield from _stdin_paths(stdin)
        return
    path = Path(arg)
    if manifests and path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        yield from _manifest_paths(path)
    elif path.is_dir():
        yield from _walk(arg, extensions)
    elif path.exists():
        yield arg
    elif patterns and _GLOB_CHARS & set(arg):
        for match in sorted(glob.iglob(arg, recursive=True)):
            if os.path.isfile(match) and _has_extension(match, extensions):
                yield match
    elif not strict:
        yield arg
    else:
        raise UsageError(f"{arg}: no such file, folder or matching pattern")


def expand_paths(
    args: Iterable[str],
    *,
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
    stdin: TextIO | None = None,
    manifests: bool = True,
    patterns: bool = True,
    strict: bool = True,
    unique: bool = True,
) -> Iterator[str]:
    """Expand command-line inputs into file paths as given (folders joined).

    Parameters
    ----------
    args : iterable of str
        Files, folders, glob patterns, manifests or ``-`` (see the module doc).
    extensions : tuple of str
        Lower-case suffixes with the dot that folders and patterns keep.
    stdin : text stream or None
        Read for ``-``.
    manifests, patterns : bool
        Read ``.txt``/``.csv`` files as manifests; expand glob patterns.
    strict : bool
        A path that does not exist is an error; with False it is yielded as it is
        (for a caller that reports missing files per file).
    unique : bool
        Yield each file once (compared as absolute paths); False keeps repeats.

    Raises
    ------
    UsageError
        An argument that is neither an existing path nor a pattern (``strict``), or
        an unreadable manifest.
    """
    seen: set[str] = set()
    for arg in args:
        expanded = _expand_one(
            arg, extensions, stdin, manifests=manifests, patterns=patterns, strict=strict
        )
        for path in expanded:
            if not unique:
                yield path
                continue
            absolute = os.path.abspath(path)
            if absolute not in seen:
                seen.add(absolute)
                yield path


def expand_inputs(
    args: Iterable[str],
    *,
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
    stdin: TextIO | None = None,
) -> Iterator[InputFile | tuple[str, OSError]]:
    """Expand command-line inputs into the files to tag, each once.

    Parameters
    ----------
    args : iterable of str
        Files, folders, glob patterns, manifests or ``-`` (see the module doc).
    extensions : tuple of str
        Lower-case suffixes with the dot that folders and patterns keep.
    stdin : text stream or None
        Read for ``-``.

    Yields
    ------
    InputFile, or (path, OSError)
        A listed file that cannot be read (gone, no permission) comes as the
        error, for the caller's errors table.

    Raises
    ------
    UsageError
        An argument that is neither an existing path nor a pattern, or an
        unreadable manifest.
    """
    for path in expand_paths(args, extensions=extensions, stdin=stdin):
        absolute = os.path.abspath(path)
        try:
            yield InputFile.stat(absolute)
        except OSError as exc:
            yield absolute, exc
