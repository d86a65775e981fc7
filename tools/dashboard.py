"""Terminal dashboard: live tags, a one-minute history and the health of every stream.

    python -m tools.dashboard [--endpoint E ...] [--stream ID ...] [--top K]
                              [--history-seconds S] [--count N] [--view auto|detail|overview]
                              [--log-file PATH] [--config PATH] [--traceback]

Subscribes to one or more workers (``[subscribe] endpoints`` in ``config.toml``
by default) and draws, per stream, the top tags (smoothed) as bars, a sparkline
of each of them over the last ``web.history_seconds`` of audio across the rest
of the width, what it plays (content, level, now-playing title; DEAD AIR and
SOURCE DOWN in red with the time they began), the moments the dominant tag
changed and the worker's events with wall-clock times, and the stream's
health: how long ago the last update came, its latency, and the gaps, drops
and missed updates so far.  Events redraw the screen as they come.

When those panels would not fit the terminal's height (or with ``--view
overview``) it draws one row per stream instead, side by side on a wide
terminal, and the latest events of every stream below them, so that a group
of 20-50 stations fits one screen.  While the view is on a terminal, log
records go to ``--log-file`` (default :func:`default_log_file`, named at the
bottom of the screen) rather than across the view; piped, they stay on stderr.

The data model is :mod:`monitor.history` (shared with the web page and
``tools.live``); :func:`render_dashboard` turns it into a ``rich`` renderable,
which :func:`run_dashboard` keeps on screen with ``rich.live``.

Exit status (README "Exit status"): 0 done (``--count`` reached, Ctrl-C or
SIGTERM), 1 unexpected error, 2 usage or config error, 4 an endpoint that
cannot be subscribed to.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import numpy as np

from monitor import connect
from monitor.history import (
    HISTORY_SECONDS,
    TOP_TAGS,
    DashboardModel,
    StreamHealth,
    StreamHistory,
    check_positive,
    is_behind,
)
from protocol import Event
from tagstream import cli
from tagstream.errors import UsageError
from tools import add_subscription_arguments, check_at_least

if TYPE_CHECKING:
    from protocol.security import SecuritySettings

__all__ = [
    "VIEWS",
    "add_log_file_argument",
    "build_parser",
    "default_log_file",
    "event_text",
    "logs_to_file",
    "main",
    "render_dashboard",
    "run_dashboard",
    "sparkline",
    "wall_clock",
]

logger = logging.getLogger(__name__)

BAR_WIDTH: Final = 24
#: Narrowest sparkline; they take the rest of the width.
_MIN_SPARK_COLUMNS: Final = 8
#: Layouts of :func:`render_dashboard`.
VIEWS: Final = ("auto", "detail", "overview")
#: Streams named in the header; beyond, it counts them.
_NAMED_STREAMS: Final = 5
#: The overview's event feed: lines at least and at most.
_MIN_FEED_LINES: Final = 3
_MAX_FEED_LINES: Final = 8
#: Narrowest column of overview rows when they go side by side.
_MIN_PART_WIDTH: Final = 96
#: Smallest value a sparkline's full block stands for, so noise near 0 stays flat.
_MIN_SPARK_SCALE: Final = 0.05
_SPARKS: Final = " ▁▂▃▄▅▆▇█"
_STATUS_STYLE: Final = {"ok": "green", "behind": "yellow", "late": "yellow", "stale": "red"}
#: Longest receive wait, so that a stop is seen promptly.
_POLL_S: Final = 0.2


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
    check_positive("scale", scale)
    levels = np.full(columns, -1.0)
    slots = ((np.asarray(times) - start_s) / (end_s - start_s) * columns).astype(int)
    for slot, value in zip(np.clip(slots, 0, columns - 1), values, strict=True):
        levels[slot] = max(levels[slot], float(value))
    top = len(_SPARKS) - 1
    return "".join(
        " " if level < 0 else _SPARKS[max(1, round(min(level / scale, 1.0) * top))]
        for level in levels
    )


def wall_clock(unix_time: float) -> str:
    """``HH:MM:SS`` local time of a Unix time."""
    return time.strftime("%H:%M:%S", time.localtime(unix_time))


def event_text(event: Event) -> tuple[str, str]:
    """``(text, style)`` of one of the worker's events; alarms are bold white on red."""
    fields = event.fields
    if event.event == "silence_start":
        threshold = fields.get("threshold_dbfs")
        below = f" (below {threshold:g} dBFS)" if isinstance(threshold, float | int) else ""
        return f"DEAD AIR{below}", _ALARM_STYLE
    if event.event == "silence_end":
        return f"audio back after {float(fields.get('duration_s', 0.0)):.0f} s", "green"
    if event.event == "source_down":
        return f"SOURCE DOWN: {fields.get('reason', '')}".rstrip(": "), _ALARM_STYLE
    if event.event == "source_up":
        return f"source up after {float(fields.get('outage_s', 0.0)):.0f} s", "green"
    if event.event == "now_playing":
        return f"♪ {fields.get('title', '')}", "italic"
    if event.event == "content_change":
        content = str(fields.get("content", ""))
        text = f"{fields.get('previous', '?')} → {content}"
        return text, _CONTENT_STYLE.get(content, "")
    return event.event, ""


