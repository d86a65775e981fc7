"""A recording's summary: top tags per hour and per day, and dominant-tag segments.

:func:`build_report` reads a database of :mod:`monitor.store` (written by
``python -m tools.record``) read-only; for every hour and every day of the
chosen range it gives each tag's

* **share**: the fraction of updates whose dominant tag (the argmax of the
  smoothed probabilities) is that tag, and
* **mean**: the mean of its raw probability over those updates,

and the **segments**: runs of consecutive updates of one stream with the same
dominant tag (a silence longer than ``gap_seconds``, 60 s, also ends a run).

Genre statistics count **music only**: an update whose window the worker called
``speech`` or ``silence`` (its ``content``, recorded since schema version 2) is
left out of every share and mean, and such updates make segments of their own
(``content`` ``speech`` or ``silence``, no tag).  Updates without a content
(older recordings and workers) count as music, as before.

:func:`format_report` gives a table; :func:`write_outputs` writes into a folder:

* ``report.png``: stacked area of the top K tags' mean probability over time;
* ``hourly.csv``: one row per hour with updates, the hour's most frequent
  dominant tag and, for each top K tag, ``share:<tag>`` and ``mean:<tag>``
  (plus ``share:other``);
* ``segments.csv``: ``stream, start, end, duration_s, tag, updates,
  audio_start_s, audio_end_s, content``;
* with an as-run log (:mod:`monitor.asrun`): ``asrun.csv`` (one row per item
  played), ``dead_air.csv`` and a second panel in ``report.png``;
  :func:`format_asrun` gives its table.

Times are the workers' ``published_time``, shown in the local time zone
(or another ``tz``).  :func:`parse_time` reads an ISO date or time
(``2024-06-01``, ``2024-06-01T18:00``, with or without an offset; without one
it is local time) or a time relative to now (``-24h``, ``-7d``, ``-30m``).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as dt
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np

from monitor.asrun import AsRun, write_asrun_csv, write_dead_air_csv
from monitor.store import StoreError, decode_blobs, open_database, read_tag_sets, select_updates
from tagstream.errors import UnavailableError

__all__ = [
    "ASRUN_CSV_NAME",
    "DEAD_AIR_CSV_NAME",
    "HOURLY_CSV_NAME",
    "PNG_NAME",
    "SEGMENTS_CSV_NAME",
    "ReportError",
    "Segment",
    "TagReport",
    "build_report",
    "format_asrun",
    "format_report",
    "local_timezone",
    "parse_time",
    "plot_report",
    "write_hourly_csv",
    "write_outputs",
    "write_segments_csv",
]

logger = logging.getLogger(__name__)


#: Rows fetched from SQLite at a time: memory stays bounded by the number of minutes.
_CHUNK_ROWS: Final = 20_000
#: Plot bin widths to choose from, in seconds; the smallest giving at most _PLOT_MAX_BINS.
_PLOT_BIN_SECONDS: Final = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_PLOT_MAX_BINS: Final = 400
#: Segments printed on stdout (the most recent); segments.csv has all of them.
_PRINTED_SEGMENTS: Final = 20
_RELATIVE_TIME = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
PNG_NAME: Final = "report.png"
HOURLY_CSV_NAME: Final = "hourly.csv"
SEGMENTS_CSV_NAME: Final = "segments.csv"
ASRUN_CSV_NAME: Final = "asrun.csv"
DEAD_AIR_CSV_NAME: Final = "dead_air.csv"
#: As-run rows printed on stdout (the most recent); asrun.csv has all of them.
_PRINTED_ASRUN_ROWS: Final = 40
#: Colours of the as-run lane in report.png for rows that are not music.
_KIND_COLOURS: Final = {
    "speech": "#ffd92f",
    "silence": "#d0d0d0",
    "outage": "#202020",
    "untagged": "#ff00ff",  # audio the worker was too far behind to tag (not a tab10 colour)
}
#: tab10 colours for the families, grey (silence) and yellow-ish (speech) left out.
_FAMILY_COLOURS: Final = (0, 2, 3, 4, 5, 8, 9, 1, 6)
_SEGMENT_COLUMNS: Final = (
    "stream", "start", "end", "duration_s", "tag", "updates", "audio_start_s", "audio_end_s",
    "content",
)  # fmt: skip


class ReportError(UnavailableError):
    """The recording holds no update in the range asked for."""


@dataclasses.dataclass(frozen=True)
class Segment:
    """A run of consecutive updates of one stream with the same dominant tag, or of talk
    or silence.

    Attributes
    ----------
    stream : str
    start_time, end_time : float
        Unix ``published_time`` of the first and the last update of the run.
    tag : str
        The dominant tag (argmax of the smoothed probabilities); ``""`` for a
        speech or silence segment.
    updates : int > 0
    audio_start_s, audio_end_s : float
        Audio time: ``start_s`` of the first update, ``end_s`` of the last.
    content : {"music", "speech", "silence"}
        What the run's windows held.
    """

    stream: str
    start_time: float
    end_time: float
    tag: str
    updates: int
    audio_start_s: float
    audio_end_s: float
    content: str = "music"

    @property
    def label(self) -> str:
        """The tag of a music segment, ``[speech]`` or ``[silence]`` otherwise."""
        return self.tag if self.content == "music" else f"[{self.content}]"

    @property
    def duration_s(self) -> float:
        return self.end_time - self.start_time


@dataclasses.dataclass(frozen=True)
class _Bins:
    """Per-bin sums: bins [shape=(B,)], updates (B,), dominant/probability/present (B, T)."""

    starts: np.ndarray
    updates: np.ndarray
    dominant: np.ndarray
    probability_sum: np.ndarray
    present: np.ndarray

    def share(self) -> np.ndarray:
        return self.dominant / np.maximum(self.updates, 1)[:, None]

    def mean(self) -> np.ndarray:
        return self.probability_sum / np.maximum(self.present, 1)

    def regroup(self, keys: np.ndarray) -> _Bins:
        """Sum bins with equal ``keys`` [shape=(B,)]; the new starts are the unique keys."""
        unique, inverse = np.unique(keys, return_inverse=True)
        sums = []
        for values in (self.updates, self.dominant, self.probability_sum, self.present):
            total = np.zeros((len(unique), *values.shape[1:]), dtype=values.dtype)
            np.add.at(total, inverse, values)
            sums.append(total)
        return _Bins(unique, *sums)


@dataclasses.dataclass(frozen=True)
class TagReport:
    """Tag shares per hour and per day, and segments, of a recording.

    Attributes
    ----------
    db_path : Path
    stream : str or None
        The stream filter (``None``: all streams together).
    since, until : float or None
        The requested range (Unix times).
    tz : datetime.tzinfo
        The zone of the hour and day boundaries and of the printed times.
    tags : tuple of str [len T]
        Every tag seen, best first: by overall share, then mean probability.
    streams : tuple of str
        Streams in the range.
    updates : int
        Updates in the range.
    first_time, last_time : float
        Unix times of the first and the last update.
    hour_starts : np.ndarray [shape=(H,), dtype=float64]
        Unix start of each hour holding updates (empty hours are left out).
    hour_updates : np.ndarray [shape=(H,), dtype=int64]
    hour_share, hour_mean : np.ndarray [shape=(H, T)]
        Share of updates with each tag dominant, mean raw probability of each tag.
    days : tuple of datetime.date [len D]
    day_updates : np.ndarray [shape=(D,)]
    day_share, day_mean : np.ndarray [shape=(D, T)]
    total_share, total_mean : np.ndarray [shape=(T,)]
    minute_starts : np.ndarray [shape=(M,)]
        Unix start of each minute holding updates (the plot's raw material).
    minute_updates : np.ndarray [shape=(M,)]
    minute_probability_sum, minute_present : np.ndarray [shape=(M, T)]
    segments : tuple of Segment
        In stream order, then time.
    content_updates : dict {str: int}
        Updates in the range by content (``music`` includes those without one);
        ``updates`` and every share and mean count the music ones only.
    """

    db_path: Path
    stream: str | None
    since: float | None
    until: float | None
    tz: dt.tzinfo
    tags: tuple[str, ...]
    streams: tuple[str, ...]
    updates: int
    first_time: float
    last_time: float
    hour_starts: np.ndarray
    hour_updates: np.ndarray
    hour_share: np.ndarray
    hour_mean: np.ndarray
    days: tuple[dt.date, ...]
    day_updates: np.ndarray
    day_share: np.ndarray
    day_mean: np.ndarray
    total_share: np.ndarray
    total_mean: np.ndarray
    minute_starts: np.ndarray
    minute_updates: np.ndarray
    minute_probability_sum: np.ndarray
    minute_present: np.ndarray
    segments: tuple[Segment, ...]
    content_updates: dict[str, int] = dataclasses.field(default_factory=dict)

    def datetime(self, unix_time: float) -> dt.datetime:
        """``unix_time`` as an aware datetime in :attr:`tz`."""
        return dt.datetime.fromtimestamp(unix_time, tz=self.tz)

    def top_tags(self, k: int) -> tuple[str, ...]:
        """The ``k`` best tags (by overall share, then mean probability)."""
        return self.tags[:k]


# ---------------------------------------------------------------------------
# Time arguments
# ---------------------------------------------------------------------------


def local_timezone() -> dt.tzinfo:
    """This machine's time zone (its current UTC offset)."""
    tz = dt.datetime.now().astimezone().tzinfo
    assert tz is not None
    return tz


def parse_time(text: str, *, now: float | None = None) -> float:
    """Parse an ISO date/time or a relative time (``-24h``) into a Unix time.

    Parameters
    ----------
    text : str
        ``2024-06-01``, ``2024-06-01T18:00``, ``2024-06-01T18:00+02:00``
        (without an offset: local time) or ``-N`` followed by ``s``, ``m``,
        ``h``, ``d`` or ``w`` (seconds, minutes, hours, days, weeks before ``now``).
    now : float or None
        Unix time relative times count from; defaults to ``time.time()``.

    Raises
    ------
    ValueError
        One line naming the value and the accepted forms.
    """
    text = text.strip()
    match = _RELATIVE_TIME.match(text)
    if match:
        base = time.time() if now is None else now
        return base - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO time (2024-06-01T18:00) or a relative one (-24h, -7d)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # local time
    return parsed.timestamp()


# ---------------------------------------------------------------------------
# Building the report
# ---------------------------------------------------------------------------


#: The columns the report reads, in the order ``_build`` unpacks them.
_REPORT_COLUMNS: Final = (
    "stream", "published_time", "start_s", "end_s", "tags_id", "probabilities", "smoothed",
    "content",
)  # fmt: skip
#: ``dominant`` codes of updates that are not music: their own segments, no tag.
_CODE_OF_CONTENT: Final = {"speech": -1, "silence": -2}
_CONTENT_OF_CODE: Final = {code: name for name, code in _CODE_OF_CONTENT.items()}


class _SegmentBuilder:
    """Cuts the (stream, time)-ordered updates into segments, chunk by chunk."""

    def __init__(self, tags: Sequence[str], gap_seconds: float) -> None:
        self.tags = tags
        self.gap_seconds = gap_seconds
        self.segments: list[Segment] = []
        self._open: Segment | None = None

    def add(
        self,
        streams: np.ndarray,
        times: np.ndarray,
        dominant: np.ndarray,
        start_s: np.ndarray,
        end_s: np.ndarray,
    ) -> None:
        breaks = np.flatnonzero(
            (streams[1:] != streams[:-1])
            | (dominant[1:] != dominant[:-1])
            | (np.diff(times) > self.gap_seconds)
        )
        starts = np.concatenate([[0], breaks + 1])
        ends = np.concatenate([breaks, [len(times) - 1]])
        for first, last in zip(starts.tolist(), ends.tolist(), strict=True):
            code = int(dominant[first])
            piece = Segment(
                stream=str(streams[first]),
                start_time=float(times[first]),
                end_time=float(times[last]),
                tag=self.tags[code] if code >= 0 else "",
                content=_CONTENT_OF_CODE.get(code, "music"),
                updates=last - first + 1,
                audio_start_s=float(start_s[first]),
                audio_end_s=float(end_s[last]),
            )
            previous = self._open
            if (
                previous is not None
                and previous.stream == piece.stream
                and previous.tag == piece.tag
                and previous.content == piece.content
                and piece.start_time - previous.end_time <= self.gap_seconds
            ):
                piece = dataclasses.replace(
                    previous,
                    end_time=piece.end_time,
                    updates=previous.updates + piece.updates,
                    audio_end_s=piece.audio_end_s,
                )
            elif previous is not None:
                self.segments.append(previous)
            self._open = piece

    def finish(self) -> list[Segment]:
        if self._open is not None:
            self.segments.append(self._open)
            self._open = None
        return self.segments


def build_report(
    db_path: str | os.PathLike[str],
    *,
    stream: str | None = None,
    since: float | None = None,
    until: float | None = None,
    tz: dt.tzinfo | None = None,
    gap_seconds: float = 60.0,
    chunk_rows: int = _CHUNK_ROWS,
) -> TagReport:
    """Read a recording and compute tag shares per hour and day, and segments.

    Parameters
    ----------
    db_path : path-like
        A database written by ``python -m tools.record``; opened read-only.
    stream : str or None
        Only this stream; ``None`` counts every stream together (segments
        stay per stream).
    since, until : float or None
        Unix times: ``since <= published_time < until``.
    tz : datetime.tzinfo or None
        Zone of the hour and day boundaries; ``None`` is the local zone.
    gap_seconds : float > 0
        A stream silent for longer than this ends its segment.
    chunk_rows : int > 0
        Rows read at a time; memory grows with the minutes in the range, not the rows.

    Returns
    -------
    TagReport

    Raises
    ------
    monitor.store.StoreError
        Missing, unreadable or damaged database.
    ReportError
        No update in the range.
    """
    if not gap_seconds > 0:
        raise ValueError(f"gap_seconds={gap_seconds} must be greater than 0")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows} must be at least 1")
    db_path = Path(db_path)
    tz = tz if tz is not None else local_timezone()
    connection = open_database(db_path, read_only=True)
    try:
        return _build(connection, db_path, stream, since, until, tz, gap_seconds, chunk_rows)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{db_path}: cannot read the recording ({exc})") from None
    finally:
        connection.close()


