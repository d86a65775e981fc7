"""Terminal dashboard: live tags, a one-minute history and the health of every stream.

    python -m tools.dashboard [--endpoint E ...] [--stream ID ...] [--top K]
                              [--history-seconds S] [--count N] [--config PATH] [--traceback]

Subscribes to one or more workers (``[subscribe] endpoints`` in ``config.toml``
by default) and draws, per stream, the top tags (smoothed) as bars, a sparkline
of each of them over the last ``web.history_seconds`` of audio, the moments the
dominant tag changed, and the stream's health: how long ago the last update
came, its latency, and the gaps, drops and missed updates so far.

The data model (:class:`StreamHistory`, :class:`DashboardModel`) is plain
Python with no rendering, shared with the web dashboard (:mod:`tools.web`);
:func:`render_dashboard` turns it into a ``rich`` renderable, which
:func:`run_dashboard` keeps on screen with ``rich.live``.  ``tools.live`` uses
the same view.

Exit status (:class:`ExitStatus`): 0 done (``--count`` reached, Ctrl-C or
SIGTERM), 1 unexpected error, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import enum
import logging
import math
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import Any, Final, TextIO

import numpy as np
import zmq

from config import ConfigError, load_config
from protocol import TagUpdate

__all__ = [
    "DashboardModel",
    "DominantChange",
    "ExitStatus",
    "StreamHealth",
    "StreamHistory",
    "main",
    "render_dashboard",
    "run_dashboard",
    "sparkline",
]

logger = logging.getLogger(__name__)

#: Seconds of audio kept per stream unless told otherwise (``web.history_seconds``).
HISTORY_SECONDS: Final = 60.0
#: Upper bound on the updates kept per stream, whatever the hop (40 updates/s for a minute).
MAX_HISTORY_ENTRIES: Final = 2400
#: Dominant-tag changes remembered per stream.
MAX_CHANGES: Final = 50
#: A new dominant tag must lead the current one by this much (smoothed), so two
#: tags running neck and neck do not flood the change list.
SWITCH_MARGIN: Final = 0.01
#: An update older than this many hops (and at least ``_MIN_LATE_S``) makes a stream "late".
LATE_AFTER_HOPS: Final = 4.0
_MIN_LATE_S: Final = 1.0
#: Seconds without an update after which a stream is "stale".
STALE_AFTER_S: Final = 10.0
#: Seconds without an update after which :meth:`DashboardModel.forget_idle` drops a stream.
FORGET_AFTER_S: Final = 600.0
#: Latencies kept per stream for the median.
_LATENCY_WINDOW: Final = 64
TOP_TAGS: Final = 8
BAR_WIDTH: Final = 24
SPARK_COLUMNS: Final = 30
#: Smallest value a sparkline's full block stands for, so noise near 0 stays flat.
_MIN_SPARK_SCALE: Final = 0.05
_SPARKS: Final = " ▁▂▃▄▅▆▇█"
_STATUS_STYLE: Final = {"ok": "green", "late": "yellow", "stale": "red"}


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2


# ---------------------------------------------------------------------------
# Data model: no rendering, no sockets.
# ---------------------------------------------------------------------------


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
    status : {"ok", "late", "stale"}
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

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_positive(name: str, value: float) -> None:
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

    Notes
    -----
    Not thread-safe on its own: :class:`DashboardModel` serialises access.
    ``seq`` going backwards, ``end_s`` going backwards or a different tag list
    means the stream started over (worker restart, new model): the history is
    cleared and ``restarts`` counts it.
    """

    def __init__(
        self,
        stream: str,
        *,
        history_seconds: float = HISTORY_SECONDS,
        max_entries: int = MAX_HISTORY_ENTRIES,
        switch_margin: float = SWITCH_MARGIN,
    ) -> None:
        _check_positive("history_seconds", history_seconds)
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries={max_entries!r} must be a positive integer")
        if not switch_margin >= 0:
            raise ValueError(f"switch_margin={switch_margin!r} must be >= 0")
        self.stream = stream
        self.history_seconds = float(history_seconds)
        self.switch_margin = float(switch_margin)
        self.entries: collections.deque[TagUpdate] = collections.deque(maxlen=max_entries)
        self.changes: collections.deque[DominantChange] = collections.deque(maxlen=MAX_CHANGES)
        self.latest: TagUpdate | None = None
        self.received_at = float("-inf")
        self.updates = 0
        self.missed = 0
        self.restarts = 0
        self._dominant: int | None = None
        self._latencies: collections.deque[float] = collections.deque(maxlen=_LATENCY_WINDOW)

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

    def _reset(self) -> None:
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
        )


