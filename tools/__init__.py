"""User-facing tools: file tagging, subscribers, dashboards, the live demo.

Each module is a thin command over a library (``model``, ``monitor``, ...);
this package holds only what their command lines share.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Protocol, TextIO

from tagstream import cli
from tagstream.errors import UsageError

__all__ = ["Main", "add_subscription_arguments", "check_at_least", "command"]


class Main(Protocol):
    """A command's ``main``: parse ``argv``, run, return the exit status."""

    def __call__(
        self,
        argv: Sequence[str] | None = ...,
        *,
        stdout: TextIO | None = ...,
        stderr: TextIO | None = ...,
    ) -> int: ...


def command(
    build_parser: Callable[[], argparse.ArgumentParser],
    body: Callable[[cli.Context], int],
    *,
    long_running: bool = False,
) -> Main:
    """A command's ``main(argv=None, *, stdout=None, stderr=None) -> int`` (:func:`cli.run`).

    Parameters
    ----------
    build_parser : callable () -> argparse.ArgumentParser
        The command line (built with :func:`tagstream.cli.parser`).
    body : callable (cli.Context) -> int
        The command itself.
    long_running : bool
        Ctrl-C and SIGTERM are its normal stop (exit 0, not 130).

    Examples
    --------
    >>> main = command(build_parser, run, long_running=True)  # doctest: +SKIP
    >>> if __name__ == "__main__":  # doctest: +SKIP
    ...     sys.exit(main())
    """

    def main(
        argv: Sequence[str] | None = None,
        *,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> int:
        parser = build_parser()
        return cli.run(parser, body, argv, stdout=stdout, stderr=stderr, long_running=long_running)

    main.__module__ = body.__module__
    main.__doc__ = f"Run ``python -m {body.__module__}``; return its exit status."
    return main


def add_subscription_arguments(parser: argparse.ArgumentParser, *, streams: bool = True) -> None:
    """Add ``--endpoint E`` and (with ``streams``) ``--stream ID``, both repeatable."""
    parser.add_argument(
        "--endpoint", action="append", metavar="E", help="worker PUB endpoint (repeatable)"
    )
    if streams:
        parser.add_argument(
            "--stream", action="append", metavar="ID", help="only this stream id (repeatable)"
        )


def check_at_least(flag: str, value: float | None, least: float = 1) -> None:
    """Raise :class:`UsageError` (``"--top=0 must be at least 1"``) if ``value < least``.

    ``None`` (the flag not given) passes.
    """
    if value is not None and value < least:
        raise UsageError(f"{flag}={value} must be at least {least}")
