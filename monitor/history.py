"""The dashboards' history model: every stream's recent updates, dominant tag and health.

Plain Python with no rendering and no sockets, shared by the terminal view
(:mod:`tools.dashboard`), the web page (:mod:`tools.web`) and the live demo
(:mod:`tools.live`)::

    >>> model = DashboardModel(history_seconds=60.0)
    >>> for update in subscribe(endpoints):  # doctest: +SKIP
    ...     change = model.add(update)       # a DominantChange, or None
    ...     health = model[update.stream].health(now=model.clock())

:class:`StreamHistory` keeps one stream's updates over the last
``history_seconds`` of audio time (a ring buffer), the moments its dominant
(smoothed top) tag changed, and what its health figures need; a ``seq`` going
backwards means the stream started over.  :class:`DashboardModel` holds one
per stream behind a lock, so a subscriber thread and a drawing thread can share it.

Each stream also shows what it is playing: the latest update's ``content``
(music, speech or silence) and ``level_dbfs``, the now-playing ``title`` and
whether it is in dead air or its source is down, from the worker's events
(:meth:`DashboardModel.add_event`), of which the last :data:`MAX_EVENTS` are kept.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from protocol import Event, TagUpdate

__all__ = [
    "BEHIND_AFTER_S",
    "FORGET_AFTER_S",
    "HISTORY_SECONDS",
    "MAX_RECENT_EVENTS",
    "TOP_TAGS",
    "DashboardModel",
    "DominantChange",
    "StreamHealth",
    "StreamHistory",
    "began_at",
    "check_positive",
    "is_behind",
]

logger = logging.getLogger(__name__)

#: Seconds of audio kept per stream unless told otherwise (``web.history_seconds``).
HISTORY_SECONDS: Final = 60.0
#: Upper bound on the updates kept per stream, whatever the hop (40 updates/s for a minute).
MAX_HISTORY_ENTRIES: Final = 2400
#: Dominant-tag changes remembered per stream.
MAX_CHANGES: Final = 50
#: Events (silence, content changes, titles, source down/up) remembered per stream.
MAX_EVENTS: Final = 20
#: Events of all streams remembered for the dashboards' event feed.
MAX_RECENT_EVENTS: Final = 50
#: A new dominant tag must lead the current one by this much (smoothed), so two
#: tags running neck and neck do not flood the change list.
SWITCH_MARGIN: Final = 0.01
#: An update older than this many hops (and at least ``_MIN_LATE_S``) makes a stream "late".
LATE_AFTER_HOPS: Final = 4.0
_MIN_LATE_S: Final = 1.0
#: Seconds without an update after which a stream is "stale".
STALE_AFTER_S: Final = 10.0
#: An update further behind its stream than this (its ``behind_s``: the stream's audio the
#: worker had beyond the window) says the worker is behind: a capture block, the hop's
#: rounding and streaming mode's 1.17 s look-ahead stay under it.
BEHIND_AFTER_S: Final = 2.0
#: Seconds without an update after which :meth:`DashboardModel.forget_idle` drops a stream.
FORGET_AFTER_S: Final = 600.0
#: Latencies kept per stream for the median.
_LATENCY_WINDOW: Final = 64
#: Tags :meth:`StreamHistory.top_tags` gives unless told otherwise.
TOP_TAGS: Final = 8


@dataclasses.dataclass(frozen=True)
class DominantChange:
    """The smoothed top tag of a stream changed (or was first seen).

    Attributes
    ----------
    stream : str
    end_s : float
        Audio time (end of the window) of the update where ``tag`` took over.
    published_time : float
        Unix time at which that update was published.
    previous : str or None
        The dominant tag before; ``None`` for the stream's first update.
    tag : str
        The new dominant tag.
    probability : float in [0, 1]
        Its smoothed probability at that moment.
    """

    stream: str
    end_s: float
    published_time: float
    previous: str | None
    tag: str
    probability: float

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class StreamHealth:
    """How well a stream is doing, as seen by this subscriber.

    Attributes
    ----------
    status : {"ok", "behind", "late", "stale"}
        ``behind``: updates come, but the worker tags the stream more than
        ``BEHIND_AFTER_S`` behind its audio (it has more than it can tag);
        ``late``: no update for more than ``LATE_AFTER_HOPS`` hops; ``stale``:
        none for more than ``STALE_AFTER_S`` seconds.
    age_s : float >= 0
        Seconds since the last update was received here.
    latency_s : float
        Capture-to-publish latency of the last update.
    latency_p50_s : float
        Median of the last 64 latencies.
    hop_s : float or None
        Median audio seconds between updates; ``None`` before two updates.
    updates : int
        Updates received since the stream (re)started.
    gaps, dropped : int
        The worker's counters (audio blocks missing or dropped on the way in).
    missed : int
        Updates this subscriber never received (holes in ``seq``).
    restarts : int
        Times ``seq`` went backwards: the worker or the stream started over.
    behind_s : float >= 0
        How far behind the stream the worker was at the last update (its ``behind_s``;
        0 from a worker that does not say).
    shed : int
        Windows of the stream the worker did not tag because it was behind.
    """

    status: str
    age_s: float
    latency_s: float
    latency_p50_s: float
    hop_s: float | None
    updates: int
    gaps: int
    dropped: int
    missed: int
    restarts: int
    behind_s: float = 0.0
    shed: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def began_at(event: Event, *, window_end_s: float | None = None) -> tuple[float, float]:
    """``(Unix time, audio time)`` at which what ``event`` reports began, as near as
    can be said; the views show these.

    - ``silence_start`` is published once the quiet has lasted ``silence_seconds``
      (its ``at_s`` less its ``silence_since_s``): the dead air began that long before
      its ``time``, at ``silence_since_s``.
    - ``content_change`` has its ``at_s`` where the content changed, seconds before the
      window whose update confirmed it.  With ``window_end_s``, that window's end (the
      stream's latest update when the event came: the worker publishes an event right
      after the update of its window), the change lies ``window_end_s - at_s`` before
      its ``time`` (trusted up to :data:`HISTORY_SECONDS`).
    - Any other event, or without ``window_end_s``: its ``time`` (when the worker or
      the streamer noticed it) and ``at_s``.

    Both are late by at most the worker's lag, a hop or so.
    """
    lag: float | None = None
    began_s = event.at_s
    if event.event == "silence_start":
        since = event.fields.get("silence_since_s")
        if isinstance(since, int | float) and math.isfinite(since):
            lag, began_s = event.at_s - float(since), float(since)
    elif event.event == "content_change" and window_end_s is not None:
        lag = window_end_s - event.at_s
    if lag is None or not 0.0 <= lag <= HISTORY_SECONDS:
        return event.time, event.at_s
    return event.time - lag, began_s


def is_behind(update: TagUpdate) -> bool:
    """Whether ``update`` says the worker tags its stream more than :data:`BEHIND_AFTER_S`
    behind its audio (its ``behind_s``; a worker that does not say is not behind)."""
    return (update.behind_s or 0.0) > BEHIND_AFTER_S


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0 (``name`` in the message)."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} must be a positive number")


class StreamHistory:
    """One stream's recent updates (a ring buffer over audio time), dominant tag and health.

    Parameters
    ----------
    stream : str
        The stream id.
    history_seconds : float > 0
        Audio seconds of updates kept, counted back from the newest ``end_s``.
    max_entries : int > 0
        Hard bound on the updates kept, whatever the hop.
    switch_margin : float >= 0
        Lead (in smoothed probability) a tag needs over the dominant one to replace it.
    continue_restarts : bool
        A stream that starts over with the same tags continues where it was:
        its ``seq`` and audio times are counted on from the last update (its
        first window a hop after the last one), the
        history and the dominant tag are kept and ``loops`` counts it (a file
        played in a loop, as ``tools.live``'s demo is).

    Notes
    -----
    Not thread-safe on its own: :class:`DashboardModel` serialises access.
    ``seq`` going backwards, ``end_s`` going backwards or a different tag list
    means the stream started over (worker restart, new model): the history is
    cleared and ``restarts`` counts it (unless ``continue_restarts``).
    """

    def __init__(
        self,
        stream: str,
        *,
        history_seconds: float = HISTORY_SECONDS,
        max_entries: int = MAX_HISTORY_ENTRIES,
        switch_margin: float = SWITCH_MARGIN,
        continue_restarts: bool = False,
    ) -> None:
        check_positive("history_seconds", history_seconds)
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries={max_entries!r} must be a positive integer")
        if not switch_margin >= 0:
            raise ValueError(f"switch_margin={switch_margin!r} must be >= 0")
        self.stream = stream
        self.history_seconds = float(history_seconds)
        self.switch_margin = float(switch_margin)
        self.continue_restarts = continue_restarts
        #: Added to a continued stream's ``seq`` and audio times (``continue_restarts``).
        self._seq_offset = 0
        self._time_offset_s = 0.0
        #: Times the stream started over and was continued (``continue_restarts``).
        self.loops = 0
        self.entries: collections.deque[TagUpdate] = collections.deque(maxlen=max_entries)
        self.changes: collections.deque[DominantChange] = collections.deque(maxlen=MAX_CHANGES)
        self.latest: TagUpdate | None = None
        self.received_at = float("-inf")
        self.updates = 0
        self.missed = 0
        self.restarts = 0
        self._dominant: int | None = None
        self._latencies: collections.deque[float] = collections.deque(maxlen=_LATENCY_WINDOW)
        #: The worker's events of this stream, newest last.
        self.events: collections.deque[Event] = collections.deque(maxlen=MAX_EVENTS)
        #: :func:`began_at` of each of :attr:`events`, found when it came.
        self._began: collections.deque[tuple[float, float]] = collections.deque(maxlen=MAX_EVENTS)
        #: The now-playing title (``now_playing`` events), or None.
        self.title: str | None = None
        #: In dead air (between ``silence_start`` and ``silence_end``).
        self.silent = False
        #: The streamer lost its source (between ``source_down`` and ``source_up``).
        self.source_down = False

    @property
    def content(self) -> str | None:
        """What the latest window held (music, speech, silence), if the worker said."""
        return self.latest.content if self.latest is not None else None

    @property
    def level_dbfs(self) -> float | None:
        """The latest window's level, if the worker said."""
        return self.latest.level_dbfs if self.latest is not None else None

    def add_event(self, event: Event) -> None:
        """Record one of the worker's events of this stream."""
        if event.stream != self.stream:
            raise ValueError(f"event of stream={event.stream!r} added to {self.stream!r}")
        latest = self.latest  # kept shifted by _time_offset_s; the events are not
        window_end_s = None if latest is None else latest.end_s - self._time_offset_s
        self.events.append(event)
        self._began.append(began_at(event, window_end_s=window_end_s))
        if event.event == "now_playing":
            self.title = str(event.fields["title"])
        elif event.event in ("silence_start", "silence_end"):
            self.silent = event.event == "silence_start"
        elif event.event in ("source_down", "source_up"):
            self.source_down = event.event == "source_down"

    def began(self, event: Event) -> tuple[float, float]:
        """``(Unix time, audio time)`` at which what ``event``, one of :attr:`events`,
        reports began (:func:`began_at`, with the window it came after)."""
        for kept, began in zip(reversed(self.events), reversed(self._began), strict=True):
            if kept is event:
                return began
        return began_at(event)

    def event_json(self, event: Event) -> dict[str, Any]:
        """``event``'s JSON object with ``began_time`` and ``began_at_s`` (:meth:`began`)."""
        began_time, began_s = self.began(event)
        return {**event.to_json_dict(), "began_time": began_time, "began_at_s": began_s}

    def status_json(self) -> dict[str, Any]:
        """Content, level, title, dead air, source state and recent events, JSON-ready."""
        return {
            "content": self.content,
            "content_probabilities": (
                dict(self.latest.content_probabilities)
                if self.latest is not None and self.latest.content_probabilities is not None
                else None
            ),
            "level_dbfs": self.level_dbfs,
            "title": self.title,
            "silent": self.silent,
            "source_down": self.source_down,
            "events": [self.event_json(e) for e in self.events],
        }

    @property
    def tags(self) -> tuple[str, ...]:
        return self.latest.tags if self.latest is not None else ()

    @property
    def dominant(self) -> str | None:
        """The current dominant (smoothed top) tag, with hysteresis."""
        return None if self._dominant is None else self.tags[self._dominant]

    def add(self, update: TagUpdate, *, received_at: float) -> DominantChange | None:
        """Record ``update``; return the dominant-tag change it caused, if any.

        Parameters
        ----------
        update : TagUpdate
            An update of this stream.
        received_at : float
            ``time.monotonic()`` when it was received (the health's clock).
        """
        if update.stream != self.stream:
            raise ValueError(f"update of stream={update.stream!r} added to {self.stream!r}")
        latest = self.latest
        raw = update
        if self._seq_offset or self._time_offset_s:
            update = self._shifted(raw, self._seq_offset, self._time_offset_s)
        if (
            latest is not None
            and self.continue_restarts
            and update.tags == latest.tags
            and (update.seq <= latest.seq or update.end_s < latest.end_s)
        ):
            # the same stream from the start again: its first window follows the last one
            # a hop later, as if the audio went on (no blank in the sparklines)
            self._seq_offset = latest.seq + 1 - raw.seq
            self._time_offset_s = latest.end_s + (self.hop_s() or 0.5) - raw.end_s
            update = self._shifted(raw, self._seq_offset, self._time_offset_s)
            self.loops += 1
            logger.info("stream continued stream=%s loops=%d", self.stream, self.loops)
        if latest is not None:
            if (
                update.seq <= latest.seq
                or update.end_s < latest.end_s
                or update.tags != latest.tags
            ):
                logger.info(
                    "stream restarted stream=%s seq=%d previous_seq=%d",
                    self.stream,
                    update.seq,
                    latest.seq,
                )
                self._reset()
                self.restarts += 1
            else:
                self.missed += update.seq - latest.seq - 1
        self.latest = update
        self.received_at = received_at
        self.updates += 1
        self._latencies.append(update.latency_s)
        self.entries.append(update)
        horizon = update.end_s - self.history_seconds
        while self.entries and self.entries[0].end_s < horizon:
            self.entries.popleft()
        return self._update_dominant(update)

    @staticmethod
    def _shifted(update: TagUpdate, seq: int, seconds: float) -> TagUpdate:
        return dataclasses.replace(
            update,
            seq=update.seq + seq,
            start_s=update.start_s + seconds,
            end_s=update.end_s + seconds,
        )

    def _reset(self) -> None:
        self._seq_offset = 0
        self._time_offset_s = 0.0
        self.entries.clear()
        self._latencies.clear()
        self._dominant = None
        self.updates = 0

    def _update_dominant(self, update: TagUpdate) -> DominantChange | None:
        if not update.tags:
            return None
        top = int(np.argmax(update.smoothed))
        current = self._dominant
        if current is not None and (
            top == current or update.smoothed[top] < update.smoothed[current] + self.switch_margin
        ):
            return None
        self._dominant = top
        change = DominantChange(
            stream=self.stream,
            end_s=float(update.end_s),
            published_time=float(update.published_time),
            previous=None if current is None else update.tags[current],
            tag=update.tags[top],
            probability=float(update.smoothed[top]),
        )
        self.changes.append(change)
        return change

    def top_tags(self, k: int = TOP_TAGS) -> list[tuple[str, float]]:
        """The ``k`` highest smoothed tags of the latest update, highest first."""
        if self.latest is None:
            return []
        order = np.argsort(-self.latest.smoothed, kind="stable")[:k]
        return [(self.tags[i], float(self.latest.smoothed[i])) for i in order]

    def series(self, tag: str, *, smoothed: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(end_s, values)`` of one tag over the kept history, oldest first.

        Returns
        -------
        end_s : np.ndarray [shape=(n,)]
        values : np.ndarray [shape=(n,), float32 in [0, 1]]
        """
        index = self.tags.index(tag)
        times = np.array([u.end_s for u in self.entries], dtype=np.float64)
        values = np.array(
            [(u.smoothed if smoothed else u.probabilities)[index] for u in self.entries],
            dtype=np.float32,
        )
        return times, values

    def matrix(self, *, smoothed: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(end_s, values)`` of every tag: ``values`` has shape ``(n_updates, n_tags)``."""
        times = np.array([u.end_s for u in self.entries], dtype=np.float64)
        rows = [u.smoothed if smoothed else u.probabilities for u in self.entries]
        values = np.stack(rows) if rows else np.zeros((0, len(self.tags)), dtype=np.float32)
        return times, values

    def hop_s(self) -> float | None:
        """Median audio seconds between consecutive kept updates."""
        ends = [u.end_s for u in self.entries]
        if len(ends) < 2:
            return None
        return float(statistics.median(np.diff(ends)))

    def health(self, *, now: float) -> StreamHealth:
        """The stream's health at ``now`` (``time.monotonic()``)."""
        latest = self.latest
        if latest is None:
            raise ValueError(f"stream {self.stream!r} has no update yet")
        age_s = max(0.0, now - self.received_at)
        hop_s = self.hop_s()
        late_after_s = max(_MIN_LATE_S, LATE_AFTER_HOPS * (hop_s or 0.5))
        if age_s > STALE_AFTER_S:
            status = "stale"
        elif age_s > late_after_s:
            status = "late"
        elif is_behind(latest):
            status = "behind"
        else:
            status = "ok"
        return StreamHealth(
            status=status,
            age_s=age_s,
            latency_s=latest.latency_s,
            latency_p50_s=float(statistics.median(self._latencies)),
            hop_s=hop_s,
            updates=self.updates,
            gaps=latest.gaps,
            dropped=latest.dropped,
            missed=self.missed,
            restarts=self.restarts,
            behind_s=latest.behind_s or 0.0,
            shed=latest.shed,
        )


class DashboardModel:
    """Every stream's :class:`StreamHistory`, safe to share between threads.

    Parameters
    ----------
    history_seconds : float > 0
        Audio seconds of history kept per stream.
    clock : callable
        Returns the current time for the health figures (default ``time.monotonic``).
    continue_restarts : bool
        Streams that start over continue their history (see :class:`StreamHistory`).

    Attributes
    ----------
    recent_events : deque of protocol.Event
        The last :data:`MAX_RECENT_EVENTS` events of every stream, newest last
        (the dashboards' event feed).

    Examples
    --------
    >>> model = DashboardModel()
    >>> for update in subscribe(endpoints):  # doctest: +SKIP
    ...     change = model.add(update)
    """

    def __init__(
        self,
        *,
        history_seconds: float = HISTORY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        continue_restarts: bool = False,
    ) -> None:
        check_positive("history_seconds", history_seconds)
        self.history_seconds = float(history_seconds)
        self.clock = clock
        self.continue_restarts = continue_restarts
        self.lock = threading.RLock()
        self._streams: dict[str, StreamHistory] = {}
        self.recent_events: collections.deque[Event] = collections.deque(maxlen=MAX_RECENT_EVENTS)

    def _history(self, stream: str) -> StreamHistory:
        history = self._streams.get(stream)
        if history is None:
            history = StreamHistory(
                stream,
                history_seconds=self.history_seconds,
                continue_restarts=self.continue_restarts,
            )
            self._streams[stream] = history
        return history

    def add(self, update: TagUpdate) -> DominantChange | None:
        """Record an update; return the dominant-tag change it caused, if any."""
        with self.lock:
            if update.stream not in self._streams:
                logger.info("new stream stream=%s model=%s", update.stream, update.model)
            return self._history(update.stream).add(update, received_at=self.clock())

    def add_event(self, event: Event) -> None:
        """Record one of the worker's events (a stream not seen yet is added)."""
        with self.lock:
            self._history(event.stream).add_event(event)
            self.recent_events.append(event)

    def began(self, event: Event) -> tuple[float, float]:
        """``(Unix time, audio time)`` at which what ``event`` reports began
        (:meth:`StreamHistory.began`; :func:`began_at` once its stream forgot it)."""
        with self.lock:
            history = self._streams.get(event.stream)
            return began_at(event) if history is None else history.began(event)

    def streams(self) -> list[str]:
        """Stream ids, sorted."""
        with self.lock:
            return sorted(self._streams)

    def __getitem__(self, stream: str) -> StreamHistory:
        with self.lock:
            return self._streams[stream]

    def __contains__(self, stream: object) -> bool:
        with self.lock:
            return stream in self._streams

    def __len__(self) -> int:
        with self.lock:
            return len(self._streams)

    def forget_idle(self, *, idle_s: float = FORGET_AFTER_S) -> list[str]:
        """Drop the streams without an update for ``idle_s`` seconds; return their ids."""
        with self.lock:
            now = self.clock()
            gone = [s for s, h in self._streams.items() if now - h.received_at > idle_s]
            for stream in gone:
                del self._streams[stream]
                logger.info("forgot idle stream stream=%s idle_s=%.0f", stream, idle_s)
            return gone
