"""The one exit-status enum and the one root exception of every tagstream command.

Every error a project module raises derives from :class:`TagstreamError` and
carries the exit status a command returns for it, so the command runner
(:func:`tagstream.cli.run`) needs no per-command list of exception types::

    >>> raise UnavailableError("song.mp3: no such file; check the path")
    # a command prints "error: song.mp3: no such file; check the path" and exits 3

Exit statuses (the same for every command; README "Exit status"):

====  ==============  ==========================================================
code  name            meaning
====  ==============  ==========================================================
0     OK              done; a long-running command stopped by Ctrl-C or SIGTERM
1     ERROR           unexpected failure, or some of a batch's inputs failed
2     USAGE           bad command line or settings (names the key or flag)
3     UNAVAILABLE     an input or the model cannot be had: missing or corrupt
                      file, no such device, a model that does not load
4     ENDPOINT        an address cannot be bound or reached
130   INTERRUPTED     a batch command (tag, report, training) stopped by Ctrl-C
====  ==============  ==========================================================

Ctrl-C and SIGTERM are how a long-running command (worker, streamer, live,
dashboards, recorder, subscriber) is meant to stop, so they exit 0; they cut a
batch command's work short, so it exits 130 as a shell expects.
"""

from __future__ import annotations

import enum

__all__ = [
    "EndpointError",
    "ExitStatus",
    "TagstreamError",
    "UnavailableError",
    "UsageError",
]


class ExitStatus(enum.IntEnum):
    """Exit codes of every tagstream command."""

    OK = 0
    ERROR = 1
    USAGE = 2
    UNAVAILABLE = 3
    ENDPOINT = 4
    INTERRUPTED = 130


class TagstreamError(Exception):
    """Root of every project error; the message is one line for the user.

    Parameters
    ----------
    message : str
        What went wrong and what to do about it.
    status : ExitStatus or None
        Overrides the class's :attr:`status` for this instance.
    """

    #: The exit status a command returns for this error.
    status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str = "", *, status: ExitStatus | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class UsageError(TagstreamError):
    """Bad command line or settings."""

    status = ExitStatus.USAGE


class UnavailableError(TagstreamError):
    """An input, device or model cannot be opened or loaded."""

    status = ExitStatus.UNAVAILABLE


class EndpointError(TagstreamError):
    """An address cannot be bound or reached."""

    status = ExitStatus.ENDPOINT