class _Sparkline:
    """A sparkline that fills the width rich gives it (the rest of the row)."""

    def __init__(
        self, times: np.ndarray, values: np.ndarray, *, start_s: float, end_s: float, scale: float
    ) -> None:
        self.times, self.values = times, values
        self.start_s, self.end_s, self.scale = start_s, end_s, scale

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        return Measurement(_MIN_SPARK_COLUMNS, max(_MIN_SPARK_COLUMNS, options.max_width))

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        line = sparkline(
            self.times,
            self.values,
            start_s=self.start_s,
            end_s=self.end_s,
            columns=max(1, options.max_width),
            scale=self.scale,
        )
        yield Text(line, style="cyan", no_wrap=True, overflow="crop")


def _health_text(health: StreamHealth) -> Any:
    from rich.text import Text

    text = Text()
    text.append(f"● {health.status}", style=f"bold {_STATUS_STYLE[health.status]}")
    text.append(f"  updated {health.age_s:.1f} s ago")
    text.append(
        f" · latency {health.latency_s * 1000:.0f} ms (p50 {health.latency_p50_s * 1000:.0f})"
    )
    for name in ("gaps", "dropped", "shed", "missed", "restarts"):
        value = getattr(health, name)
        text.append(f" · {name} {value}", style="bold red" if value else "")
    return text


_CONTENT_STYLE = {"music": "bold green", "speech": "bold cyan", "silence": "bold red"}
_ALARM_STYLE = "bold white on red"


def _since(history: StreamHistory, kind: str) -> str:
    """`` since HH:MM:SS`` of the latest event ``kind`` of the stream, if any: when it
    began (:meth:`monitor.history.StreamHistory.began`; dead air: when the quiet began)."""
    for event in reversed(history.events):
        if event.event == kind:
            return f" since {wall_clock(history.began(event)[0])}"
    return ""


def _content_text(history: StreamHistory) -> Any:
    """``music -18.3 dBFS · ♪ title`` plus DEAD AIR / SOURCE DOWN while they last."""
    from rich.text import Text

    text = Text()
    if history.content is not None:
        text.append(history.content, style=_CONTENT_STYLE.get(history.content, "bold"))
    if history.level_dbfs is not None:
        text.append(f" {history.level_dbfs:.1f} dBFS")
    if history.title:
        text.append(f" · ♪ {history.title}", style="italic")
    if history.silent:
        text.append(" · ")
        text.append(f"DEAD AIR{_since(history, 'silence_start')}", style=_ALARM_STYLE)
    if history.source_down:
        text.append(" · ")
        text.append(f"SOURCE DOWN{_since(history, 'source_down')}", style=_ALARM_STYLE)
    return text


