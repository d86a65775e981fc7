"""The as-run log: what a stream played, one row per item, from a recording.

A station's as-run log says what went out and when: each piece of music, each
talk, each silence and each time the source was lost.  :func:`build_asrun`
reads a recording of :mod:`monitor.store` (updates with their ``content``, and
the worker's events) and cuts each stream's audio timeline into
:class:`AsRunEntry` rows of four kinds:

``music``
    windows the worker called music, labelled with the dominant **tag family**
    (:mod:`monitor.families`) of their raw probabilities;
``speech``
    windows the worker called speech (a presenter, an advert read out);
``silence``
    windows below the silence threshold (``content`` ``silence``, at least
    one whole window, so about 3 s of quiet or more); between two sounds,
    only dead air the worker reported or quiet of ``min_segment_seconds`` or
    more: a shorter gap (a fade's tail, a pause) belongs to the row before it;
``outage``
    audio that never arrived: a ``source_down`` ... ``source_up`` pair of events,
    or a hole in the windows' audio timeline (the worker's clock jumps over a
    lost stretch; ``docs/PROTOCOL.md``).
``untagged``
    audio that arrived but that the worker did not tag: a hole in the timeline
    across which the stream's ``shed`` count went up (the worker was too far behind,
    ``docs/ROBUSTNESS.md``), without source events.

How a row is found
------------------
1. Silence and outages cut the timeline into *stretches* of sound.  A silence
   begins half a hop before its first silent window and ends half a hop after
   its last one (a window is silent only when the whole of it is quiet), or
   exactly where the worker's ``silence_start``/``silence_end`` events say
   (``silence_since_s``, ``at_s``) when the silence lasted long enough for them.
   A silence between two sounds that is shorter than ``min_segment_seconds`` and
   was not reported is a gap, not a row: the row before it ends where the sound
   resumes, and two rows of one kind (and family) that then meet are one.
2. In each stretch the windows' content (speech or music) is cut into runs; a
   run shorter than ``min_segment_seconds`` is merged into its longer neighbour,
   unless the audio stops next to it (the recording's start or end, an outage:
   no window reaches across, so its windows undercount its audio) or it is
   speech of at least one window's length with a splice near each end (a short
   link, :func:`_short_link`) or
   with seconds of windows the classifier is sure of (:func:`_sure_talk`).
3. In each music run the family follows the windows' family scores with
   **hysteresis**: it changes only when another family's score exceeds the
   current family's by more than ``family_hysteresis``; runs shorter than
   ``min_segment_seconds`` are merged again.  So one track is one row, not a
   flicker between ``metal``, ``heavy metal`` and ``hard rock``.
4. Each boundary that hysteresis and merging kept is then placed where the
   evidence changes.  A change of **content** (music <-> speech) is placed from
   two measurements, averaged: where the content classifier's decision flips
   (``p_speech / (p_music + p_speech)`` crosses 0.5), moved by the window
   geometry (a 3 s window over the change is called speech once about 0.49 of
   it is speech when the speech is at its end, 0.39 when at its start:
   :data:`model.placement.SPEECH_SHARE_AT_FLIP`, measured on audio that may be tuned on), and
   where the windows' tags move from one item's profile to the other's along
   a ramp one window long (the tagging model pools over its window).  A change
   of **family**: each side's score (the two families' scores) is put on the
   scale of the two runs' typical values (1 as in its own run, 0 as in the
   other); the split of the neighbouring runs' windows with the largest sum of
   ``left - right`` before it and ``right - left`` after it wins, and the
   boundary is where that difference crosses zero between the centres of the
   last window on one side and the first on the other.  A window that mixes
   two pieces of music is called by the model for the more salient one (drums
   over piano), so a change of family lands up to about a hop or two into the
   less salient item.  ``python -m benchmarks.asrun_hour`` measures both on
   real music; boundaries with silence and outages are within one hop.
5. ``now_playing`` titles name the rows: a music row's title is the one in
   effect at its middle (a speech row's: one that began during it), and a
   music or speech row is split where the title changes when the change lies at
   least ``min_segment_seconds`` from both of its ends (two songs of one family
   back to back; a song heard as talk all through after the talk).  Whether
   the titles keep time with the audio is measured first, against the starts
   of music after talk or silence (:func:`_title_lag`, :class:`TitleTiming`).
   If they do, they are moved back by their lag and each boundary from talk or
   music into music near a title moves to the strongest change of sound within
   one hop of it (:func:`_snap_to_titles`).  If not, such a boundary seconds
   from a title change moves to the splice at the title only when the sound
   changes more there (:func:`_move_to_titles`: the classifier heard the
   song's start as talk, or the families' scores moved early).  A title
   announced again is no change.  A title in effect for at
   most ``title_item_seconds`` names one track: the music and speech rows next
   to each other under it, from its first up to its last music row, join into
   one music row, with the family that scores highest over all of it (a song
   whose bridge sounds like another family, or a rap heard partly as talk, is
   one row); talk after the song's last music stays its own row.

Times
-----
Every row has its audio times (``audio_start_s``, ``audio_end_s``: seconds on
the stream's timeline, that of the updates' ``start_s``/``end_s`` and of the
events' ``at_s``) and wall-clock times (Unix ``start_time``/``end_time``):
the capture time of the nearest window's last sample, moved by the audio
between them (an outage with events: the events' own times).

Dead air
--------
:attr:`AsRun.dead_air` lists every ``silence_start`` with its ``silence_end``
(start, end and duration as the worker measured them, at 0.1 s); a silence
still going on at the end of the range has no end, and one cut short by a
``source_down`` ends there (what follows is an outage).

Memory grows with the windows of one stream in the range (about 100 bytes per
window: 17 MB for a day at the 0.5 s hop); streams are read one at a time.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, TextIO

import numpy as np

from model import placement
from model.placement import StreamWindows
from monitor.families import DEFAULT_FAMILIES, Families
from monitor.store import (
    StoreError,
    decode_blobs,
    open_database,
    read_events,
    read_tag_sets,
    select_updates,
)
from protocol import Event

__all__ = [
    "ASRUN_COLUMNS",
    "DEAD_AIR_COLUMNS",
    "KINDS",
    "AsRun",
    "AsRunEntry",
    "AsRunSettings",
    "DeadAir",
    "StreamWindows",
    "TitleTiming",
    "build_asrun",
    "load_asrun",
    "read_stream_windows",
    "segment_stream",
    "write_asrun_csv",
    "write_dead_air_csv",
]

logger = logging.getLogger(__name__)

#: Kinds of :class:`AsRunEntry`, in the order the CSV documents them.
KINDS: Final = ("music", "speech", "silence", "outage", "untagged")
#: Rows without windows of their own: audio that never arrived, or that the worker shed.
_UNHEARD: Final = ("outage", "untagged")
#: Columns of the as-run CSV (:func:`write_asrun_csv`).
ASRUN_COLUMNS: Final = (
    "stream", "start", "end", "duration_s", "kind", "family", "title", "top_tag",
    "windows", "audio_start_s", "audio_end_s",
)  # fmt: skip
#: Columns of the dead-air CSV (:func:`write_dead_air_csv`).
DEAD_AIR_COLUMNS: Final = (
    "stream", "start", "end", "duration_s", "audio_start_s", "audio_end_s", "level_dbfs",
)  # fmt: skip
#: A music <-> talk boundary this close to a ``now_playing`` change may move to it
#: (:func:`_move_to_titles`): about the longest stretch by which the content classifier
#: misses the start of a song with a voice (``docs/CONTENT.md``).
TITLE_REACH_SECONDS: Final = 10.0
#: Titles keep time with the audio (:func:`_title_lag`) when at least this many title
#: changes lie within :data:`TITLE_REACH_SECONDS` of a start of music the sound placed
#: (after talk or silence: within one hop on every hour ``benchmarks.asrun_hour``
#: recorded) and half of them or more lie within :data:`TITLE_TIMING_SPREAD_S` of
#: their median offset (the lag).  Then each boundary into music near a title moves to
#: the strongest change of sound within one hop of the title, moved by the lag
#: (:func:`_snap_to_titles`); otherwise titles move boundaries only where the sound
#: changes more (:func:`_move_to_titles`).
TITLE_TIMING_PAIRS: Final = 5
TITLE_TIMING_SPREAD_S: Final = 0.25
#: A stream with too few starts of music after talk or silence (music only) times its
#: titles against the strongest change of sound within this many seconds of each.
#: Chosen on the tuning programme of many songs back to back, those starts ignored:
#: found in time, with the lag, with titles exact and 2 s late (2 s of reach found 1.7
#: s for the latter).
TITLE_SOUND_REACH_SECONDS: Final = 3.0
#: A change of sound (``change_strength``) this strong is a splice between items.  On
#: the tuning programmes (``--tuning``, seeds 11, 5 and 3 with fade-outs, and ``--rap
#: 0.5`` seeds 21 and 22) every talk item had a change of 2.03-3.8 within a second of
#: its span; inside the songs heard partly as talk (synthetic rap over a steady beat) the
#: strongest was 1.86.  Talk heard inside a song joins the song under its title only
#: without one (:func:`_join_under_titles`); a speech run shorter than
#: ``min_segment_seconds`` with one near each end is a short link and stays
#: (:func:`_short_link`).
SPLICE_CHANGE: Final = 2.0
#: A speech run shorter than ``min_segment_seconds`` also stays when the classifier is
#: sure of it (:func:`_sure_talk`): this many seconds of consecutive windows with a
#: speech share (:func:`model.placement.speech_vs_music`) of at least
#: :data:`SURE_TALK_SHARE`, as the windows wholly inside clear talk have.  A window is
#: 3 s, so only talk of about 6.5 s or more has that many.  On the tuning programmes
#: (``--tuning``, seeds 11, 5 and 3, cut and with fade-outs, ``--rap 0.5`` seeds 21
#: and 22, ``--short-talk 6 10`` seed 31), the short speech runs inside music had at most
#: 2.5 s of such windows (a synthetic rap; 1 s elsewhere), and the short links without a
#: splice at one end 4-7 s (except one the classifier heard in two pieces, with
#: none).  Held out (``--short-talk 6 10``, seed 32 cut and seed 33 with 2 s fade-outs):
#: talk items found 19 -> 20 of 20 and 15 -> 17 of 17, music <-> talk within one hop
#: 87 -> 89 % and 88 -> 97 %.
SURE_TALK_SECONDS: Final = 3.5
SURE_TALK_SHARE: Final = 0.99
#: Rows read from SQLite at a time.
_CHUNK_ROWS: Final = 20_000
#: A window's start this far (seconds) before the previous one's starts a new timeline
#: (the stream restarted: the worker's audio clock begins again).
_RESTART_SLACK_S: Final = 1.0
_COLUMNS: Final = (
    "start_s", "end_s", "capture_time", "published_time", "content", "p_music", "p_speech",
    "change_at_s", "change_strength", "change_speech", "tags_id", "probabilities", "shed",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class AsRunSettings:
    """How the as-run log is cut (``[report]`` in ``config.toml``).

    Attributes
    ----------
    min_segment_seconds : float >= 0
        Music and speech runs shorter than this are merged into a neighbour, except
        speech with a splice near each end or heard surely as speech for
        :data:`SURE_TALK_SECONDS` (a presenter's short link).
        A silence shorter than this between two sounds that the worker did not
        report as dead air is a gap: the row before it runs on to where the
        sound resumes.  Other silences and all outages are kept whatever their
        length.
    family_hysteresis : float in [0, 1)
        A music row changes family only when another family's score exceeds
        the current one's by more than this.
    title_item_seconds : float >= 0
        A ``now_playing`` title in effect for at most this long names one item
        (a track): the music and speech rows next to each other under it, up to
        its last music row, join into one music row, labelled with the family
        that scores highest over all of it.  A title
        that stays longer (a station or show name) joins nothing; 0 turns the
        rule off.
    """

    min_segment_seconds: float = 10.0
    family_hysteresis: float = 0.1
    title_item_seconds: float = 900.0

    def __post_init__(self) -> None:
        if not self.min_segment_seconds >= 0.0:
            raise ValueError(f"min_segment_seconds={self.min_segment_seconds} must be >= 0")
        if not self.title_item_seconds >= 0.0:
            raise ValueError(f"title_item_seconds={self.title_item_seconds} must be >= 0")
        if not 0.0 <= self.family_hysteresis < 1.0:
            raise ValueError(f"family_hysteresis={self.family_hysteresis} must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class AsRunEntry:
    """One row of the as-run log.

    Attributes
    ----------
    stream : str
    kind : {"music", "speech", "silence", "outage", "untagged"}
    audio_start_s, audio_end_s : float
        Seconds on the stream's audio timeline.
    start_time, end_time : float
        Unix wall-clock times.
    family : str
        Music: the dominant tag family (``""`` if no family scored); else ``""``.
    title : str
        Music: the ``now_playing`` title in effect; speech: one that began during
        it; ``""``: none known.
    top_tag : str
        Music: the tag with the highest mean probability over the row's windows.
    windows : int
        Updates in the row (0 for an outage).
    """

    stream: str
    kind: str
    audio_start_s: float
    audio_end_s: float
    start_time: float
    end_time: float
    family: str = ""
    title: str = ""
    top_tag: str = ""
    windows: int = 0

    @property
    def duration_s(self) -> float:
        """Wall-clock seconds from start to end."""
        return self.end_time - self.start_time

    @property
    def label(self) -> str:
        """The family of a music row, ``[speech]``, ``[silence]`` or ``[outage]`` otherwise."""
        if self.kind == "music":
            return self.family or "[music]"
        return f"[{self.kind}]"


@dataclasses.dataclass(frozen=True)
class DeadAir:
    """One dead-air incident: a ``silence_start`` and its ``silence_end``.

    ``end_time``/``audio_end_s`` are ``None`` while it lasts (no end in the range);
    ``duration_s`` is then measured up to the stream's last window.
    """

    stream: str
    start_time: float
    end_time: float | None
    duration_s: float
    audio_start_s: float
    audio_end_s: float | None
    level_dbfs: float


@dataclasses.dataclass(frozen=True)
class TitleTiming:
    """How a stream's ``now_playing`` titles keep time with its audio (:func:`_title_lag`).

    Attributes
    ----------
    stream : str
    pairs : int
        Title changes that lie within :data:`TITLE_REACH_SECONDS` of a start of
        music after talk or silence.
        Or, with ``against`` ``"changes"``: title changes with a change of sound
        within :data:`TITLE_SOUND_REACH_SECONDS`.
    lag_s : float
        The median of title minus that start (seconds; positive: titles come late).
    spread_s : float
        The median distance of those offsets from ``lag_s``.
    against : {"starts", "changes"}
        What the titles were timed against: starts of music after talk or silence,
        or (a stream with too few of those) the strongest changes of sound near them.
    """

    stream: str
    pairs: int
    lag_s: float
    spread_s: float
    against: str = "starts"

    @property
    def in_time(self) -> bool:
        """Whether the titles keep time: enough pairs, close to one lag."""
        return self.pairs >= TITLE_TIMING_PAIRS and self.spread_s <= TITLE_TIMING_SPREAD_S

    @property
    def split_reach_s(self) -> float:
        """How far from a title the split of a row at it (:func:`_split_at_titles`) may
        move to a change of sound: for titles known to stray (enough pairs, not in
        time), twice their spread and at least
        :data:`model.placement.CHANGE_SNAP_SECONDS`; else 0 (the split is at the title).
        """
        if self.pairs < TITLE_TIMING_PAIRS or self.in_time:
            return 0.0
        return max(placement.CHANGE_SNAP_SECONDS, 2.0 * self.spread_s)

    def describe(self) -> str:
        """One line for a person reading the report."""
        near = (
            "near a start of music after talk or silence"
            if self.against == "starts"
            else "near a change of sound"
        )
        if self.in_time:
            return (
                f"titles on {self.stream} keep time with the audio, {self.lag_s:+.2f} s from "
                f"the start of the music they name ({self.pairs} title changes {near}; "
                f"median distance from that {self.spread_s:.2f} s): changes between songs "
                "are placed at them"
            )
        if self.pairs < TITLE_TIMING_PAIRS:
            return (
                f"titles on {self.stream}: {self.pairs} title changes {near}, too few to "
                f"tell whether they keep time with the audio ({TITLE_TIMING_PAIRS} needed): "
                "only a stronger change of sound near a title moves a boundary"
            )
        return (
            f"titles on {self.stream} do not keep time with the audio ({self.pairs} title "
            f"changes {near}, median offset {self.lag_s:+.2f} s, median distance from that "
            f"{self.spread_s:.2f} s): only a stronger change of sound near a title moves a "
            "boundary, and a row split at a title is split at the strongest change of sound "
            f"within {self.split_reach_s:.1f} s of it"
        )


@dataclasses.dataclass(frozen=True)
class AsRun:
    """The as-run log of a recording's range.

    Attributes
    ----------
    entries : tuple of AsRunEntry
        By stream, then time.
    dead_air : tuple of DeadAir
    family_seconds : dict {str: float}
        Seconds of music per family over the range (every stream), largest first.
    settings : AsRunSettings
    families : Families
    title_timing : tuple of TitleTiming
        Per timeline with at least one title change near a start of music or a
        change of sound.
    """

    entries: tuple[AsRunEntry, ...]
    dead_air: tuple[DeadAir, ...]
    family_seconds: dict[str, float]
    settings: AsRunSettings
    families: Families
    title_timing: tuple[TitleTiming, ...] = ()

    def kind_seconds(self) -> dict[str, float]:
        """Seconds of each kind over the range (wall clock)."""
        out = dict.fromkeys(KINDS, 0.0)
        for entry in self.entries:
            out[entry.kind] += entry.duration_s
        return out


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _streams(
    connection: sqlite3.Connection, stream: str | None, since: float | None, until: float | None
) -> list[str]:
    if stream is not None:
        return [stream]
    rows = connection.execute(
        "SELECT DISTINCT stream FROM updates WHERE published_time >= ? AND published_time < ?",
        (
            float("-inf") if since is None else since,
            float("inf") if until is None else until,
        ),
    )
    return sorted(row[0] for row in rows)


def read_stream_windows(
    connection: sqlite3.Connection,
    stream: str,
    *,
    since: float | None = None,
    until: float | None = None,
    families: Families = DEFAULT_FAMILIES,
    chunk_rows: int = _CHUNK_ROWS,
) -> list[StreamWindows]:
    """One stream's windows in the range, one :class:`StreamWindows` per audio timeline.

    A stream whose audio time goes back (its streamer restarted) starts a new timeline.
    """
    tag_sets = read_tag_sets(connection)
    all_tags: dict[str, int] = {}
    for _, names in tag_sets.values():
        for name in names:
            all_tags.setdefault(name, len(all_tags))
    tag_list = tuple(all_tags)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in _COLUMNS if name != "tags_id"}
    parts["family_scores"] = []
    cursor = select_updates(connection, _COLUMNS, stream=stream, since=since, until=until)
    while rows := cursor.fetchmany(chunk_rows):
        columns = list(zip(*rows, strict=True))
        for i, name in enumerate(_COLUMNS[:4]):
            parts[name].append(np.array(columns[i], dtype=np.float64))
        parts["content"].append(
            np.array([c if c in ("speech", "silence") else "music" for c in columns[4]], object)
        )
        for i, name in (
            (5, "p_music"), (6, "p_speech"), (7, "change_at_s"), (8, "change_strength"),
            (9, "change_speech"),
        ):  # fmt: skip
            parts[name].append(
                np.array([np.nan if v is None else v for v in columns[i]], dtype=np.float64)
            )
        tags_ids = np.array(columns[10], dtype=np.int64)
        probabilities = np.zeros((len(rows), len(tag_list)), dtype=np.float32)
        scores = np.zeros((len(rows), len(families.names)), dtype=np.float32)
        for tags_id in np.unique(tags_ids).tolist():
            _, names = tag_sets[tags_id]
            index = np.flatnonzero(tags_ids == tags_id)
            values = decode_blobs(
                [columns[11][i] for i in index],
                len(names),
                what=f"probabilities of tag set {tags_id}",
            )
            columns_of = np.array([all_tags[n] for n in names], dtype=np.intp)
            probabilities[np.ix_(index, columns_of)] = values
            scores[index] = np.stack([families.scores(row, names) for row in values])
        parts["probabilities"].append(probabilities)
        parts["family_scores"].append(scores)
        parts["shed"].append(
            np.array([np.nan if v is None else v for v in columns[12]], dtype=np.float64)
        )
    if not parts["start_s"]:
        return []
    joined = {name: np.concatenate(values) for name, values in parts.items()}
    everything = StreamWindows(
        stream,
        joined["start_s"],
        joined["end_s"],
        joined["capture_time"],
        joined["content"],
        joined["p_music"],
        joined["p_speech"],
        joined["change_at_s"],
        joined["change_strength"],
        joined["change_speech"],
        joined["family_scores"],
        joined["probabilities"],
        tag_list,
        joined["shed"],
    )
    restarts = np.flatnonzero(np.diff(everything.start_s) < -_RESTART_SLACK_S) + 1
    timelines = []
    for piece in np.split(np.arange(len(everything)), restarts):
        windows = everything.take(piece)
        order = np.argsort(windows.start_s, kind="stable")
        timelines.append(windows.take(order))
    return timelines


# ---------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Run:
    """Windows ``first .. last`` (inclusive) of one label."""

    label: str
    first: int
    last: int
    #: Audio time where the run begins, once its boundary is placed (None: halfway
    #: between the centres of its first window and the one before).
    start_s: float | None = None


def _shed_across(windows: StreamWindows, i: int) -> bool:
    """Whether the worker shed windows between window ``i`` and the next (it was behind)."""
    if windows.shed is None:
        return False
    return bool(windows.shed[i + 1] > windows.shed[i])  # NaN (not recorded): False


def _runs(labels: Sequence[str], offset: int = 0) -> list[_Run]:
    runs: list[_Run] = []
    for i, label in enumerate(labels):
        if runs and runs[-1].label == label:
            runs[-1].last = offset + i
        else:
            runs.append(_Run(label, offset + i, offset + i))
    return runs


def _merge_short(
    runs: list[_Run],
    min_windows: int,
    *,
    keep_first: bool = False,
    keep_last: bool = False,
    keep: Callable[[_Run], bool] | None = None,
) -> list[_Run]:
    """Merge runs shorter than ``min_windows`` into their longer neighbour, shortest first.

    ``keep_first``/``keep_last``: the first/last run is kept whatever its length (the
    audio stops next to it, at the recording's start or end or an outage, which may
    have cut it short).  ``keep``: runs it says are items of their own are kept too.
    """
    runs = [dataclasses.replace(r) for r in runs]
    kept = {(r.first, r.last) for r in runs if keep is not None and keep(r)}
    while len(runs) > 1:
        lengths = [r.last - r.first + 1 for r in runs]
        for k, r in enumerate(runs):
            if (r.first, r.last) in kept:
                lengths[k] = max(lengths[k], min_windows)
        if keep_first:
            lengths[0] = max(lengths[0], min_windows)
        if keep_last:
            lengths[-1] = max(lengths[-1], min_windows)
        i = int(np.argmin(lengths))
        if lengths[i] >= min_windows:
            break
        left = runs[i - 1] if i > 0 else None
        right = runs[i + 1] if i + 1 < len(runs) else None
        if left is not None and right is not None and left.label == right.label:
            left.last = right.last
            del runs[i : i + 2]
            continue
        if right is None or (left is not None and lengths[i - 1] >= lengths[i + 1]):
            assert left is not None
            left.last = runs[i].last
        else:
            right.first = runs[i].first
        del runs[i]
    return runs


def _family_labels(scores: np.ndarray, names: Sequence[str], hysteresis: float) -> list[str]:
    """Each window's family, changing only when another scores ``hysteresis`` more."""
    if not len(scores):
        return []
    lead = min(len(scores), 8)  # start from the family that leads the first few windows
    current = int(np.argmax(scores[:lead].mean(axis=0)))
    labels = []
    for row in scores:
        best = int(np.argmax(row))
        if best != current and row[best] - row[current] > hysteresis:
            current = best
        labels.append(names[current] if row[current] > 0 else "")
    return labels


def _split_content(
    speech_vs_music: np.ndarray,
    left: _Run,
    right: _Run,
    windows: StreamWindows,
    window_s: float,
    hop_s: float,
) -> None:
    """Place the boundary between a music and a speech run (either order):
    :func:`model.placement.place_content_change` over their windows."""
    k, right.start_s = placement.place_content_change(
        windows,
        speech_vs_music,
        left.first,
        right.last,
        to_speech=right.label == "speech",
        window_s=window_s,
        hop_s=hop_s,
    )
    left.last, right.first = k - 1, k


def _split_between(
    left_score: np.ndarray,
    right_score: np.ndarray,
    left: _Run,
    right: _Run,
    guard: int,
    windows: StreamWindows,
) -> None:
    """Move the boundary between ``left`` and ``right`` to where the evidence changes.

    Each score is put on the scale of the two runs' typical values (medians over the
    windows at least ``guard`` windows, one window length, from the boundary): 1 where
    it is as in the run it names, 0 as in the other.  A window counts for the left run
    by how much more left-like than right-like it is, so a label whose score saturates
    early (a loud drum track in a window that is mostly piano) does not pull the
    boundary its way.  The boundary is where the evidence crosses zero between the
    centres of the last left and the first right window (linear interpolation),
    moved to the strongest spectral change within reach (:func:`model.placement.snap_to_change`).
    """
    pure_left = np.arange(left.first, max(left.first + 1, left.last + 1 - guard))
    pure_right = np.arange(min(right.last, right.first + guard), right.last + 1)

    def scaled(score: np.ndarray, home: np.ndarray, away: np.ndarray) -> np.ndarray:
        high, low = float(np.median(score[home])), float(np.median(score[away]))
        if not high - low > 1e-6:
            return np.full(len(score), 0.5)
        return np.clip((score - low) / (high - low), 0.0, 1.0)

    evidence = scaled(left_score, pure_left, pure_right) - scaled(
        right_score, pure_right, pure_left
    )
    k, placed = placement.place(evidence, left.first, right.last, windows.centres)
    left.last, right.first = k - 1, k
    right.start_s = placement.snap_to_change(windows, placed, left.first, right.last)


def _stretch_runs(
    windows: StreamWindows,
    first: int,
    last: int,
    names: Sequence[str],
    settings: AsRunSettings,
    min_windows: int,
    guard: int,
    speech_vs_music: np.ndarray,
    hop_s: float,
    window_s: float,
    longest_window_s: float,
    *,
    cut_before: bool,
    cut_after: bool,
) -> list[tuple[str, str, int, int, float | None]]:
    """Cut windows ``first .. last`` (no silence among them) into runs.

    Each is (kind, family, first window, last window, audio time it starts or None).
    ``cut_before``/``cut_after``: the audio stops there (the recording's start or end,
    an outage), so no window reaches across and the run there has fewer windows than
    its audio: its length says nothing, and it stays its own row (talk cut by an outage).
    ``speech_vs_music``: :func:`model.placement.speech_vs_music` of all the windows;
    ``hop_s``: their hop;
    ``window_s`` and ``longest_window_s``: the median and the longest window's length.
    """
    kinds = ["speech" if c == "speech" else "music" for c in windows.content[first : last + 1]]
    content_runs = _merge_short(
        _runs(kinds, first),
        min_windows,
        keep_first=cut_before,
        keep_last=cut_after,
        keep=lambda run: (
            run.label == "speech"
            and (
                _short_link(windows, run, longest_window_s, guard)
                or _sure_talk(speech_vs_music[run.first : run.last + 1], hop_s)
            )
        ),
    )
    if len(content_runs) > 1:
        for left, right in itertools.pairwise(content_runs):
            _split_content(speech_vs_music, left, right, windows, window_s, hop_s)
    out: list[tuple[str, str, int, int, float | None]] = []
    for run in content_runs:
        if run.label == "speech":
            out.append(("speech", "", run.first, run.last, run.start_s))
            continue
        scores = windows.family_scores
        labels = _family_labels(scores[run.first : run.last + 1], names, settings.family_hysteresis)
        family_runs = _merge_short(_runs(labels, run.first), min_windows)
        for left, right in itertools.pairwise(family_runs):
            if left.label and right.label:
                a, b = names.index(left.label), names.index(right.label)
                _split_between(scores[:, a], scores[:, b], left, right, guard, windows)
        family_runs[0].start_s = run.start_s
        out.extend(("music", r.label, r.first, r.last, r.start_s) for r in family_runs)
    return out


def _top_tag(windows: StreamWindows, first: int, last: int) -> str:
    if last < first or not windows.tags:
        return ""
    mean = windows.tag_probabilities[first : last + 1].mean(axis=0)
    return windows.tags[int(np.argmax(mean))]


def segment_stream(
    windows: StreamWindows,
    events: Sequence[Event] = (),
    *,
    settings: AsRunSettings | None = None,
    families: Families = DEFAULT_FAMILIES,
) -> list[AsRunEntry]:
    """Cut one stream's timeline into as-run rows (the module doc says how).

    Parameters
    ----------
    windows : StreamWindows
        One audio timeline, in audio order (:func:`read_stream_windows`).
    events : sequence of protocol.Event
        The stream's events on that timeline (any order).
    settings : AsRunSettings or None
    families : Families
        The grouping ``windows.family_scores`` was computed with.

    Returns
    -------
    list of AsRunEntry
        Contiguous rows in audio order: each ends where the next begins.
    """
    return _segment_stream(windows, events, settings or AsRunSettings(), families)[0]


def _segment_stream(
    windows: StreamWindows,
    events: Sequence[Event],
    settings: AsRunSettings,
    families: Families,
) -> tuple[list[AsRunEntry], TitleTiming | None]:
    """:func:`segment_stream`'s rows, and how the titles keep time (:func:`_title_lag`;
    ``None``: no title change lies near a start of music or a change of sound)."""
    n = len(windows)
    if n == 0:
        return [], None
    names = families.names
    hop = windows.hop_seconds()
    min_windows = max(1, round(settings.min_segment_seconds / hop))
    lengths = windows.end_s - windows.start_s
    window_s, longest_window_s = float(np.median(lengths)), float(np.max(lengths))
    guard = max(1, round(window_s / hop))
    speech_vs_music = placement.speech_vs_music(windows)
    events = sorted(events, key=lambda e: e.at_s)

    # 1. Cuts: outages (holes in the timeline, source_down..source_up) and silences.
    #    Each cut is (kind, audio_start_s, audio_end_s, first window after it).
    cuts: list[tuple[str, float, float, int, int]] = []  # kind, start, end, first, last window
    downs = [e for e in events if e.event == "source_down"]
    ups = [e for e in events if e.event == "source_up"]
    hole_after = np.flatnonzero(windows.start_s[1:] > windows.end_s[:-1] + 1e-6)
    for i in hole_after.tolist():
        gap_start, gap_end = float(windows.end_s[i]), float(windows.start_s[i + 1])
        down = next((e for e in downs if gap_start - hop <= e.at_s <= gap_end + hop), None)
        up = next((e for e in ups if gap_start - hop <= e.at_s <= gap_end + hop), None)
        start = down.at_s if down is not None else gap_start
        end = up.at_s if up is not None else gap_end
        # A hole the worker made itself, shedding windows it was too far behind to tag,
        # is audio that arrived but was not tagged, not an outage of the source.
        kind = "untagged" if down is None and up is None and _shed_across(windows, i) else "outage"
        cuts.append((kind, start, max(start, end), i + 1, i))  # no windows of its own
    silent = windows.content == "silence"
    starts = [e for e in events if e.event == "silence_start"]
    ends = [e for e in events if e.event == "silence_end"]
    # A silence on both sides of a hole is two silences, with the outage between them.
    timeline_part = np.zeros(n, dtype=np.int64)
    timeline_part[hole_after + 1] = 1
    timeline_part = np.cumsum(timeline_part)
    silence_labels = [
        f"s{part}" if quiet else "" for quiet, part in zip(silent, timeline_part, strict=True)
    ]
    reported: set[int] = set()  # first windows of the silences the worker reported as dead air
    for run in _runs(silence_labels):
        if not run.label:
            continue
        begin = float(windows.start_s[run.first]) - hop / 2
        finish = float(windows.end_s[run.last]) + hop / 2
        known = next(
            (
                float(e.fields["silence_since_s"])
                for e in starts
                if abs(float(e.fields["silence_since_s"]) - begin) <= window_s
            ),
            None,
        )
        back = next((e.at_s for e in ends if abs(e.at_s - finish) <= window_s), None)
        if known is not None or back is not None:
            reported.add(run.first)
        if run.first == 0:
            begin = float(windows.start_s[0])
        if run.last == n - 1:
            finish = float(windows.end_s[-1])
        cuts.append(
            (
                "silence",
                begin if known is None else float(known),
                finish if back is None else float(back),
                run.first,
                run.last,
            )
        )
    cuts.sort(key=lambda c: (c[3], c[4]))

    # 2. Stretches of sound between the cuts, cut into runs.
    pieces: list[tuple[str, str, float, float, int, int]] = []
    cursor_window = 0
    cursor_s = float(windows.start_s[0])
    after_cut = True  # the recording's start
    for kind, start, end, first, last in [*cuts, ("end", np.inf, np.inf, n, n - 1)]:
        stretch_last = first - 1 if kind not in _UNHEARD else last
        if stretch_last >= cursor_window:
            runs = _stretch_runs(
                windows,
                cursor_window,
                stretch_last,
                names,
                settings,
                min_windows,
                guard,
                speech_vs_music,
                hop,
                window_s,
                longest_window_s,
                cut_before=after_cut,
                cut_after=kind in (*_UNHEARD, "end"),
            )
            edge_end = float(windows.end_s[stretch_last]) if kind == "end" else start
            centres = windows.centres
            starts_at = [
                cursor_s
                if j == 0
                else (placed if placed is not None else 0.5 * (centres[a - 1] + centres[a]))
                for j, (_, _, a, _, placed) in enumerate(runs)
            ]
            pieces.extend(_without_empty_rows(runs, [*starts_at, edge_end], hop))
        if kind == "end":
            break
        pieces.append((kind, "", start, end, first, last))
        cursor_window = max(cursor_window, last + 1)
        cursor_s = end
        after_cut = kind in _UNHEARD

    # Neighbours meet: an outage keeps its own edges, other pieces give way.
    for j in range(1, len(pieces)):
        before, piece = pieces[j - 1], pieces[j]
        if before[3] > piece[2]:
            if piece[0] in _UNHEARD:
                pieces[j - 1] = (*before[:3], max(before[2], piece[2]), *before[4:])
            else:
                pieces[j] = (*piece[:2], before[3], max(before[3], piece[3]), *piece[4:])

    pieces = _close_short_gaps(pieces, settings.min_segment_seconds, reported)

    # 3. Titles and wall-clock times.
    titles = _title_changes(
        [(e.at_s, str(e.fields.get("title", ""))) for e in events if e.event == "now_playing"]
    )
    timing = _title_lag(pieces, titles, windows, longest_window_s)
    if timing is not None and timing.in_time:
        titles = [(when - timing.lag_s, title) for when, title in titles]
        pieces = _snap_to_titles(pieces, titles, windows, window_s, hop)
    else:
        pieces = _move_to_titles(pieces, titles, windows, window_s, hop)
    pieces = _split_at_titles(
        pieces, titles, settings.min_segment_seconds, windows,
        timing.split_reach_s if timing is not None else 0.0,
    )  # fmt: skip
    pieces = _join_under_titles(
        pieces, titles, settings.title_item_seconds, windows, names, longest_window_s
    )
    entries = []
    for kind, family, start, end, a, b in pieces:
        start_time = windows.wall_time(start)
        end_time = windows.wall_time(end)
        if kind == "outage":
            down = next((e for e in downs if abs(e.at_s - start) <= 1e-9), None)
            up = next((e for e in ups if abs(e.at_s - end) <= 1e-9), None)
            if down is not None and up is not None and up.time >= down.time:
                start_time, end_time = down.time, up.time
        entries.append(
            AsRunEntry(
                stream=windows.stream,
                kind=kind,
                audio_start_s=start,
                audio_end_s=end,
                start_time=start_time,
                end_time=max(start_time, end_time),
                family=family,
                title=_row_title(kind, titles, start, end),
                top_tag=_top_tag(windows, a, b) if kind == "music" else "",
                windows=max(0, b - a + 1) if kind not in _UNHEARD else 0,
            )
        )
    return entries, timing


def _without_empty_rows(
    runs: Sequence[tuple[str, str, int, int, float | None]], edges: list[float], hop_s: float
) -> list[tuple[str, str, float, float, int, int]]:
    """A stretch's runs as pieces, each from its edge to the next, none shorter than a hop.

    ``edges`` holds each run's start and, last, the stretch's end.  Placing the
    boundaries can leave a run with less than a hop of audio, which windows a hop
    apart cannot tell from none:

    - a run kept for being a link (:func:`_short_link`) next to a silence can have its
      boundary with the song placed at or past the silence's edge: the change between
      sound and quiet is the strongest change near it, so the evidence says it holds
      no audio of its own (a song's last bars heard as talk as it stops, or its first
      as it starts);
    - a song's first windows also hold the talk before it, so its family can lead
      there with the tags of that mix; placing the family change then moves it to
      where the song begins.

    Such a run gives its windows to a neighbour of its kind (the one before first),
    else to the run before it (the first run: to the one after); two runs that then
    meet with one kind and family become one in :func:`_close_short_gaps`.
    """
    pieces = [
        (kind, family, edges[j], edges[j + 1], a, b)
        for j, (kind, family, a, b, _) in enumerate(runs)
    ]
    j = 0
    while len(pieces) > 1 and j < len(pieces):
        kind, _, start, end, a, b = pieces[j]
        if end - start >= hop_s - 1e-9:
            j += 1
            continue
        before = pieces[j - 1] if j > 0 else None
        after = pieces[j + 1] if j + 1 < len(pieces) else None
        to_after = before is None or (after is not None and after[0] == kind and before[0] != kind)
        if not to_after:  # the one before runs on to where this one ended
            assert before is not None
            pieces[j - 1] = (*before[:3], end, before[4], b)
        else:  # the one after begins where this one began
            assert after is not None
            pieces[j + 1] = (*after[:2], start, after[3], a, after[5])
        del pieces[j]
        j = max(0, j - 1)  # the one before may now be too short too
    return pieces


def _close_short_gaps(
    pieces: list[tuple[str, str, float, float, int, int]], shortest_s: float, reported: set[int]
) -> list[tuple[str, str, float, float, int, int]]:
    """Pieces where a short quiet between two sounds is no row of its own.

    A silence shorter than ``shortest_s`` with music or speech on both sides,
    which the worker did not report as dead air (``silence_start``), is a gap
    between items (a fade's quiet tail before the talk, a pause between two
    songs) or inside one (a rest in a symphony), not an item: the piece before
    it runs on to where the sound resumes, so the next item starts with its
    sound.  Two music pieces of one family, or two speech pieces, that then
    meet are one.  Silences next to an outage or at the recording's ends stay.
    """
    out: list[tuple[str, str, float, float, int, int]] = []
    for j, piece in enumerate(pieces):
        kind, family, start, end, first, last = piece
        sound = ("music", "speech")
        if (
            kind == "silence"
            and end - start < shortest_s
            and first not in reported
            and out
            and out[-1][0] in sound
            and j + 1 < len(pieces)
            and pieces[j + 1][0] in sound
        ):
            out[-1] = (*out[-1][:3], end, out[-1][4], last)  # its windows count in the row
            continue
        if out and kind in sound and out[-1][:2] == (kind, family):
            kept = out.pop()
            piece = (kind, family, kept[2], end, kept[4], last)
        out.append(piece)
    return out


def _move_to_titles(
    pieces: list[tuple[str, str, float, float, int, int]],
    titles: Sequence[tuple[float, str]],
    windows: StreamWindows,
    window_s: float,
    hop_s: float,
) -> list[tuple[str, str, float, float, int, int]]:
    """Move boundaries into a song (from talk, or from music of another family) to a
    nearby title change where the sound changes more.

    A ``now_playing`` change marks where a song starts.  The content classifier can
    hear the start of a song as talk (rap, a spoken intro) or talk over a loud bed
    as music, and then its boundary lies seconds from the song's start, where the
    sound hardly changes; the families' scores move over the windows that hold both
    songs and can put a change of family a second or two into the quieter one.  So
    a boundary from speech to music, or between two music rows, moves to the
    strongest spectral change within :data:`model.placement.CHANGE_SNAP_SECONDS` of a title change
    when that title change lies more than :data:`model.placement.CHANGE_SNAP_SECONDS` (the sound
    placed it there already) and at most :data:`TITLE_REACH_SECONDS` from it, after the
    middle of the piece before and before the middle of the piece after (so it names
    the item that follows), and that change is stronger than the one the boundary
    sits on.  Each piece keeps at least one window's length.  Metadata sent a few
    seconds off the audio therefore moves nothing that the sound placed well.
    """
    if not titles or not np.isfinite(windows.change_strength).any():
        return pieces
    out = list(pieces)
    half_hop = hop_s / 2
    for j in range(1, len(out)):
        before, after = out[j - 1], out[j]
        if not _into_a_song(before, after):
            continue
        boundary = after[2]
        first, last = before[4], after[5]
        low, high = _title_reach(before, after, window_s)
        _, here = placement.change_near(
            windows, boundary, first, last, before_s=half_hop, after_s=half_hop
        )
        best: tuple[float, float] | None = None
        for when, _title in titles:
            if not low < when < high or abs(when - boundary) <= placement.CHANGE_SNAP_SECONDS:
                continue  # out of reach, or the sound already placed it at the title
            reach = placement.CHANGE_SNAP_SECONDS
            at_s, strength = placement.change_near(
                windows, when, first, last, before_s=reach, after_s=reach
            )
            if low < at_s < high and strength > here and (best is None or strength > best[1]):
                best = (at_s, strength)
        if best is not None:
            _move_boundary(out, j, best[0], windows)
    return out


def _into_a_song(
    before: tuple[str, str, float, float, int, int],
    after: tuple[str, str, float, float, int, int],
) -> bool:
    """Whether the boundary between ``before`` and ``after`` is one a title may move:
    from talk or music into music (a title names the song that starts, not the talk)."""
    return before[0] in ("speech", "music") and after[0] == "music"


def _title_reach(
    before: tuple[str, str, float, float, int, int],
    after: tuple[str, str, float, float, int, int],
    window_s: float,
) -> tuple[float, float]:
    """Where the boundary between ``before`` and ``after`` may move to a title: after
    the middle of ``before``, before the middle of ``after`` (so the title names the
    item that follows), each keeping one window's length, and within
    :data:`TITLE_REACH_SECONDS` of the boundary."""
    boundary = after[2]
    low = max(0.5 * (before[2] + before[3]), before[2] + window_s, boundary - TITLE_REACH_SECONDS)
    high = min(0.5 * (after[2] + after[3]), after[3] - window_s, boundary + TITLE_REACH_SECONDS)
    return low, high


def _move_boundary(
    pieces: list[tuple[str, str, float, float, int, int]],
    j: int,
    moved: float,
    windows: StreamWindows,
) -> None:
    """Put the boundary between ``pieces[j - 1]`` and ``pieces[j]`` at ``moved``
    (seconds), their windows split at it (each keeps one)."""
    before, after = pieces[j - 1], pieces[j]
    first, last = before[4], after[5]
    cut = int(np.searchsorted(windows.centres[first : last + 1], moved)) + first
    cut = min(max(cut, before[4] + 1), after[5])
    pieces[j - 1] = (*before[:3], moved, before[4], cut - 1)
    pieces[j] = (after[0], after[1], moved, after[3], cut, after[5])


def _title_lag(
    pieces: Sequence[tuple[str, str, float, float, int, int]],
    titles: Sequence[tuple[float, str]],
    windows: StreamWindows,
    longest_window_s: float,
) -> TitleTiming | None:
    """How the title changes keep time with the audio they name; ``None`` when no title
    change lies near a start of music or a change of sound.

    Each title change is paired with the nearest start of music after talk or
    silence (where the sound places a boundary within a hop), when one lies within
    :data:`TITLE_REACH_SECONDS`.  A stream with fewer such pairs than
    :data:`TITLE_TIMING_PAIRS` (music only) pairs each title change with the
    strongest change of sound the windows report within
    :data:`TITLE_SOUND_REACH_SECONDS` of it instead: the splice, unless something
    in a song changes the sound more.  The lag is the median of ``title - start``;
    the titles keep time (:attr:`TitleTiming.in_time`) when there are at least
    :data:`TITLE_TIMING_PAIRS` pairs and the median distance from the lag is at
    most :data:`TITLE_TIMING_SPREAD_S`: an automation system that sends each title
    as its item starts, at any fixed delay.  Titles typed in by hand, or sent at a
    varying delay, do not.
    """
    starts = np.array(
        [
            piece[2]
            for before, piece in itertools.pairwise(pieces)
            if before[0] in ("speech", "silence") and piece[0] == "music"
        ]
    )
    offsets, against = np.array([]), "starts"
    if starts.size:
        offsets = np.array([when - starts[np.argmin(np.abs(starts - when))] for when, _ in titles])
        offsets = offsets[np.abs(offsets) <= TITLE_REACH_SECONDS]
    if offsets.size < TITLE_TIMING_PAIRS:
        reach = TITLE_SOUND_REACH_SECONDS
        sound_offsets = []
        for when, _ in titles:
            lo, hi = _windows_reaching(windows, when - reach, when + reach, longest_window_s)
            at, strength = placement.change_near(
                windows, when, lo, hi - 1, before_s=reach, after_s=reach
            )
            if strength > 0.0:
                sound_offsets.append(when - at)
        sound = np.array(sound_offsets)
        if sound.size > offsets.size:
            offsets, against = sound, "changes"
    if not offsets.size:
        return None
    lag = float(np.median(offsets))
    spread = float(np.median(np.abs(offsets - lag)))
    timing = TitleTiming(windows.stream, len(offsets), lag, spread, against)
    logger.info("%s", timing.describe())
    return timing


def _snap_to_titles(
    pieces: list[tuple[str, str, float, float, int, int]],
    titles: Sequence[tuple[float, str]],
    windows: StreamWindows,
    window_s: float,
    hop_s: float,
) -> list[tuple[str, str, float, float, int, int]]:
    """Move boundaries into a song to the splice at a title change that keeps time.

    With titles that keep time with the audio (:func:`_title_lag`, ``titles``
    already moved by the lag), a boundary from talk or music into music that lies
    within :data:`TITLE_REACH_SECONDS` of a title change (and within
    :func:`_title_reach`) moves to the strongest change of sound the windows
    report within one hop of the title (to the title itself when none does),
    whatever the change it sits on: the families' scores can put a change
    between two songs a second or more into the quieter one, and a song's own
    drum entry a second after the splice can change the sound more than the
    splice does.
    """
    out = list(pieces)
    for j in range(1, len(out)):
        before, after = out[j - 1], out[j]
        if not _into_a_song(before, after):
            continue
        low, high = _title_reach(before, after, window_s)
        near = [when for when, _ in titles if low < when < high]
        if not near:
            continue
        when = min(near, key=lambda t: abs(t - after[2]))
        at_s, strength = placement.change_near(
            windows, when, before[4], after[5], before_s=hop_s, after_s=hop_s
        )
        moved = at_s if strength > 0.0 and low < at_s < high else when
        _move_boundary(out, j, moved, windows)
    return out


def _row_title(kind: str, titles: Sequence[tuple[float, str]], start: float, end: float) -> str:
    """A music row: the title in effect at its middle; speech: one that began during it."""
    if kind == "music":
        return _title_at(titles, 0.5 * (start + end))
    if kind == "speech":
        return next((t for when, t in reversed(titles) if start <= when < end), "")
    return ""


def _title_at(titles: Sequence[tuple[float, str]], at_s: float) -> str:
    change = _change_at(titles, at_s)
    return change[1] if change is not None else ""


def _change_at(titles: Sequence[tuple[float, str]], at_s: float) -> tuple[float, str] | None:
    """The last ``(at_s, title)`` of ``titles`` (in time order) at or before ``at_s``."""
    return next((change for change in reversed(titles) if change[0] <= at_s), None)


def _split_at_titles(
    pieces: list[tuple[str, str, float, float, int, int]],
    titles: Sequence[tuple[float, str]],
    min_seconds: float,
    windows: StreamWindows,
    reach_s: float,
) -> list[tuple[str, str, float, float, int, int]]:
    """Split music and speech pieces where the title changes well inside them.

    Two songs of one family back to back; a song the content classifier hears as
    talk all through (rap) after the talk before it.  With ``reach_s`` > 0 (titles
    that stray from the audio, :attr:`TitleTiming.split_reach_s`) the split is at
    the strongest change of sound the windows report within ``reach_s`` of the
    title instead, when one lies there.
    """
    if not titles:
        return pieces
    out = []
    for piece in pieces:
        kind, family, start, end, a, b = piece
        if kind not in ("music", "speech"):
            out.append(piece)
            continue
        for when, _ in titles:
            if start + min_seconds <= when <= end - min_seconds and start < when < end:
                if reach_s > 0.0:
                    at_s, strength = placement.change_near(
                        windows, when, a, b, before_s=reach_s, after_s=reach_s
                    )
                    inside = start + min_seconds <= at_s <= end - min_seconds and start < at_s < end
                    if strength > 0.0 and inside:
                        when = at_s
                # windows a..b split at the title; counts follow the audio share
                share = (when - start) / (end - start)
                cut = a + round(share * (b - a + 1))
                if not a < cut <= b:
                    continue  # a part would hold no window (min_segment_seconds 0)
                out.append((kind, family, start, when, a, cut - 1))
                start, a = when, cut
        out.append((kind, family, start, end, a, b))
    return out


def _title_changes(titles: Sequence[tuple[float, str]]) -> list[tuple[float, str]]:
    """The ``(at_s, title)`` pairs, in time order, where the title changes.

    A title announced again, as a station does after a reconnect, continues the one
    in effect.
    """
    changes: list[tuple[float, str]] = []
    for when, title in titles:
        if not changes or changes[-1][1] != title:
            changes.append((when, title))
    return changes


def _item_titles(
    titles: Sequence[tuple[float, str]], longest_s: float, end_s: float
) -> set[tuple[float, str]]:
    """The title changes (:func:`_title_changes`) that name one item.

    A title is in effect from its change until the next change or ``end_s``; it
    names one item when that span is at most ``longest_s`` seconds.
    """
    ends = [when for when, _ in titles[1:]] + [end_s]
    return {
        (when, title)
        for (when, title), end in zip(titles, ends, strict=True)
        if title and end - when <= longest_s
    }


def _join_under_titles(
    pieces: list[tuple[str, str, float, float, int, int]],
    titles: Sequence[tuple[float, str]],
    longest_s: float,
    windows: StreamWindows,
    names: Sequence[str],
    longest_window_s: float,
) -> list[tuple[str, str, float, float, int, int]]:
    """Join the pieces of one item's title up to its last music into one music row.

    A track whose windows the model hears as two families (a rock song with a
    quiet acoustic bridge), or partly as talk (a rapper over a sparse beat),
    would otherwise be several rows; under a title that changes with every item
    the title says it is one.  So music and speech pieces next to each other
    under one item's title, from its first up to its last music piece, become
    one music row, with the family whose mean score over all of its windows is
    highest.  Speech after the last music under the title (the talk after the
    song, before the next title) stays, as do silences and outages, which also
    end a run.  So does speech with a splice in it or within a second of its
    ends (:func:`_splice_free` fails; the splice at the title, where a piece
    may begin, does not count): talk between a song and an untitled one, or
    after a title sent early, is talk.
    """
    if not titles or longest_s <= 0:
        return pieces
    items = _item_titles(titles, longest_s, float(windows.end_s[-1]))
    if not items:
        return pieces

    def item_at(piece: tuple[str, str, float, float, int, int]) -> tuple[float, str] | None:
        if piece[0] not in ("music", "speech"):
            return None
        current = _change_at(titles, 0.5 * (piece[2] + piece[3]))
        return current if current in items else None

    under = [item_at(piece) for piece in pieces]
    for k, (kind, _, start, end, _, _) in enumerate(pieces):
        item = under[k]
        if kind == "speech" and item is not None:
            # A piece that begins at the title begins at the item's own splice.
            after_s = start + 1.0 if abs(start - item[0]) < 1e-6 else start - 1.0
            if not _splice_free(windows, after_s, end + 1.0, longest_window_s):
                under[k] = None
    out: list[tuple[str, str, float, float, int, int]] = []
    i = 0
    while i < len(pieces):
        j = i  # pieces i..j: one run under one item's title
        while under[i] is not None and j + 1 < len(pieces) and under[j + 1] == under[i]:
            j += 1
        last = max((k for k in range(i, j + 1) if pieces[k][0] == "music"), default=i)
        if last > i:
            a, b = pieces[i][4], pieces[last][5]
            family = next(p[1] for p in pieces[i : last + 1] if p[0] == "music")
            mean = windows.family_scores[a : b + 1].mean(axis=0) if b >= a else None
            if names and mean is not None and float(mean.max()) > 0.0:
                family = names[int(np.argmax(mean))]
            out.append(("music", family, pieces[i][2], pieces[last][3], a, b))
        else:
            out.append(pieces[i])
        out.extend(pieces[last + 1 : j + 1])
        i = j + 1
    return out


def _short_link(
    windows: StreamWindows, run: _Run, longest_window_s: float, least_windows: int
) -> bool:
    """True when a speech run's windows hold a splice in each half of their audio.

    The talk's start and end lie inside the span of the windows that heard it, and a
    presenter's link between two items begins and ends at a splice (a change of at
    least :data:`SPLICE_CHANGE`); a flicker of the classifier inside a song does not.
    A run of fewer than ``least_windows`` windows (as many as fit in one window's
    length, 6) is never a link: a song whose voice enters with a strong change of
    sound makes such runs a few seconds apart, and kept, they would join the music
    between them into talk.  On the tuning programmes (``--tuning``: seeds 11 and 3 with
    the network, 11 with 2 s fade-outs, ``--rap 0.5`` seed 21 with and without it,
    ``--clips 3`` seeds 41 and 42, ``--short-talk 6 10`` seeds 32 and 33, the latter
    with 2 s fade-outs) the runs this rule drops had 1-5 windows and all fifteen lay
    inside music; the links of 6-10 s had 13-19.
    """
    if run.last - run.first + 1 < least_windows:
        return False
    start_s, end_s = float(windows.start_s[run.first]), float(windows.end_s[run.last])
    middle_s = 0.5 * (start_s + end_s)
    at, strength = _changes_between(windows, start_s, end_s, longest_window_s)
    strong = strength >= SPLICE_CHANGE
    return bool((strong & (at < middle_s)).any() and (strong & (at >= middle_s)).any())


def _changes_between(
    windows: StreamWindows, from_s: float, to_s: float, longest_window_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(change_at_s, change_strength)`` of the changes windows report from ``from_s``
    to ``to_s`` (inclusive), looking only at the windows that can hold them.

    Only the windows of :func:`_windows_reaching` (``start_s`` is in audio order).
    """
    lo, hi = _windows_reaching(windows, from_s, to_s, longest_window_s)
    at, strength = windows.change_at_s[lo:hi], windows.change_strength[lo:hi]
    near = np.isfinite(at) & np.isfinite(strength) & (at >= from_s) & (at <= to_s)
    return at[near], strength[near]


def _windows_reaching(
    windows: StreamWindows, from_s: float, to_s: float, longest_window_s: float
) -> tuple[int, int]:
    """``lo, hi``: windows ``lo .. hi - 1`` are the only ones that can report a change
    from ``from_s`` to ``to_s``, those that start from ``longest_window_s`` before
    ``from_s`` up to ``to_s`` (a window reports a change inside itself)."""
    lo = int(np.searchsorted(windows.start_s, from_s - longest_window_s, side="left"))
    return lo, int(np.searchsorted(windows.start_s, to_s, side="right"))


def _sure_talk(speech_vs_music: np.ndarray, hop_s: float) -> bool:
    """True when a speech run's windows (their :func:`model.placement.speech_vs_music`,
    ``hop_s`` apart) hold :data:`SURE_TALK_SECONDS` of consecutive windows the
    classifier is sure are speech (:data:`SURE_TALK_SHARE`).

    A presenter's link heard clearly is talk even when its splices are soft (a song
    ending quietly, talk over the last bars); a singer or a rap heard as talk inside a
    song leaves the classifier less sure, window after window.
    """
    longest, current = 0, 0
    for sure in (speech_vs_music >= SURE_TALK_SHARE).tolist():
        current = current + 1 if sure else 0
        longest = max(longest, current)
    return longest * hop_s >= SURE_TALK_SECONDS - 1e-9


def _splice_free(
    windows: StreamWindows, from_s: float, to_s: float, longest_window_s: float
) -> bool:
    """True when windows report changes of sound from ``from_s`` to ``to_s``, none of them
    as strong as :data:`SPLICE_CHANGE` (``longest_window_s``: :func:`_changes_between`)."""
    _, strength = _changes_between(windows, from_s, to_s, longest_window_s)
    return bool(strength.size) and float(strength.max()) < SPLICE_CHANGE


def _dead_air(stream: str, events: Sequence[Event], windows: StreamWindows | None) -> list[DeadAir]:
    """Dead-air incidents: each ``silence_start`` with its ``silence_end``.

    A ``source_down`` during the silence ends the incident there: what follows is an
    outage (its own as-run row), not dead air, even though the worker's silence timer
    only hears the audio come back after it.
    """
    incidents = []
    pending: Event | None = None
    ignore_end = False

    def incident(since_s: float, end_s: float | None, duration: float, at: Event) -> DeadAir:
        if windows is not None:
            start_time = windows.wall_time(since_s)
        else:
            start_time = at.time - (at.at_s - since_s)
        return DeadAir(
            stream=stream,
            start_time=start_time,
            end_time=None if end_s is None else start_time + duration,
            duration_s=duration,
            audio_start_s=since_s,
            audio_end_s=end_s,
            level_dbfs=float(at.fields.get("level_dbfs", float("nan"))),
        )

    for event in sorted(events, key=lambda e: (e.at_s, e.time)):
        if event.event == "silence_start":
            pending, ignore_end = event, False
        elif event.event == "source_down" and pending is not None:
            since_s = float(pending.fields["silence_since_s"])
            end_s = max(event.at_s, since_s)
            incidents.append(incident(since_s, end_s, end_s - since_s, pending))
            pending, ignore_end = None, True
        elif event.event == "silence_end" and pending is not None:
            since_s = float(pending.fields["silence_since_s"])
            duration = float(event.fields["duration_s"])
            incidents.append(incident(since_s, event.at_s, duration, pending))
            pending = None
        elif event.event == "silence_end" and ignore_end:
            ignore_end = False
    if pending is not None:
        since_s = float(pending.fields["silence_since_s"])
        last_s = float(windows.end_s[-1]) if windows is not None else pending.at_s
        incidents.append(incident(since_s, None, max(last_s - since_s, 0.0), pending))
    return incidents


def build_asrun(
    connection: sqlite3.Connection,
    *,
    stream: str | None = None,
    since: float | None = None,
    until: float | None = None,
    settings: AsRunSettings | None = None,
    families: Families = DEFAULT_FAMILIES,
) -> AsRun:
    """The as-run log of a recording: rows per stream, dead air and music time per family.

    Parameters
    ----------
    connection : sqlite3.Connection
        A recording (:func:`monitor.store.open_database`, read-only is enough).
    stream : str or None
        Only this stream (``None``: every stream in the range).
    since, until : float or None
        Unix times: updates with ``since <= published_time < until`` and events
        with ``since <= time < until``.
    settings : AsRunSettings or None
    families : Families
    """
    settings = settings or AsRunSettings()
    entries: list[AsRunEntry] = []
    dead_air: list[DeadAir] = []
    title_timing: list[TitleTiming] = []
    for name in _streams(connection, stream, since, until):
        timelines = read_stream_windows(
            connection, name, since=since, until=until, families=families
        )
        events = list(read_events(connection, stream=name, since=since, until=until))
        for windows, own in zip(timelines, _events_per_timeline(timelines, events), strict=True):
            rows, timing = _segment_stream(windows, own, settings, families)
            entries.extend(rows)
            if timing is not None:
                title_timing.append(timing)
            dead_air.extend(_dead_air(name, own, windows))
        if not timelines:
            dead_air.extend(_dead_air(name, events, None))
    family_seconds: dict[str, float] = {}
    for entry in entries:
        if entry.kind == "music":
            key = entry.family or "(none)"
            family_seconds[key] = family_seconds.get(key, 0.0) + entry.duration_s
    ordered = dict(sorted(family_seconds.items(), key=lambda kv: -kv[1]))
    return AsRun(tuple(entries), tuple(dead_air), ordered, settings, families, tuple(title_timing))


def load_asrun(
    db_path: str | os.PathLike[str],
    *,
    stream: str | None = None,
    since: float | None = None,
    until: float | None = None,
    settings: AsRunSettings | None = None,
    families: Families = DEFAULT_FAMILIES,
) -> AsRun:
    """:func:`build_asrun` over a database file, opened read-only.

    Raises
    ------
    monitor.store.StoreError
        Missing, unreadable or damaged database.
    """
    connection = open_database(db_path, read_only=True)
    try:
        return build_asrun(
            connection,
            stream=stream,
            since=since,
            until=until,
            settings=settings,
            families=families,
        )
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{db_path}: cannot read the recording ({exc})") from None
    finally:
        connection.close()


def _events_per_timeline(
    timelines: Sequence[StreamWindows], events: Sequence[Event]
) -> list[list[Event]]:
    """Give each event to the timeline it belongs to: the last one captured before it."""
    if len(timelines) <= 1:
        return [list(events)] * len(timelines)
    firsts = [float(t.capture_time[0] - (t.end_s[0] - t.start_s[0])) for t in timelines]
    out: list[list[Event]] = [[] for _ in timelines]
    for event in events:
        index = max([i for i, f in enumerate(firsts) if f <= event.time] or [0])
        out[index].append(event)
    return out


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def _write_csv(
    path: str | os.PathLike[str] | TextIO,
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
) -> None:
    if not isinstance(path, str | os.PathLike):  # an open text stream
        writer = csv.writer(path)
        writer.writerow(header)
        writer.writerows(rows)
        return
    with open(Path(path), "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_asrun_csv(
    asrun: AsRun,
    path: str | os.PathLike[str] | TextIO,
    *,
    format_time: Callable[[float], str],
) -> None:
    """Write the as-run log, one row per entry (columns :data:`ASRUN_COLUMNS`).

    ``path`` is a file or an open text stream.

    ``format_time(unix_time) -> str`` writes ``start`` and ``end`` (ISO 8601 with offset).
    """
    _write_csv(
        path,
        ASRUN_COLUMNS,
        (
            [
                e.stream,
                format_time(e.start_time),
                format_time(e.end_time),
                f"{e.duration_s:.3f}",
                e.kind,
                e.family,
                e.title,
                e.top_tag,
                e.windows,
                f"{e.audio_start_s:.3f}",
                f"{e.audio_end_s:.3f}",
            ]
            for e in asrun.entries
        ),
    )


def write_dead_air_csv(
    asrun: AsRun, path: str | os.PathLike[str], *, format_time: Callable[[float], str]
) -> None:
    """Write the dead-air incidents, columns :data:`DEAD_AIR_COLUMNS` (no end: still silent)."""
    _write_csv(
        path,
        DEAD_AIR_COLUMNS,
        (
            [
                d.stream,
                format_time(d.start_time),
                "" if d.end_time is None else format_time(d.end_time),
                f"{d.duration_s:.3f}",
                f"{d.audio_start_s:.3f}",
                "" if d.audio_end_s is None else f"{d.audio_end_s:.3f}",
                f"{d.level_dbfs:.1f}",
            ]
            for d in asrun.dead_air
        ),
    )