class DashboardModel:
    """Every stream's :class:`StreamHistory`, safe to share between threads.

    Parameters
    ----------
    history_seconds : float > 0
        Audio seconds of history kept per stream.
    clock : callable
        Returns the current time for the health figures (default ``time.monotonic``).

    Examples
    --------
    >>> model = DashboardModel()
    >>> for update in subscribe(endpoints):  # doctest: +SKIP
    ...     change = model.add(update)
    """

    def __init__(
        self, *, history_seconds: float = HISTORY_SECONDS, clock: Any = time.monotonic
    ) -> None:
        _check_positive("history_seconds", history_seconds)
        self.history_seconds = float(history_seconds)
        self.clock = clock
        self.lock = threading.RLock()
        self._streams: dict[str, StreamHistory] = {}

    def add(self, update: TagUpdate) -> DominantChange | None:
        """Record an update; return the dominant-tag change it caused, if any."""
        with self.lock:
            history = self._streams.get(update.stream)
            if history is None:
                history = StreamHistory(update.stream, history_seconds=self.history_seconds)
                self._streams[update.stream] = history
                logger.info("new stream stream=%s model=%s", update.stream, update.model)
            return history.add(update, received_at=self.clock())

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


# ---------------------------------------------------------------------------
# Rendering (rich)
# ---------------------------------------------------------------------------


def sparkline(
    times: np.ndarray,
    values: np.ndarray,
    *,
    start_s: float,
    end_s: float,
    columns: int,
    scale: float = 1.0,
) -> str:
    """Values over time as ``columns`` block characters (blank: no data in that slice).

    Parameters
    ----------
    times : np.ndarray [shape=(n,)]
        Time of each value, seconds.
    values : np.ndarray [shape=(n,)]
        Values >= 0.
    start_s, end_s : float, end_s > start_s
        The time span drawn; times outside it are clipped to the first or last column.
    columns : int > 0
    scale : float > 0
        The value drawn as a full block (larger values are drawn full).

    Returns
    -------
    str [len columns]
        Each column shows the largest value whose time falls in its slice.
    """
    if columns < 1 or not end_s > start_s:
        raise ValueError(f"columns={columns} must be >= 1 and end_s={end_s} > start_s={start_s}")
    _check_positive("scale", scale)
    levels = np.full(columns, -1.0)
    slots = ((np.asarray(times) - start_s) / (end_s - start_s) * columns).astype(int)
    for slot, value in zip(np.clip(slots, 0, columns - 1), values, strict=True):
        levels[slot] = max(levels[slot], float(value))
    top = len(_SPARKS) - 1
    return "".join(
        " " if level < 0 else _SPARKS[max(1, round(min(level / scale, 1.0) * top))]
        for level in levels
    )


def _health_text(health: StreamHealth) -> Any:
    from rich.text import Text

    text = Text()
    text.append(f"● {health.status}", style=f"bold {_STATUS_STYLE[health.status]}")
    text.append(f"  updated {health.age_s:.1f} s ago")
    text.append(
        f" · latency {health.latency_s * 1000:.0f} ms (p50 {health.latency_p50_s * 1000:.0f})"
    )
    for name in ("gaps", "dropped", "missed", "restarts"):
        value = getattr(health, name)
        text.append(f" · {name} {value}", style="bold red" if value else "")
    return text


def _stream_panel(history: StreamHistory, *, now: float, top_k: int, columns: int) -> Any:
    from rich.bar import Bar
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    latest = history.latest
    assert latest is not None
    end = latest.end_s
    start = end - history.history_seconds
    table = Table(box=None, pad_edge=False, expand=False)
    table.add_column("tag", style="bold", no_wrap=True)
    table.add_column("p", justify="right")
    table.add_column("now", no_wrap=True, width=BAR_WIDTH)
    table.add_column(f"last {history.history_seconds:g} s", no_wrap=True, style="cyan")
    # the sparklines' full block is the largest value shown, not 1.0
    rows = [(tag, p, *history.series(tag)) for tag, p in history.top_tags(top_k)]
    # one scale for all rows of a stream, so that their sparklines compare
    scale = max([_MIN_SPARK_SCALE, *(float(values.max()) for *_, values in rows if len(values))])
    for tag, p, times, values in rows:
        table.add_row(
            tag,
            f"{p:.2f}",
            Bar(size=1.0, begin=0.0, end=p, width=BAR_WIDTH, color="green"),
            sparkline(times, values, start_s=start, end_s=end, columns=columns, scale=scale),
        )
    changes = Text("dominant: ", style="dim")
    recent = list(history.changes)[-3:]
    for i, change in enumerate(reversed(recent)):
        if i:
            changes.append("  ←  ", style="dim")
        changes.append(change.tag, style="bold" if i == 0 else "")
        changes.append(f" @{change.end_s:.1f}s", style="dim")
    from rich.console import Group

    title = Text(history.stream, style="bold magenta")
    title.append(f"  {latest.model}  {latest.start_s:.1f}-{latest.end_s:.1f} s", style="dim")
    return Panel(
        Group(table, changes, _health_text(history.health(now=now))),
        title=title,
        title_align="left",
    )


