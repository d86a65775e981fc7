"""Summarise a recording of ``python -m tools.record``: top tags, segments and the as-run log.

    python -m tools.report --db PATH [--stream ID] [--since ISO|-24h] [--until ISO|-1h]
                           [--out DIR] [--top K] [--utc] [--as-run PATH]
                           [--min-segment-seconds S] [--family-hysteresis H]
                           [--title-item-seconds S]
                           [--families TOML] [--config PATH] [--traceback]

Prints the overall top tags, a table per day and per hour (each tag's share of
music updates as the dominant tag, and its mean probability), the recent
dominant-tag segments and the **as-run log**: one row per item the stream
played (music by tag family, speech, silence, source outages, audio the worker
was too far behind to tag, with now-playing titles), the dead-air incidents and
the music time per family.  Writes ``report.png`` (with the as-run panel),
``hourly.csv``, ``segments.csv``, ``asrun.csv`` and ``dead_air.csv`` into
``--out`` (default: the current folder); ``--as-run PATH`` writes the as-run CSV
there instead (``-``: stdout).
The libraries are :mod:`monitor.report` and :mod:`monitor.asrun`, over the
store :mod:`monitor.store`.

The as-run settings are ``[report]`` in ``config.toml`` (``min_segment_seconds``,
``family_hysteresis``, ``title_item_seconds``); ``--families`` reads a
``[families]`` table (the default grouping is
:data:`monitor.families.DEFAULT_FAMILIES`).

Times are the workers' ``published_time``, shown in the local time zone
(``--utc``: in UTC).  ``--since``/``--until`` take an ISO date or time
(``2024-06-01``, ``2024-06-01T18:00``, with or without an offset; without one
it is local time) or a time relative to now (``-24h``, ``-7d``, ``-30m``), as
``--since -7d`` or ``--since=-7d``.

Exit status (README "Exit status"): 0 done, 1 unexpected error, 2 usage or config
error, 3 a missing or unreadable database or no update in the range, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Sequence
from typing import TextIO

from monitor.asrun import AsRunSettings, load_asrun
from monitor.families import DEFAULT_FAMILIES, load_families
from monitor.report import build_report, format_asrun, format_report, parse_time, write_outputs
from tagstream import cli
from tagstream.errors import UsageError
from tools import check_at_least

__all__ = ["build_parser", "join_time_values", "main", "run"]

#: Options whose value may start with "-" (a time relative to now).
_TIME_OPTIONS = ("--since", "--until")
#: A value that starts like a relative time (``-7d``); argparse would take it for an option.
_LOOKS_RELATIVE = re.compile(r"^-\d")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m tools.report",
        "Top tags per hour and per day, dominant-tag segments and the as-run log of a "
        "recording made by python -m tools.record.",
        epilog="Times: ISO (2024-06-01, 2024-06-01T18:00, local unless an offset is given) "
        "or relative to now (-24h, -7d, -30m).",
    )
    parser.add_argument("--db", required=True, metavar="PATH", help="recording database")
    parser.add_argument("--stream", metavar="ID", help="only this stream (default: all)")
    parser.add_argument("--since", metavar="TIME", help="first time to include (-7d, ISO)")
    parser.add_argument("--until", metavar="TIME", help="end of the range, excluded (-1h, ISO)")
    parser.add_argument(
        "--out", default=".", metavar="DIR", help="folder for report.png and the CSV files (.)"
    )
    parser.add_argument("--top", type=int, default=5, metavar="K", help="tags shown (5)")
    parser.add_argument("--utc", action="store_true", help="hours, days and times in UTC")
    parser.add_argument(
        "--as-run",
        dest="as_run",
        metavar="PATH",
        help="write the as-run log CSV to PATH instead of DIR/asrun.csv ('-': stdout)",
    )
    parser.add_argument(
        "--families",
        metavar="TOML",
        help="tag families from this file's [families] table (default: the built-in grouping)",
    )
    defaults = AsRunSettings()
    cli.setting_flag(
        parser,
        "--min-segment-seconds",
        key="report.min_segment_seconds",
        metavar="S",
        help="as-run: merge music and speech runs shorter than S seconds into a neighbour "
        "(not talk with a splice at each end), "
        "and unreported quiet that short between two sounds into the row before it "
        f"({defaults.min_segment_seconds:g})",
    )
    cli.setting_flag(
        parser,
        "--family-hysteresis",
        key="report.family_hysteresis",
        metavar="H",
        help="as-run: change a music row's family only when another scores H more "
        f"({defaults.family_hysteresis:g})",
    )
    cli.setting_flag(
        parser,
        "--title-item-seconds",
        key="report.title_item_seconds",
        metavar="S",
        help="as-run: a now-playing title lasting at most S seconds is one track, one music "
        f"row; 0 = off ({defaults.title_item_seconds:g})",
    )
    return parser


def join_time_values(argv: Sequence[str]) -> list[str]:
    """``--since -7d`` as ``--since=-7d``: argparse takes a value starting with "-" for an option.

    Only the value right after ``--since``/``--until`` that starts with ``-`` and a
    digit is joined, so every other argument keeps its meaning.
    """
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] in _TIME_OPTIONS and i + 1 < len(args) and _LOOKS_RELATIVE.match(args[i + 1]):
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


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
    cfg = ctx.load_config()
    families = load_families(args.families) if args.families else DEFAULT_FAMILIES
    cli.setup_logging("WARNING", stream=ctx.stderr)
    tz = dt.UTC if args.utc else None
    report = build_report(args.db, stream=args.stream, since=since, until=until, tz=tz)
    asrun = load_asrun(
        args.db,
        stream=args.stream,
        since=since,
        until=until,
        settings=AsRunSettings(
            min_segment_seconds=cfg.report.min_segment_seconds,
            family_hysteresis=cfg.report.family_hysteresis,
            title_item_seconds=cfg.report.title_item_seconds,
        ),
        families=families,
    )
    to_stdout = args.as_run == "-"
    shown = ctx.stderr if to_stdout else ctx.stdout  # stdout carries the CSV alone
    shown.write(format_report(report, top_k=args.top))
    shown.write("\n" + format_asrun(asrun, report.tz))
    shown.flush()
    paths = write_outputs(
        report,
        args.out,
        top_k=args.top,
        asrun=asrun,
        asrun_path=ctx.stdout if to_stdout else args.as_run,
    )
    shown.write("\nwrote " + "  ".join(str(p) for p in paths.values()) + "\n")
    shown.flush()
    return cli.ExitStatus.OK


_main = cli.command(build_parser, run)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``python -m tools.report``; return its exit status (``--since -7d`` works)."""
    args = sys.argv[1:] if argv is None else argv
    return _main(join_time_values(args), stdout=stdout, stderr=stderr)


if __name__ == "__main__":
    sys.exit(main())
