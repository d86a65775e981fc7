"""Terminal dashboard: live tags, a one-minute history and the health of every stream.

    python -m tools.dashboard [--endpoint E ...] [--stream ID ...] [--top K]
                              [--history-seconds S] [--count N] [--config PATH] [--traceback]

Subscribes to one or more workers (``[subscribe] endpoints`` in ``config.toml``
by default) and draws, per stream, the top tags (smoothed) as bars, a sparkline
of each of them over the last ``web.history_seconds`` of audio, the moments the
dominant tag changed, and the stream's health: how long ago the last update
came, its latency, and the gaps, drops and missed updates so far.

The data model is :mod:`monitor.history` (shared with the web page and
``tools.live``); :func:`render_dashboard` turns it into a ``rich`` renderable,
which :func:`run_dashboard` keeps on screen with ``rich.live``.

Exit status (README "Exit status"): 0 done (``--count`` reached, Ctrl-C or
SIGTERM), 1 unexpected error, 2 usage or config error, 4 an endpoint that
cannot be subscribed to.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Iterable, Sequence
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
)
from protocol import Event
from tagstream import cli
from tools import add_subscription_arguments, check_at_least

if TYPE_CHECKING:
    from protocol.security import SecuritySettings

__all__ = ["build_parser", "main", "render_dashboard", "run_dashboard", "sparkline"]

logger = logging.getLogger(__name__)

BAR_WIDTH: Final = 24
SPARK_COLUMNS: Final = 30
#: Smallest value a sparkline's full block stands for, so noise near 0 stays flat.
_MIN_SPARK_SCALE: Final = 0.05
_SPARKS: Final = " ▁▂▃▄▅▆▇█"
_STATUS_STYLE: Final = {"ok": "green", "late": "yellow", "stale": "red"}
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


_CONTENT_STYLE = {"music": "bold green", "speech": "bold cyan", "silence": "bold red"}


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
        text.append(" · DEAD AIR", style="bold white on red")
    if history.source_down:
        text.append(" · SOURCE DOWN", style="bold white on red")
    return text


def _events_text(history: StreamHistory, count: int = 3) -> Any:
    """The last ``count`` events, newest first."""
    from rich.text import Text

    text = Text("events: ", style="dim")
    for i, event in enumerate(reversed(list(history.events)[-count:])):
        if i:
            text.append("  ←  ", style="dim")
        text.append(event.event, style="bold" if i == 0 else "")
        detail = event.fields.get("title") or event.fields.get("content") or ""
        if detail:
            text.append(f" {detail}")
        text.append(f" @{event.at_s:.1f}s", style="dim")
    return text


def _stream_panel(history: StreamHistory, *, now: float, top_k: int, columns: int) -> Any:
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

    title = Text(history.stream, style="bold magenta")
    title.append(f"  {latest.model}  {latest.start_s:.1f}-{latest.end_s:.1f} s", style="dim")
    parts = [_content_text(history), table, changes]
    if history.events:
        parts.append(_events_text(history))
    return Panel(
        Group(*parts, _health_text(history.health(now=now))),
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

    Raises
    ------
    tagstream.errors.EndpointError
        An endpoint cannot be subscribed to.
    """
    from rich.console import Console
    from rich.live import Live

    model = DashboardModel(history_seconds=history_seconds)
    received = 0
    with connect(endpoints, streams=streams, security=security, events=True) as updates:
        logger.info("dashboard endpoints=%s", ",".join(updates.endpoints))
        with Live(
            get_renderable=lambda: render_dashboard(model, top_k=top_k),
            console=Console(file=out),
            refresh_per_second=4,
            transient=False,
        ) as live:
            while not stop.is_set():
                update = updates.receive_message(timeout_s=_POLL_S)
                if update is None:
                    model.forget_idle()
                    continue
                if isinstance(update, Event):
                    model.add_event(update)
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
        )
    return cli.ExitStatus.OK


main = cli.command(build_parser, run, long_running=True)


if __name__ == "__main__":
    sys.exit(main())
