"""Summarise a recording of ``python -m tools.record``: top tags per hour and per day.

    python -m tools.report --db PATH [--stream ID] [--since ISO|-24h] [--until ISO|-1h]
                           [--out DIR] [--top K] [--utc] [--traceback]

Prints the overall top tags, a table per day and per hour (each tag's share of
updates as the dominant tag, and its mean probability) and the recent
dominant-tag segments; writes ``report.png``, ``hourly.csv`` and
``segments.csv`` into ``--out`` (default: the current folder).  The library is
:mod:`monitor.report`, over the store :mod:`monitor.store`.

Times are the workers' ``published_time``, shown in the local time zone
(``--utc``: in UTC).  ``--since``/``--until`` take an ISO date or time
(``2024-06-01``, ``2024-06-01T18:00``, with or without an offset; without one
it is local time) or a time relative to now (``-24h``, ``-7d``, ``-30m``).

Exit status (README "Exit status"): 0 done, 1 unexpected error, 2 usage error,
3 a missing or unreadable database or no update in the range, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from monitor.report import build_report, format_report, parse_time, write_outputs
from tagstream import cli
from tagstream.errors import UsageError
from tools import check_at_least

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m tools.report",
        "Top tags per hour and per day, and dominant-tag segments, of a recording "
        "made by python -m tools.record.",
        epilog="Times: ISO (2024-06-01, 2024-06-01T18:00, local unless an offset is given) "
        "or relative to now (-24h, -7d, -30m).",
        config=False,
    )
    parser.add_argument("--db", required=True, metavar="PATH", help="recording database")
    parser.add_argument("--stream", metavar="ID", help="only this stream (default: all)")
    parser.add_argument("--since", metavar="TIME", help="first time to include")
    parser.add_argument("--until", metavar="TIME", help="end of the range (excluded)")
    parser.add_argument(
        "--out", default=".", metavar="DIR", help="folder for report.png and the CSV files (.)"
    )
    parser.add_argument("--top", type=int, default=5, metavar="K", help="tags shown (5)")
    parser.add_argument("--utc", action="store_true", help="hours, days and times in UTC")
    return parser


def _time_flag(name: str, value: str | None) -> float | None:
    """``--since``/``--until`` as a Unix time (``None``: not given)."""
    try:
        return None if value is None else parse_time(value)
    except ValueError as exc:
        raise UsageError(f"--{name}: {exc}") from None


def run(ctx: cli.Context) -> int:
    """The command's body: read the recording, print the summary, write the files."""
    args = ctx.args
    check_at_least("--top", args.top)
    since, until = _time_flag("since", args.since), _time_flag("until", args.until)
    if since is not None and until is not None and not since < until:
        raise UsageError(f"--since ({args.since}) must be before --until ({args.until})")
    cli.setup_logging("WARNING", stream=ctx.stderr)
    report = build_report(
        args.db, stream=args.stream, since=since, until=until, tz=dt.UTC if args.utc else None
    )
    ctx.stdout.write(format_report(report, top_k=args.top))
    paths = write_outputs(report, args.out, top_k=args.top)
    ctx.stdout.write("\nwrote " + "  ".join(str(p) for p in paths.values()) + "\n")
    ctx.stdout.flush()
    return cli.ExitStatus.OK


main = cli.command(build_parser, run)


if __name__ == "__main__":
    sys.exit(main())