def _build(
    connection: sqlite3.Connection,
    db_path: Path,
    stream: str | None,
    since: float | None,
    until: float | None,
    tz: dt.tzinfo,
    gap_seconds: float,
    chunk_rows: int,
) -> TagReport:
    tag_sets = read_tag_sets(connection)
    # One tag list for every tag set: the union, in order of first appearance.
    all_tags: dict[str, int] = {}
    for _, names in tag_sets.values():
        for name in names:
            all_tags.setdefault(name, len(all_tags))
    n_all = len(all_tags)
    to_global = {
        tags_id: np.array([all_tags[name] for name in names], dtype=np.int64)
        for tags_id, (_, names) in tag_sets.items()
    }
    cursor = select_updates(connection, _REPORT_COLUMNS, stream=stream, since=since, until=until)
    segments = _SegmentBuilder(list(all_tags), gap_seconds)
    minute_parts: list[_Bins] = []
    streams_seen: set[str] = set()
    total = 0
    content_updates: collections.Counter[str] = collections.Counter()
    first_time, last_time = float("inf"), float("-inf")
    while rows := cursor.fetchmany(chunk_rows):
        total += len(rows)
        columns = list(zip(*rows, strict=True))
        streams = np.array(columns[0], dtype=object)
        times = np.array(columns[1], dtype=np.float64)
        start_s = np.array(columns[2], dtype=np.float64)
        end_s = np.array(columns[3], dtype=np.float64)
        tags_ids = np.array(columns[4], dtype=np.int64)
        streams_seen.update(columns[0])
        first_time = min(first_time, float(times.min()))
        last_time = max(last_time, float(times.max()))
        dominant = np.empty(len(rows), dtype=np.int64)
        contents = [c if c in _CODE_OF_CONTENT else "music" for c in columns[7]]
        content_updates.update(contents)
        for i, name in enumerate(contents):
            if name != "music":
                dominant[i] = _CODE_OF_CONTENT[name]
        is_music = np.array([name == "music" for name in contents], dtype=bool)
        minutes = np.floor(times / 60.0).astype(np.int64) * 60
        for tags_id in np.unique(tags_ids).tolist():
            if tags_id not in tag_sets:
                raise StoreError(f"{db_path}: updates refer to tag set {tags_id}, which is missing")
            n_tags = len(tag_sets[tags_id][1])
            index = np.flatnonzero((tags_ids == tags_id) & is_music)
            if not len(index):
                continue
            probabilities = decode_blobs(
                [columns[5][i] for i in index], n_tags, what=f"probabilities of tag set {tags_id}"
            )
            smoothed = decode_blobs(
                [columns[6][i] for i in index], n_tags, what=f"smoothed of tag set {tags_id}"
            )
            columns_global = to_global[tags_id]
            dominant[index] = columns_global[np.argmax(smoothed, axis=1)]
            unique, inverse = np.unique(minutes[index], return_inverse=True)
            counts = np.bincount(inverse, minlength=len(unique)).astype(np.int64)
            dominant_counts = np.zeros((len(unique), n_all), dtype=np.int64)
            np.add.at(dominant_counts, (inverse, dominant[index]), 1)
            probability_sum = np.zeros((len(unique), n_all), dtype=np.float64)
            local_sum = np.zeros((len(unique), n_tags), dtype=np.float64)
            np.add.at(local_sum, inverse, probabilities)
            probability_sum[:, columns_global] = local_sum
            present = np.zeros((len(unique), n_all), dtype=np.int64)
            present[:, columns_global] = counts[:, None]
            minute_parts.append(
                _Bins(unique.astype(np.float64), counts, dominant_counts, probability_sum, present)
            )
        segments.add(streams, times, dominant, start_s, end_s)
    if total == 0:
        where = f" of stream {stream!r}" if stream is not None else ""
        span = _describe_range(since, until, tz)
        raise ReportError(f"{db_path}: no updates{where} {span}")
    if not minute_parts:  # talk and silence only: no tag statistics, segments still
        minute = np.array([np.floor(first_time / 60.0) * 60.0])
        minute_parts.append(
            _Bins(
                minute,
                np.zeros(1, dtype=np.int64),
                np.zeros((1, n_all), dtype=np.int64),
                np.zeros((1, n_all), dtype=np.float64),
                np.zeros((1, n_all), dtype=np.int64),
            )
        )

    joined = _Bins(
        np.concatenate([part.starts for part in minute_parts]),
        np.concatenate([part.updates for part in minute_parts]),
        np.concatenate([part.dominant for part in minute_parts]),
        np.concatenate([part.probability_sum for part in minute_parts]),
        np.concatenate([part.present for part in minute_parts]),
    )
    minute_bins = joined.regroup(joined.starts)
    minute_times = [dt.datetime.fromtimestamp(t, tz=tz) for t in minute_bins.starts.tolist()]
    hour_keys = np.array(
        [m.replace(minute=0, second=0, microsecond=0).timestamp() for m in minute_times]
    )
    hour_bins = minute_bins.regroup(hour_keys)
    day_ordinals = np.array([m.date().toordinal() for m in minute_times])
    day_bins = minute_bins.regroup(day_ordinals)

    overall = minute_bins.regroup(np.zeros(len(minute_bins.starts)))
    seen = np.flatnonzero(overall.present[0] > 0)
    share, mean = overall.share()[0], overall.mean()[0]
    order = sorted(seen.tolist(), key=lambda i: (-share[i], -mean[i], i))
    tag_names = list(all_tags)
    return TagReport(
        db_path=db_path,
        stream=stream,
        since=since,
        until=until,
        tz=tz,
        tags=tuple(tag_names[i] for i in order),
        streams=tuple(sorted(streams_seen)),
        updates=content_updates["music"],
        first_time=first_time,
        last_time=last_time,
        hour_starts=hour_bins.starts,
        hour_updates=hour_bins.updates,
        hour_share=hour_bins.share()[:, order],
        hour_mean=hour_bins.mean()[:, order],
        days=tuple(dt.date.fromordinal(int(d)) for d in day_bins.starts),
        day_updates=day_bins.updates,
        day_share=day_bins.share()[:, order],
        day_mean=day_bins.mean()[:, order],
        total_share=share[order],
        total_mean=mean[order],
        minute_starts=minute_bins.starts,
        minute_updates=minute_bins.updates,
        minute_probability_sum=minute_bins.probability_sum[:, order],
        minute_present=minute_bins.present[:, order],
        segments=tuple(segments.finish()),
        content_updates={name: content_updates[name] for name in ("music", "speech", "silence")},
    )


