"""``tagstream``: the one command that reaches every tagstream command.

::

    tagstream tag song.mp3 --json          # = python -m tools.tag song.mp3 --json
    tagstream worker --mode streaming      # = python -m inference --mode streaming
    tagstream stream --device hw:1         # = python -m streamer --device hw:1
    tagstream training train --config C    # = python -m training train --config C
    tagstream help worker                  # = tagstream worker --help

Each subcommand is exactly one module's command line: everything after the
subcommand's name goes unchanged to that module's ``main(argv)``, so options,
``--config``, ``--traceback``, output and exit status are the same as with
``python -m``.  Modules are imported only when their command runs, so
``tagstream --help`` answers without loading TensorFlow.

Exit status: the subcommand's (:class:`tagstream.errors.ExitStatus`); 2 for an
unknown subcommand.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tagstream import __version__, cli
from tagstream.errors import ExitStatus

__all__ = ["COMMANDS", "Command", "console", "main"]


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: the module whose ``main(argv, *, stdout, stderr) -> int`` runs it.

    Attributes
    ----------
    module : str
        Imported when the command runs.
    summary : str
        One line for ``tagstream --help``.
    fast_exit : bool
        Leave without interpreter teardown (:func:`tagstream.cli.exit_now`): for
        processes that hold TensorFlow and must stop within a second of SIGTERM.
    """

    module: str
    summary: str
    fast_exit: bool = False


#: Every subcommand, in the order ``tagstream --help`` lists them.
COMMANDS: dict[str, Command] = {
    "tag": Command("tools.tag", "tag audio files: top tags per file, or JSON"),
    "archive": Command("tools.archive", "tag an archive into Parquet, resumably (local or Ray)"),
    "live": Command("tools.live", "worker, streamer and a terminal view in one process", True),
    "worker": Command("inference.__main__", "the inference worker: PULL audio, PUB tags", True),
    "stream": Command("streamer.cli", "capture a device or read a file and send it to a worker"),
    "subscribe": Command("tools.subscribe", "print tag updates as they arrive"),
    "dashboard": Command("tools.dashboard", "live tags of every stream in the terminal"),
    "web": Command("tools.web", "live tags of every stream in a web page"),
    "record": Command("tools.record", "record every tag update into SQLite"),
    "report": Command("tools.report", "summaries and plots of a recording"),
    "alert": Command("tools.alert", "deliver alerts chosen by rules to webhooks and commands"),
    "keys": Command("tools.keys", "create CURVE key pairs for [security]"),
    "training": Command("training.__main__", "train, evaluate and export models"),
}


def _help() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: tagstream COMMAND [ARGS...]",
        "",
        "Real-time music tagging. Every command is also `python -m MODULE`;",
        "`tagstream COMMAND --help` shows its options.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()),
        "",
        "options:",
        "  -h, --help     show this message and exit",
        "  --version      show the version and where tagstream is installed",
        "",
        "Settings: --config PATH, else $TAGSTREAM_CONFIG, else ./config.toml, else",
        "~/.config/tagstream/config.toml, else the built-in defaults.",
    ]
    return "\n".join(lines) + "\n"


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run ``tagstream COMMAND ARGS...``; return the command's exit status.

    Parameters
    ----------
    argv : sequence of str or None
        Arguments without the program name; ``None`` reads ``sys.argv``.
    stdout, stderr : text streams or None
        Passed on to the command's ``main`` (default ``sys.stdout`` / ``sys.stderr``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    if not args:
        err.write(_help())
        return int(ExitStatus.USAGE)
    name, rest = args[0], args[1:]
    if name in ("-h", "--help"):
        out.write(_help())
        return int(ExitStatus.OK)
    if name == "--version":
        out.write(f"tagstream {__version__} ({Path(__file__).resolve().parent})\n")
        return int(ExitStatus.OK)
    if name == "help":
        if not rest:
            out.write(_help())
            return int(ExitStatus.OK)
        name, rest = rest[0], ["--help"]
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        err.write(f"error: unknown command {name!r}; {hint}run tagstream --help for the list\n")
        return int(ExitStatus.USAGE)
    cli.PROG = f"tagstream {name}"
    streams = {k: v for k, v in (("stdout", stdout), ("stderr", stderr)) if v is not None}
    try:
        module = importlib.import_module(command.module)
    except KeyboardInterrupt:  # Ctrl-C while importing, before the command's own handlers
        return int(ExitStatus.INTERRUPTED)
    except ImportError:
        hidden_by = _hidden_by(command.module)
        if hidden_by is None:
            raise
        err.write(
            f"error: Python took the folder {hidden_by} (no __init__.py: another package's, "
            f"tf2onnx installs one) for tagstream's {command.module.split('.')[0]!r}; run "
            "scripts/install.sh again, which removes tf2onnx's, or delete that folder\n"
        )
        return int(ExitStatus.UNAVAILABLE)
    return int(module.main(rest, **streams))


def _hidden_by(module: str) -> str | None:
    """The folder that hides tagstream's top-level package of ``module``, if one does.

    A folder of that name without ``__init__.py`` on ``sys.path`` (tf2onnx's wheel
    installs a ``tools`` one into site-packages) is a namespace package, and Python
    finds it before an editable install's own package.
    """
    top = sys.modules.get(module.split(".")[0])
    if top is None or getattr(top, "__file__", None) is not None:
        return None
    return ", ".join(str(path) for path in getattr(top, "__path__", ())) or None


def console() -> None:
    """The ``tagstream`` console script: :func:`main`, then leave with its status."""
    args = sys.argv[1:]
    status = main(args)
    command = COMMANDS.get(args[0]) if args else None
    if command is not None and command.fast_exit:
        cli.exit_now(status)
    sys.exit(status)


if __name__ == "__main__":
    console()
