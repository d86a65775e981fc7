"""Record every tag update from inference workers into an SQLite database.

    python -m tools.record --db PATH [--endpoint E ...] [--config PATH]
                           [--retention-days N] [--commit-interval S] [--traceback]

The recorder (:class:`monitor.recorder.Recorder`) subscribes to every worker
PUB endpoint (default: config.toml ``[subscribe] endpoints``) and appends each
update to the database (:mod:`monitor.store`: schema, writer and reader);
``python -m tools.report`` summarises it.

Durability: WAL mode with ``synchronous=FULL`` (``record.synchronous``), one
commit every ``commit_interval_seconds`` (1 s): a ``kill -9`` loses at most the
last interval and never corrupts the file; committed rows survive a power cut too.

SIGTERM or Ctrl-C: the recorder stops receiving, takes what is already
arriving on its socket (at most ``0.5 s``), commits everything buffered, closes
the database and exits 0, within a second.

Exit status (README "Exit status"): 0 stopped by SIGTERM or Ctrl-C, 1 unexpected
error, 2 usage or config error, 3 a database that cannot be opened (on a full disk
the line says so, and whether the recording in it is intact), 4 an endpoint that
cannot be subscribed to.
"""

from __future__ import annotations

import argparse
import sys

from config import RecordConfig
from monitor.recorder import Recorder
from tagstream import cli
from tools import add_subscription_arguments

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m tools.record",
        "Record every tag update from tagstream workers into an SQLite database.",
        epilog="Endpoints default to config.toml [subscribe] endpoints. Stop with Ctrl-C or "
        "SIGTERM: buffered updates are committed first.",
    )
    parser.add_argument("--db", required=True, metavar="PATH", help="SQLite database to write")
    add_subscription_arguments(parser, streams=False)
    defaults = RecordConfig()
    cli.setting_flag(
        parser,
        "--retention-days",
        key="record.retention_days",
        metavar="N",
        help=f"delete updates older than N days; 0 keeps all ({defaults.retention_days:g})",
    )
    cli.setting_flag(
        parser,
        "--commit-interval",
        key="record.commit_interval_seconds",
        metavar="S",
        help="seconds between commits: at most this much is lost to kill -9 "
        f"({defaults.commit_interval_seconds:g})",
    )
    return parser


def run(ctx: cli.Context) -> int:
    """The command's body: record until Ctrl-C or SIGTERM, then commit and close."""
    args = ctx.args
    cfg = ctx.load_config()
    with (
        Recorder(
            args.db, cfg.subscribe.endpoints, settings=cfg.record, security=cfg.security
        ) as recorder,
        ctx.on_stop(recorder.stop),
    ):
        recorder.run()
    return cli.ExitStatus.OK


main = cli.command(build_parser, run, long_running=True)


if __name__ == "__main__":
    sys.exit(main())