def _describe_range(since: float | None, until: float | None, tz: dt.tzinfo) -> str:
    def show(t: float) -> str:
        return dt.datetime.fromtimestamp(t, tz=tz).isoformat(timespec="seconds")

    if since is None and until is None:
        return "in the database"
    if until is None:
        assert since is not None
        return f"since {show(since)}"
    if since is None:
        return f"before {show(until)}"
    return f"between {show(since)} and {show(until)}"


# ---------------------------------------------------------------------------
# Output: table, CSV, plot
# ---------------------------------------------------------------------------


def _format_time(report: TagReport, unix_time: float, *, timespec: str = "seconds") -> str:
    return report.datetime(unix_time).isoformat(timespec=timespec)


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, left: Sequence[int] = (0,)
) -> list[str]:
    """Aligned columns: those in ``left`` flush left, the others (numbers) flush right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _share_cell(share: float, mean: float) -> str:
    return f"{100 * share:5.1f}% {mean:.2f}"


def format_report(report: TagReport, *, top_k: int = 5) -> str:
    """A readable multi-line summary: overall top tags, per day, per hour, recent segments.

    Parameters
    ----------
    report : TagReport
    top_k : int > 0
        Tags shown per row; every cell is ``share% mean``.
    """
    k = min(top_k, len(report.tags))
    top = report.top_tags(k)
    offset = report.datetime(report.first_time).strftime("%z")
    lines = [
        f"tagstream report  db={report.db_path}  stream={report.stream or 'all'}  "
        f"streams={len(report.streams)}  updates={report.updates}",
        f"from {_format_time(report, report.first_time)} to "
        f"{_format_time(report, report.last_time)}",
    ]
    if report.content_updates:
        every = max(sum(report.content_updates.values()), 1)
        lines.append(
            "content: "
            + "  ".join(
                f"{name} {100 * count / every:.1f}% ({count})"
                for name, count in report.content_updates.items()
            )
            + "; tag statistics count music updates only"
        )
    lines += [
        "",
        f"Top {k} tags: share of updates where the tag is dominant (smoothed argmax), "
        "mean probability",
    ]
    lines += _table(
        ["tag", "share", "mean"],
        [
            [tag, f"{100 * report.total_share[i]:.1f}%", f"{report.total_mean[i]:.3f}"]
            for i, tag in enumerate(top)
        ],
    )
    cells = list(top)
    lines += ["", "Per day (share% mean)"]
    lines += _table(
        ["day", "updates", *cells],
        [
            [
                day.isoformat(),
                str(int(report.day_updates[d])),
                *(_share_cell(report.day_share[d, i], report.day_mean[d, i]) for i in range(k)),
            ]
            for d, day in enumerate(report.days)
        ],
    )
    lines += ["", f"Per hour (UTC{offset[:3]}:{offset[3:]}; share% mean)"]
    lines += _table(
        ["hour", "updates", *cells],
        [
            [
                report.datetime(start).strftime("%Y-%m-%d %H:%M"),
                str(int(report.hour_updates[h])),
                *(_share_cell(report.hour_share[h, i], report.hour_mean[h, i]) for i in range(k)),
            ]
            for h, start in enumerate(report.hour_starts.tolist())
        ],
    )
    shown = report.segments[-_PRINTED_SEGMENTS:]
    lines += [
        "",
        f"Segments (dominant tag runs; [speech], [silence]): {len(report.segments)}"
        + (f"; the last {len(shown)}" if len(shown) < len(report.segments) else ""),
    ]
    lines += _table(
        ["stream", "start", "end", "duration", "updates", "tag"],
        [
            [
                segment.stream,
                report.datetime(segment.start_time).strftime("%Y-%m-%d %H:%M:%S"),
                report.datetime(segment.end_time).strftime("%H:%M:%S"),
                f"{segment.duration_s:.0f} s",
                str(segment.updates),
                segment.label,
            ]
            for segment in shown
        ],
        left=(0, 5),
    )
    return "\n".join(lines) + "\n"


def _write_csv(
    path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[object]]
) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_hourly_csv(report: TagReport, path: str | os.PathLike[str], *, top_k: int = 5) -> None:
    """Write one row per hour: ``hour_start, updates, dominant_tag, share:<tag>, mean:<tag>...``.

    ``hour_start`` is ISO 8601 with the UTC offset; ``share:other`` is the share
    of updates whose dominant tag is not among the top ``top_k``.
    """
    k = min(top_k, len(report.tags))
    top = report.top_tags(k)
    header = [
        "hour_start",
        "updates",
        "dominant_tag",
        *(f"share:{tag}" for tag in top),
        *(f"mean:{tag}" for tag in top),
        "share:other",
    ]
    rows = []
    for h, start in enumerate(report.hour_starts.tolist()):
        shares = report.hour_share[h]
        rows.append(
            [
                _format_time(report, start),
                int(report.hour_updates[h]),
                report.tags[int(np.argmax(shares))],
                *(f"{shares[i]:.6f}" for i in range(k)),
                *(f"{report.hour_mean[h, i]:.6f}" for i in range(k)),
                f"{max(0.0, 1.0 - float(shares[:k].sum())):.6f}",
            ]
        )
    _write_csv(path, header, rows)


def write_segments_csv(report: TagReport, path: str | os.PathLike[str]) -> None:
    """Write every segment: ``stream, start, end, duration_s, tag, updates, audio_*_s, content``."""
    rows = (
        [
            segment.stream,
            _format_time(report, segment.start_time, timespec="milliseconds"),
            _format_time(report, segment.end_time, timespec="milliseconds"),
            f"{segment.duration_s:.3f}",
            segment.tag,
            segment.updates,
            f"{segment.audio_start_s:.3f}",
            f"{segment.audio_end_s:.3f}",
            segment.content,
        ]
        for segment in report.segments
    )
    _write_csv(path, _SEGMENT_COLUMNS, rows)


def _plot_series(report: TagReport, k: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Regular bins over the range: (bin seconds, bin starts [B], mean probability [B, k])."""
    span = report.last_time - report.first_time
    bin_s = next(
        (b for b in _PLOT_BIN_SECONDS if span / b <= _PLOT_MAX_BINS), _PLOT_BIN_SECONDS[-1]
    )
    first = np.floor(report.first_time / bin_s) * bin_s
    index = ((report.minute_starts - first) // bin_s).astype(np.int64)
    n_bins = int(index.max()) + 1
    sums = np.zeros((n_bins, k))
    present = np.zeros((n_bins, k))
    np.add.at(sums, index, report.minute_probability_sum[:, :k])
    np.add.at(present, index, report.minute_present[:, :k])
    starts = first + bin_s * np.arange(n_bins)
    return bin_s, starts, sums / np.maximum(present, 1)


def plot_report(
    report: TagReport,
    path: str | os.PathLike[str],
    *,
    top_k: int = 5,
    width_px: int = 1200,
    height_px: int = 500,
    asrun: AsRun | None = None,
) -> None:
    """Write a PNG: stacked area of the top ``top_k`` tags' mean probability over time.

    Bins without updates are drawn as 0.  The bin width (1 min .. 1 day) is the
    smallest that gives at most 400 bins over the range.  With ``asrun``, a second
    panel below draws the as-run log: one lane per stream, music coloured by
    family, speech orange, silence grey, outages black, audio the worker was too far
    behind to tag magenta (on the audio's own wall-clock
    times, which for a file sent faster than real time differ from the top panel's).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    k = min(top_k, len(report.tags))
    bin_s, starts, means = _plot_series(report, k)
    dpi = 100
    lanes = sorted({e.stream for e in asrun.entries}) if asrun is not None else []
    if lanes:  # the as-run panel takes the lower part of the same height
        lane_px = min(max(110, 24 * len(lanes) + 70), height_px // 2)
        figure, (axes, lane_axes) = plt.subplots(
            2,
            1,
            figsize=(width_px / dpi, height_px / dpi),
            dpi=dpi,
            gridspec_kw={"height_ratios": [height_px - lane_px, lane_px]},
        )
    else:
        figure, axes = plt.subplots(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    try:
        if len(starts) == 1:  # one bin: draw it as a flat band over its width
            starts = np.append(starts, starts[0] + bin_s)
            means = np.repeat(means, 2, axis=0)
        x = mdates.date2num([report.datetime(t) for t in starts.tolist()])
        axes.stackplot(x, means.T, labels=report.top_tags(k), alpha=0.85)
        axes.set_ylabel("mean probability (stacked)")
        bin_label = f"{bin_s // 60} min" if bin_s < 3600 else f"{bin_s // 3600} h"
        first, last = (_format_time(report, t) for t in (report.first_time, report.last_time))
        axes.set_title(
            f"Top {k} tags, stream {report.stream or 'all'}, {bin_label} bins, {first} .. {last}",
            fontsize=10,
        )
        locator = mdates.AutoDateLocator(tz=report.tz)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=report.tz))
        axes.set_xlim(float(x[0]), float(x[-1]))
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
        if lanes:
            assert asrun is not None
            _plot_asrun(report, asrun, lanes, lane_axes)
        figure.tight_layout()
        figure.savefig(path, dpi=dpi, format="png")
    finally:
        plt.close(figure)


def _plot_asrun(report: TagReport, asrun: AsRun, lanes: Sequence[str], axes: object) -> None:
    """The as-run panel: one horizontal lane per stream, one bar per row."""
    import matplotlib.dates as mdates
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab10")
    families = list(asrun.families.names)
    colour = {
        name: palette(_FAMILY_COLOURS[i % len(_FAMILY_COLOURS)]) for i, name in enumerate(families)
    }
    used: dict[str, Any] = {}  # legend name -> matplotlib colour
    for lane, stream in enumerate(lanes):
        for entry in (e for e in asrun.entries if e.stream == stream):
            if entry.kind == "music":
                name = entry.family or "music"
                face = colour.get(entry.family, "#7f7fff")
            else:
                name, face = entry.kind, _KIND_COLOURS[entry.kind]
            used.setdefault(name, face)
            start = mdates.date2num(report.datetime(entry.start_time))
            width = max(entry.duration_s, 0.0) / 86_400.0
            axes.broken_barh([(start, width)], (lane - 0.4, 0.8), facecolors=face)  # type: ignore[attr-defined]
    first = min(e.start_time for e in asrun.entries)
    last = max(e.end_time for e in asrun.entries)
    axes.set_xlim(  # type: ignore[attr-defined]
        mdates.date2num(report.datetime(first)),
        mdates.date2num(report.datetime(max(last, first + 1))),
    )
    axes.set_yticks(range(len(lanes)), labels=list(lanes), fontsize=8)  # type: ignore[attr-defined]
    axes.set_ylim(-0.6, len(lanes) - 0.4)  # type: ignore[attr-defined]
    axes.invert_yaxis()  # type: ignore[attr-defined]
    locator = mdates.AutoDateLocator(tz=report.tz)
    axes.xaxis.set_major_locator(locator)  # type: ignore[attr-defined]
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=report.tz))  # type: ignore[attr-defined]
    axes.set_title("As-run log (music by tag family)", fontsize=10)  # type: ignore[attr-defined]
    axes.legend(  # type: ignore[attr-defined]
        handles=[mpatches.Patch(color=face, label=name) for name, face in used.items()],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
    )


def format_asrun(asrun: AsRun, tz: dt.tzinfo, *, rows: int = _PRINTED_ASRUN_ROWS) -> str:
    """The as-run log as text: the last ``rows`` rows, dead air, music time by family."""

    def clock(t: float) -> str:
        return dt.datetime.fromtimestamp(t, tz=tz).strftime("%Y-%m-%d %H:%M:%S")

    shown = asrun.entries[-rows:]
    seconds = asrun.kind_seconds()
    settings = asrun.settings
    lines = [
        f"As-run log: {len(asrun.entries)} rows"
        + (f"; the last {len(shown)}" if len(shown) < len(asrun.entries) else "")
        + f" (min_segment_seconds={settings.min_segment_seconds:g}, "
        f"family_hysteresis={settings.family_hysteresis:g}, "
        f"title_item_seconds={settings.title_item_seconds:g}); "
        + "  ".join(
            f"{kind} {value / 60:.1f} min"
            for kind, value in seconds.items()
            if value > 0 or kind != "untagged"  # said only when the worker shed audio
        ),
    ]
    lines += _table(
        ["stream", "start", "end", "duration", "what", "title"],
        [
            [
                e.stream,
                clock(e.start_time),
                clock(e.end_time)[11:],
                f"{e.duration_s:.1f} s",
                e.label,
                e.title,
            ]
            for e in shown
        ],
        left=(0, 4, 5),
    )
    lines += [f"  ({timing.describe()})" for timing in asrun.title_timing]
    lines += ["", f"Dead-air incidents: {len(asrun.dead_air)}"]
    if asrun.dead_air:
        lines += _table(
            ["stream", "start", "end", "duration"],
            [
                [
                    d.stream,
                    clock(d.start_time),
                    "(still silent)" if d.end_time is None else clock(d.end_time)[11:],
                    f"{d.duration_s:.1f} s",
                ]
                for d in asrun.dead_air
            ],
            left=(0,),
        )
    music_s = sum(asrun.family_seconds.values())
    lines += ["", "Music by tag family (share of music time)"]
    lines += _table(
        ["family", "minutes", "share"],
        [
            [name, f"{value / 60:.1f}", f"{100 * value / max(music_s, 1e-9):.1f}%"]
            for name, value in asrun.family_seconds.items()
        ],
    )
    return "\n".join(lines) + "\n"


def write_outputs(
    report: TagReport,
    out_dir: str | os.PathLike[str],
    *,
    top_k: int = 5,
    asrun: AsRun | None = None,
    asrun_path: str | os.PathLike[str] | TextIO | None = None,
) -> dict[str, Path]:
    """Write ``report.png``, ``hourly.csv`` and ``segments.csv`` into ``out_dir`` (created).

    With ``asrun``: also ``asrun.csv`` (or ``asrun_path``: a path, or an open text
    stream, which is then left out of the returned paths) and ``dead_air.csv``, and
    the as-run panel in the PNG.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "png": out / PNG_NAME,
        "hourly": out / HOURLY_CSV_NAME,
        "segments": out / SEGMENTS_CSV_NAME,
    }
    plot_report(report, paths["png"], top_k=top_k, asrun=asrun)
    write_hourly_csv(report, paths["hourly"], top_k=top_k)
    write_segments_csv(report, paths["segments"])
    if asrun is not None:

        def iso(t: float) -> str:
            return _format_time(report, t, timespec="milliseconds")

        if asrun_path is None or isinstance(asrun_path, str | os.PathLike):
            paths["asrun"] = Path(asrun_path) if asrun_path is not None else out / ASRUN_CSV_NAME
            write_asrun_csv(asrun, paths["asrun"], format_time=iso)
        else:
            write_asrun_csv(asrun, asrun_path, format_time=iso)
        paths["dead_air"] = out / DEAD_AIR_CSV_NAME
        write_dead_air_csv(asrun, paths["dead_air"], format_time=iso)
    return paths
