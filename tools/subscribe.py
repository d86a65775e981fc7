"""Print tag updates from inference workers.

    python -m tools.subscribe [--endpoint E ...] [--stream ID ...] [--json] [--events]
                              [--top K] [--count N] [--timeout S] [--config PATH] [--traceback]

Without ``--json`` one readable line per update (with the window's content and level
when the worker sends them)::

    host:mic  12.00-14.99 s  music -18.2 dBFS  electronic 0.61  dance 0.32  electro 0.20

With ``--json`` one JSON object per line, exactly ``TagUpdate.to_json_dict()``.
``--events`` prints the worker's events as well, between the updates, as
``Event.to_json_dict()`` (``{"stream": ..., "event": "silence_start", "time": ...,
"at_s": ..., ...}``) or one readable line each; ``--count`` counts updates only.

Exit status (README "Exit status"): 0 done (``--count`` reached, Ctrl-C,
SIGTERM or a broken pipe), 1 unexpected error, 2 usage or config error, 3 no
update for ``--timeout`` seconds, 4 an endpoint that cannot be subscribed to.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

import numpy as np

from monitor import connect
from protocol import Event, TagUpdate
from tagstream import cli
from tagstream.errors import UnavailableError
from tools import add_subscription_arguments, check_at_least

if TYPE_CHECKING:
    from protocol.security import SecuritySettings

__all__ = ["build_parser", "format_event", "format_update", "main", "print_updates", "run"]


def format_update(update: TagUpdate, *, top_k: int = 5) -> str:
    """One readable line: stream, window time span and the top tags of the window.

    Parameters
    ----------
    update : TagUpdate
    top_k : int > 0
        How many tags, by descending probability.
    """
    order = np.argsort(-update.probabilities, kind="stable")[:top_k]
    tags = "  ".join(f"{update.tags[i]} {update.probabilities[i]:.2f}" for i in order)
    content = ""
    if update.content is not None:
        content = f"{update.content} "
        if update.level_dbfs is not None:
            content += f"{update.level_dbfs:.1f} dBFS "
        content += " "
    return f"{update.stream}  {update.start_s:.2f}-{update.end_s:.2f} s  {content}{tags}"


def format_event(event: Event) -> str:
    """One readable line: stream, audio time, ``*`` and the event with its fields.

    >>> format_event(Event("radio", "now_playing", time=0.0, at_s=61.5, fields={"title": "X"}))
    "radio  61.50 s  * now_playing  title='X'"
    """
    fields = "  ".join(f"{name}={value!r}" for name, value in event.fields.items())
    return f"{event.stream}  {event.at_s:.2f} s  * {event.event}  {fields}".rstrip()


def print_updates(
    endpoints: Sequence[str],
    *,
    out: TextIO,
    streams: Sequence[str] | None = None,
    as_json: bool = False,
    top_k: int = 5,
    count: int | None = None,
    timeout_s: float | None = None,
    security: SecuritySettings | None = None,
    events: bool = False,
) -> int:
    """Print updates until ``count`` are printed (``None``: until interrupted).

    Parameters
    ----------
    endpoints : sequence of str
        Worker PUB endpoints.
    out : text stream
        One line per update (flushed).
    streams : sequence of str or None
        Only these stream ids.
    as_json : bool
        ``TagUpdate.to_json_dict()`` as one JSON object per line, instead of
        :func:`format_update`.
    top_k, count, timeout_s
        Tags per readable line, updates before returning, seconds without an
        update before giving up (``None``: wait forever).
    security : protocol.security.SecuritySettings or None
        CURVE keys for the subscription, e.g. ``config.SecurityConfig``.
    events : bool
        Print the worker's events too (not counted by ``count``).

    Returns
    -------
    int
        Updates printed.

    Raises
    ------
    tagstream.errors.UnavailableError
        No update came for ``timeout_s`` seconds.
    tagstream.errors.EndpointError
        An endpoint cannot be subscribed to.
    """
    printed = 0
    with connect(
        endpoints, streams=streams or None, security=security, events=events
    ) as subscriber:
        while count is None or printed < count:
            message = subscriber.receive_message(timeout_s=timeout_s)
            if message is None:
                raise UnavailableError(f"no update for {timeout_s:g} s; is the worker running?")
            if as_json:
                line = json.dumps(message.to_json_dict(), separators=(",", ":"))
            elif isinstance(message, Event):
                line = format_event(message)
            else:
                line = format_update(message, top_k=top_k)
            out.write(line + "\n")
            out.flush()
            if isinstance(message, TagUpdate):
                printed += 1
    return printed


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m tools.subscribe",
        "Print tag updates published by tagstream inference workers.",
        epilog="Endpoints default to config.toml [subscribe] endpoints.",
    )
    add_subscription_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--events",
        action="store_true",
        help="also print events (silence, content changes, titles, source down/up)",
    )
    parser.add_argument("--top", type=int, default=5, metavar="K", help="tags per line (5)")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N updates")
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="stop (exit 3) after S seconds without updates"
    )
    return parser


def run(ctx: cli.Context) -> int:
    """The command's body: print updates until ``--count``, ``--timeout`` or a signal."""
    args = ctx.args
    check_at_least("--top", args.top)
    check_at_least("--count", args.count)
    if args.timeout is not None and not args.timeout > 0:
        raise cli.usage(f"--timeout={args.timeout} must be greater than 0")
    cfg = ctx.load_config()
    print_updates(
        cfg.subscribe.endpoints,
        out=ctx.stdout,
        streams=args.stream,
        as_json=args.json,
        top_k=args.top,
        count=args.count,
        timeout_s=args.timeout,
        security=cfg.security,
        events=args.events,
    )
    return cli.ExitStatus.OK


main = cli.command(build_parser, run, long_running=True)


if __name__ == "__main__":
    sys.exit(main())