def render_dashboard(
    model: DashboardModel,
    *,
    title: str = "tagstream dashboard",
    top_k: int = TOP_TAGS,
    columns: int = SPARK_COLUMNS,
    now: float | None = None,
) -> Any:
    """A rich renderable of every stream in ``model``: bars, sparklines, changes, health.

    Parameters
    ----------
    model : DashboardModel
    title : str
        The header line starts with it: ``"<title> - <stream>, <stream>"``.
    top_k : int > 0
        Tags shown per stream.
    columns : int > 0
        Width of the history sparklines.
    now : float or None
        ``model.clock()`` time for the health figures (default: now).
    """
    from rich.console import Group
    from rich.text import Text

    with model.lock:
        streams = model.streams()
        now = model.clock() if now is None else now
        if not streams:
            return Group(Text(f"{title} - waiting for tags ...", style="bold"))
        header = Text(f"{title} - {', '.join(streams)}", style="bold")
        panels = [_stream_panel(model[s], now=now, top_k=top_k, columns=columns) for s in streams]
    footer = Text(
        "bars: smoothed probability now; sparklines: the same over time (full block = "
        "the stream's highest value shown)",
        style="dim",
    )
    return Group(header, *panels, footer)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def run_dashboard(
    endpoints: Sequence[str],
    *,
    stop: threading.Event,
    out: TextIO,
    streams: Iterable[str] | None = None,
    top_k: int = TOP_TAGS,
    history_seconds: float = HISTORY_SECONDS,
    count: int | None = None,
    security: Any = None,
) -> ExitStatus:
    """Show the dashboard until ``stop`` is set or ``count`` updates were received.

    Parameters
    ----------
    endpoints : sequence of str
        Worker PUB endpoints.
    stop : threading.Event
        Set it (e.g. from a signal handler) to stop.
    out : text stream
        Where the dashboard is drawn (redrawn in place on a terminal; the last
        frame only otherwise).
    streams : iterable of str or None
        Only these stream ids (default: every stream).
    top_k, history_seconds, count
        Tags per stream, seconds of history, updates before stopping (``None``: no limit).
    security : config.SecurityConfig or None
        CURVE keys for the subscription (``[security]`` in ``config.toml``).
    """
    from rich.console import Console
    from rich.live import Live

    from protocol.subscriber import Subscriber

    model = DashboardModel(history_seconds=history_seconds)
    received = 0
    with Subscriber(endpoints, streams=streams, security=security) as subscriber:
        logger.info("dashboard endpoints=%s", ",".join(subscriber.endpoints))
        console = Console(file=out)
        with Live(
            get_renderable=lambda: render_dashboard(model, top_k=top_k),
            console=console,
            refresh_per_second=4,
            transient=False,
        ) as live:
            while not stop.is_set():
                update = subscriber.receive(timeout_s=0.2)
                if update is None:
                    model.forget_idle()
                    continue
                model.add(update)
                received += 1
                if count is not None and received >= count:
                    break
            live.refresh()
    return ExitStatus.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.dashboard",
        description="Show live tags, their recent history and stream health in the terminal.",
        epilog="Endpoints default to config.toml [subscribe] endpoints.",
    )
    parser.add_argument("--config", metavar="PATH", help="config file (default: config.toml)")
    parser.add_argument(
        "--endpoint", action="append", metavar="E", help="worker PUB endpoint (repeatable)"
    )
    parser.add_argument("--stream", action="append", metavar="ID", help="only this stream id")
    parser.add_argument(
        "--top", type=int, default=TOP_TAGS, metavar="K", help=f"tags per stream ({TOP_TAGS})"
    )
    parser.add_argument(
        "--history-seconds",
        type=float,
        metavar="S",
        help="seconds of history per stream (default: web.history_seconds)",
    )
    parser.add_argument("--count", type=int, metavar="N", help="stop after N updates")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback on errors"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the terminal dashboard; return the exit status (:class:`ExitStatus`)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        if on_main_thread
        else {}
    )
    try:
        for name, value in (("--top", args.top), ("--count", args.count)):
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value} must be at least 1")
        cfg = load_config(
            args.config,
            overrides={
                "subscribe.endpoints": args.endpoint,
                "web.history_seconds": args.history_seconds,
            },
        )
        logging.basicConfig(
            level=cfg.logging.level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=err,
        )
        return int(
            run_dashboard(
                cfg.subscribe.endpoints,
                stop=stop,
                out=out,
                streams=args.stream,
                top_k=args.top,
                history_seconds=cfg.web.history_seconds,
                count=args.count,
                security=cfg.security,
            )
        )
    except KeyboardInterrupt:
        return int(ExitStatus.OK)
    except (ConfigError, zmq.ZMQError) as exc:
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