def _events_text(history: StreamHistory, count: int = 3) -> Any:
    """The last ``count`` events, newest first, with their wall-clock times."""
    from rich.text import Text

    text = Text("events: ", style="dim")
    for i, event in enumerate(reversed(list(history.events)[-count:])):
        if i:
            text.append("  ←  ", style="dim")
        text.append(f"{wall_clock(history.began(event)[0])} ", style="dim")
        what, style = event_text(event)
        text.append(what, style=style or ("bold" if i == 0 else ""))
    return text


def _stream_panel(history: StreamHistory, *, now: float, top_k: int) -> Any:
    from rich.bar import Bar
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    latest = history.latest
    if latest is None:  # only events so far (e.g. its source went down before any tag)
        return Panel(
            Group(_content_text(history), _events_text(history)),
            title=Text(history.stream, style="bold magenta"),
            title_align="left",
        )
    end = latest.end_s
    start = end - history.history_seconds
    table = Table(box=None, pad_edge=False, expand=True)
    table.add_column("tag", style="bold", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("now", no_wrap=True, width=BAR_WIDTH)
    table.add_column(f"last {history.history_seconds:g} s", no_wrap=True, ratio=1)
    rows = [(tag, p, *history.series(tag)) for tag, p in history.top_tags(top_k)]
    # one scale for all rows of a stream, so that their sparklines compare; the
    # sparklines' full block is the largest value shown, not 1.0
    scale = max([_MIN_SPARK_SCALE, *(float(values.max()) for *_, values in rows if len(values))])
    for tag, p, times, values in rows:
        table.add_row(
            tag,
            f"{p:.2f}",
            Bar(size=1.0, begin=0.0, end=p, width=BAR_WIDTH, color="green"),
            _Sparkline(times, values, start_s=start, end_s=end, scale=scale),
        )
    changes = Text("dominant: ", style="dim")
    recent = list(history.changes)[-3:]
    for i, change in enumerate(reversed(recent)):
        if i:
            changes.append("  ←  ", style="dim")
        changes.append(f"{wall_clock(change.published_time)} ", style="dim")
        changes.append(change.tag, style="bold" if i == 0 else "")

    title = Text(history.stream, style="bold magenta")
    title.append(f"  {latest.model}  {latest.start_s:.1f}-{latest.end_s:.1f} s", style="dim")
    if is_behind(latest):  # the worker is behind (docs/PROTOCOL.md, "Shedding")
        title.append(f"  behind {latest.behind_s:.1f} s · shed {latest.shed}", style="bold red")
    parts = [_content_text(history), table, changes]
    if history.events:
        parts.append(_events_text(history))
    return Panel(
        Group(*parts, _health_text(history.health(now=now))),
        title=title,
        title_align="left",
        border_style="red" if history.silent or history.source_down else "",
    )


def _overview_table(histories: Sequence[StreamHistory], *, now: float) -> Any:
    """One row per stream: state, content, level, dominant tag, its trend, what is on air."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, expand=True, header_style="dim")
    table.add_column("stream", style="bold magenta", no_wrap=True, max_width=24)
    table.add_column("state", no_wrap=True, width=8)
    table.add_column("content", no_wrap=True, width=7)
    table.add_column("dBFS", justify="right", no_wrap=True, width=5)
    table.add_column("dominant", no_wrap=True, max_width=20, overflow="ellipsis")
    table.add_column("trend", no_wrap=True, ratio=2)
    table.add_column("on air / last event", no_wrap=True, ratio=3, overflow="ellipsis")
    for history in histories:
        latest = history.latest
        status = history.health(now=now).status if latest is not None else "stale"
        dominant = Text()
        trend: Any = Text("")
        if latest is not None and history.dominant is not None:
            p = float(latest.smoothed[latest.tags.index(history.dominant)])
            dominant.append(history.dominant, style="bold")
            dominant.append(f" {p:.2f}", style="dim")
            times, values = history.series(history.dominant)
            trend = _Sparkline(
                times,
                values,
                start_s=latest.end_s - history.history_seconds,
                end_s=latest.end_s,
                scale=max(_MIN_SPARK_SCALE, float(values.max()) if len(values) else 0.0),
            )
        on_air = Text(no_wrap=True, overflow="ellipsis")
        if history.silent:
            on_air.append(f"DEAD AIR{_since(history, 'silence_start')}", style=_ALARM_STYLE)
        elif history.source_down:
            on_air.append(f"SOURCE DOWN{_since(history, 'source_down')}", style=_ALARM_STYLE)
        elif history.title:
            on_air.append(f"♪ {history.title}", style="italic")
        elif history.events:
            event = history.events[-1]
            what, style = event_text(event)
            on_air.append(f"{wall_clock(history.began(event)[0])} ", style="dim")
            on_air.append(what, style=style)
        content = history.content or ""
        table.add_row(
            history.stream,
            Text(f"● {status}", style=_STATUS_STYLE[status]),
            Text(content, style=_CONTENT_STYLE.get(content, "")),
            "" if history.level_dbfs is None else f"{history.level_dbfs:.0f}",
            dominant,
            trend,
            on_air,
        )
    return table


def _event_feed(model: DashboardModel, count: int) -> list[Any]:
    """The last ``count`` events of every stream, newest first, one line each."""
    from rich.text import Text

    lines = []
    for event in list(model.recent_events)[::-1][:count]:
        what, style = event_text(event)
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"{wall_clock(model.began(event)[0])} ", style="dim")
        line.append(f"{event.stream} ", style="magenta")
        line.append(what, style=style)
        lines.append(line)
    return lines


def detail_lines(top_k: int) -> int:
    """Terminal lines the detailed view of one stream takes (a panel of ``top_k`` tags)."""
    return top_k + 8


class _DashboardView:
    """The dashboard, laid out when drawn: detailed panels, or one row per stream
    when the panels would not fit the terminal's height (``view="auto"``)."""

    def __init__(
        self,
        model: DashboardModel,
        *,
        title: str,
        top_k: int,
        now: float | None,
        view: str,
        log_file: str | None,
        hint: str | None,
    ) -> None:
        self.model, self.title, self.top_k, self.now = model, title, top_k, now
        self.view, self.log_file, self.hint = view, log_file, hint

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.table import Table
        from rich.text import Text

        model = self.model
        height = options.height or console.height
        width = options.max_width
        with model.lock:
            streams = model.streams()
            now = model.clock() if self.now is None else self.now
            clock = wall_clock(time.time())
            if not streams:
                yield Text(f"{self.title} - waiting for tags ... ({clock})", style="bold")
                yield from self._footer(detail=False)
                return
            histories = [model[s] for s in streams]
            names = ", ".join(streams) if len(streams) <= _NAMED_STREAMS else ""
            header = Text(f"{self.title} - {names or f'{len(streams)} streams'}", style="bold")
            header.append(f"  {clock}", style="dim")
            alarms = sum(1 for h in histories if h.silent or h.source_down)
            if alarms:
                header.append("  ")
                header.append(f"{alarms} ALARM{'S' if alarms > 1 else ''}", style=_ALARM_STYLE)
            heard = [h for h in histories if h.latest is not None]  # not events alone
            late = sum(1 for h in heard if h.health(now=now).status == "behind")
            if late:  # the worker tags these far behind their audio: it has more than it can tag
                header.append(f"  {late} behind", style="bold yellow")
            yield header
            detail_height = 3 + len(streams) * detail_lines(self.top_k)
            # "auto" fits a terminal's screen; piped output has no height to fit
            overview = self.view == "overview" or (
                self.view == "auto" and console.is_terminal and detail_height > height
            )
            if not overview:
                for history in histories:
                    yield _stream_panel(history, now=now, top_k=self.top_k)
                yield from self._footer(detail=True)
                return
            # one row per stream; side by side when the rows would not fit the height
            spare = max(1, height - 4 - _MIN_FEED_LINES)
            parts = min(max(1, -(-len(histories) // spare)), max(1, width // _MIN_PART_WIDTH))
            per_part = -(-len(histories) // parts)
            grid = Table.grid(expand=True, padding=(0, 2))
            for _ in range(parts):
                grid.add_column(ratio=1)
            grid.add_row(
                *(
                    _overview_table(histories[i : i + per_part], now=now)
                    for i in range(0, len(histories), per_part)
                )
            )
            yield grid
            feed = max(_MIN_FEED_LINES, min(_MAX_FEED_LINES, height - per_part - 4))
            lines = _event_feed(model, feed)
            if lines:
                yield Text("events (newest first):", style="dim")
                yield from lines
        yield from self._footer(detail=False)

    def _footer(self, *, detail: bool) -> Any:
        from rich.text import Text

        text = Text(style="dim")
        if detail:
            text.append(
                "bars: smoothed probability now; sparklines: the same over time "
                "(full block = the stream's highest value shown)"
            )
        if self.log_file:
            text.append(f"{'  ·  ' if text else ''}log: {self.log_file}")
        if self.hint:
            text.append(f"{'  ·  ' if text else ''}{self.hint}")
        if text:
            yield text


def render_dashboard(
    model: DashboardModel,
    *,
    title: str = "tagstream dashboard",
    top_k: int = TOP_TAGS,
    now: float | None = None,
    view: str = "auto",
    log_file: str | None = None,
    hint: str | None = None,
) -> Any:
    """A rich renderable of every stream in ``model``, laid out for the console it is drawn on.

    Parameters
    ----------
    model : DashboardModel
    title : str
        The header line starts with it: ``"<title> - <stream>, <stream>  HH:MM:SS"``
        (``"<title> - N streams"`` beyond a few streams).
    top_k : int > 0
        Tags shown per stream in the detailed view.
    now : float or None
        ``model.clock()`` time for the health figures (default: now).
    view : {"auto", "detail", "overview"}
        ``detail``: a panel per stream (bars, sparklines across the rest of the
        width, dominant-tag changes and events with wall-clock times, health);
        ``overview``: one row per stream (state, content, level, dominant tag and
        its trend, dead air / source down / now playing) and the latest events of
        every stream; ``auto``: detail while every panel fits the height of the
        terminal it is drawn on, else overview (detail when not drawn on a terminal).
    log_file : str or None
        Named in the footer: where log lines go while the view is on screen.
    hint : str or None
        A last footer note (``"Ctrl-C to stop"``).
    """
    if view not in VIEWS:
        raise ValueError(f"view={view!r} must be one of {', '.join(VIEWS)}")
    return _DashboardView(
        model, title=title, top_k=top_k, now=now, view=view, log_file=log_file, hint=hint
    )


# -- log lines off the screen -------------------------------------------------------------


def default_log_file(name: str) -> str:
    """``<temporary folder>/tagstream-<name>.log``: where a full-screen view's logs go."""
    return str(Path(tempfile.gettempdir()) / f"tagstream-{name}.log")


def add_log_file_argument(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        help="where log lines go while the view is on a terminal "
        f"(default: {default_log_file(name)}); elsewhere they go to stderr",
    )


@contextlib.contextmanager
def logs_to_file(path: str | None) -> Iterator[None]:
    """While inside, the process's log records go to ``path`` (appended), not to stderr.

    A full-screen view redraws the terminal in place, so a log line written to
    stderr would tear it.  ``None`` changes nothing (the view is not on a terminal).

    Raises
    ------
    tagstream.errors.UsageError
        ``path`` cannot be opened for appending.
    """
    if path is None:
        yield
        return
    root = logging.getLogger()
    try:
        handler = logging.FileHandler(path, encoding="utf-8", delay=False)
    except OSError as exc:
        raise UsageError(
            f"--log-file {path}: cannot be written ({exc.strerror or exc}); choose another path"
        ) from None
    handler.setFormatter(logging.Formatter(cli.LOG_FORMAT))
    # the handler of cli.setup_logging (to stderr); others (a test's capture) stay
    moved = [h for h in root.handlers if getattr(h, "_tagstream", False)]
    for old in moved:
        root.removeHandler(old)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for old in moved:
            root.addHandler(old)


def run_dashboard(
    endpoints: Sequence[str],
    *,
    stop: threading.Event,
    out: TextIO,
    streams: Iterable[str] | None = None,
    top_k: int = TOP_TAGS,
    history_seconds: float = HISTORY_SECONDS,
    count: int | None = None,
    security: SecuritySettings | None = None,
    view: str = "auto",
    log_file: str | None = None,
) -> None:
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
    security : protocol.security.SecuritySettings or None
        CURVE keys for the subscription, e.g. ``config.SecurityConfig`` (``[security]``).
    view : {"auto", "detail", "overview"}
        The layout (:func:`render_dashboard`).
    log_file : str or None
        Where log records go while the view is on a terminal (default
        :func:`default_log_file`); on anything else they stay on stderr.

    Raises
    ------
    tagstream.errors.EndpointError
        An endpoint cannot be subscribed to.
    """
    from rich.console import Console
    from rich.live import Live

    model = DashboardModel(history_seconds=history_seconds)
    received = 0
    console = Console(file=out)
    log_file = (log_file or default_log_file("dashboard")) if console.is_terminal else None
    with (
        connect(endpoints, streams=streams, security=security, events=True) as updates,
        logs_to_file(log_file),
        Live(
            get_renderable=lambda: render_dashboard(
                model, top_k=top_k, view=view, log_file=log_file
            ),
            console=console,
            refresh_per_second=4,
            transient=False,
        ) as live,
    ):
        logger.info("dashboard endpoints=%s", ",".join(updates.endpoints))
        while not stop.is_set():
            update = updates.receive_message(timeout_s=_POLL_S)
            if update is None:
                model.forget_idle()
                continue
            if isinstance(update, Event):
                model.add_event(update)
                live.refresh()  # events show as they come
                continue
            model.add(update)
            received += 1
            if count is not None and received >= count:
                break
        live.refresh()


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m tools.dashboard",
        "Show live tags, their recent history and stream health in the terminal.",
        epilog="Endpoints default to config.toml [subscribe] endpoints.",
    )
    add_subscription_arguments(parser)
    parser.add_argument(
        "--top", type=int, default=TOP_TAGS, metavar="K", help=f"tags per stream ({TOP_TAGS})"
    )
    cli.setting_flag(
        parser,
        "--history-seconds",
        key="web.history_seconds",
        metavar="S",
        help="seconds of history per stream (default: web.history_seconds)",
    )
    parser.add_argument("--count", type=int, metavar="N", help="stop after N updates")
    parser.add_argument(
        "--view",
        choices=VIEWS,
        default="auto",
        help="detail: a panel per stream; overview: one row per stream with an event feed; "
        "auto (default): overview when the panels would not fit the terminal",
    )
    add_log_file_argument(parser, "dashboard")
    return parser


def run(ctx: cli.Context) -> int:
    """The command's body: check the flags, load the settings, draw until stopped."""
    args = ctx.args
    check_at_least("--top", args.top)
    check_at_least("--count", args.count)
    cfg = ctx.load_config()
    with ctx.on_stop(ctx.stop.set):  # polled: the last frame is drawn on the way out
        run_dashboard(
            cfg.subscribe.endpoints,
            stop=ctx.stop,
            out=ctx.stdout,
            streams=args.stream,
            top_k=args.top,
            history_seconds=cfg.web.history_seconds,
            count=args.count,
            security=cfg.security,
            view=args.view,
            log_file=args.log_file,
        )
    return cli.ExitStatus.OK


main = cli.command(build_parser, run, long_running=True)


if __name__ == "__main__":
    sys.exit(main())
