"""User-facing tools: file tagging, subscribers, dashboards, the live demo.

Each module is a thin command over a library (``model``, ``monitor``, ...);
this package holds only the arguments their command lines share; each ``main``
is made by :func:`tagstream.cli.command`.
"""

from __future__ import annotations

import argparse

from tagstream import cli
from tagstream.errors import UsageError

__all__ = ["add_subscription_arguments", "check_at_least"]


def add_subscription_arguments(parser: argparse.ArgumentParser, *, streams: bool = True) -> None:
    """Add ``--endpoint E`` and (with ``streams``) ``--stream ID``, both repeatable."""
    cli.setting_flag(
        parser,
        "--endpoint",
        key="subscribe.endpoints",
        metavar="E",
        help="worker PUB endpoint (repeatable; default: subscribe.endpoints)",
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
