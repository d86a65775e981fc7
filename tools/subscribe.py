"""Print tag updates from inference workers.

    python -m tools.subscribe [--endpoint E ...] [--stream ID ...] [--json] [--top K]
                              [--count N] [--timeout S] [--config PATH] [--traceback]

Without ``--json`` one readable line per update::

    host:mic  12.00-14.99 s  electronic 0.61  dance 0.32  electro 0.20

With ``--json`` one JSON object per line, exactly ``TagUpdate.to_json_dict()``.

Exit status (:class:`ExitStatus`): 0 done (``--count`` reached, Ctrl-C, SIGTERM
or a broken pipe), 1 unexpected error, 2 usage or config error, 3 no update
for ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import signal
import sys
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

import numpy as np

from config import ConfigError, SecurityConfig, load_config
from protocol import TagUpdate

__all__ = ["ExitStatus", "format_update", "main", "run"]

logger = logging.getLogger(__name__)


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    TIMEOUT = 3


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
    return f"{update.stream}  {update.start_s:.2f}-{update.end_s:.2f} s  {tags}"


def run(
    endpoints: Sequence[str],
    *,
    out: TextIO,
    streams: Sequence[str] | None = None,
    as_json: bool = False,
    top_k: int = 5,
    count: int | None = None,
    timeout_s: float | None = None,
    security: SecurityConfig | None = None,
) -> ExitStatus:
    """Print updates until ``count`` are printed or ``timeout_s`` passes without one.

    Returns
    -------
    ExitStatus
        ``OK`` after ``count`` updates, ``TIMEOUT`` when the subscription went idle.
    """
    from protocol.subscriber import subscribe

    printed = 0
    updates = subscribe(endpoints, streams=streams or None, timeout_s=timeout_s, security=security)
    try:
        for update in updates:
            if as_json:
                line = json.dumps(update.to_json_dict(), separators=(",", ":"))
            else:
                line = format_update(update, top_k=top_k)
            out.write(line + "\n")
            out.flush()
            printed += 1
            if count is not None and printed >= count:
                return ExitStatus.OK
    finally:
        updates.close()
    return ExitStatus.OK if count is None and timeout_s is None else ExitStatus.TIMEOUT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.subscribe",
        description="Print tag updates published by tagstream inference workers.",
        epilog="Endpoints default to config.toml [subscribe] endpoints.",
    )
    parser.add_argument("--config", metavar="PATH", help="config file (default: config.toml)")
    parser.add_argument(
        "--endpoint", action="append", metavar="E", help="worker PUB endpoint (repeatable)"
    )
    parser.add_argument("--stream", action="append", metavar="ID", help="only this stream id")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--top", type=int, default=5, metavar="K", help="tags per line (5)")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N updates")
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="stop (exit 3) after S seconds without updates"
    )
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
    """Run the subscriber CLI; return the exit status (:class:`ExitStatus`)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        for name, value, least in (("--top", args.top, 1), ("--count", args.count, 1)):
            if value is not None and value < least:
                raise ConfigError(f"{name}={value} must be at least {least}")
        if args.timeout is not None and not args.timeout > 0:
            raise ConfigError(f"--timeout={args.timeout} must be greater than 0")
        cfg = load_config(args.config, overrides={"subscribe.endpoints": args.endpoint})
        logging.basicConfig(
            level=cfg.logging.level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=err,
        )
        status = run(
            cfg.subscribe.endpoints,
            out=out,
            streams=args.stream,
            as_json=args.json,
            top_k=args.top,
            count=args.count,
            timeout_s=args.timeout,
            security=cfg.security,
        )
        if status == ExitStatus.TIMEOUT:
            print(f"error: no update for {args.timeout:g} s; is the worker running?", file=err)
        return int(status)
    except (KeyboardInterrupt, BrokenPipeError):
        return int(ExitStatus.OK)
    except ConfigError as exc:
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
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
