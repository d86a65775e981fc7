"""The process edge: the one way every tagstream command starts, stops and fails.

A command is a parser and a body handed to :func:`run`::

    def build_parser() -> argparse.ArgumentParser:
        parser = cli.parser("python -m tools.keys", "Create ZeroMQ CURVE key pairs.")
        parser.add_argument("--out", required=True)
        return parser

    def run(ctx: cli.Context) -> cli.ExitStatus:
        cfg = ctx.load_config({"model.name": ctx.args.model})   # also sets up logging
        ...
        return cli.ExitStatus.OK

    def main(argv=None, *, stdout=None, stderr=None) -> int:
        return cli.run(build_parser(), run, argv, stdout=stdout, stderr=stderr)

:func:`run` owns what used to be copied into every ``main``:

- argument parsing (``--help`` exits 0, a usage error exits :attr:`ExitStatus.USAGE`);
- ``--config`` and ``--traceback`` (added by :func:`parser`);
- settings through :meth:`Context.load_config` (the one loader, command-line
  overrides through the same checks) and one logging set-up at the configured level;
- SIGINT and SIGTERM: the handler only sets :attr:`Context.stop` and calls the
  callbacks registered with :meth:`Context.on_stop` (it never logs: a handler
  that writes while the main thread writes raises "reentrant call"). While no
  callback is registered it also raises :class:`KeyboardInterrupt`, so a command
  busy loading a model leaves at once;
- one error boundary: a :class:`~tagstream.errors.TagstreamError` prints
  ``error: <message>`` and returns the status it carries; anything else prints
  its type and message and returns :attr:`ExitStatus.ERROR`; ``--traceback``
  adds the full trace. Ctrl-C returns OK for a long-running command and
  :attr:`ExitStatus.INTERRUPTED` (130) for a batch command.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from tagstream.errors import ExitStatus, TagstreamError, UsageError

if TYPE_CHECKING:
    from config import Config

__all__ = [
    "LOG_FORMAT",
    "Context",
    "ExitStatus",
    "Main",
    "command",
    "exit_now",
    "parser",
    "run",
    "setting_flag",
    "setup_logging",
]

#: The one log format of every process: time, level, logger, key=value message.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Set by the ``tagstream`` dispatcher (``"tagstream tag"``) so that ``--help`` and usage
#: errors name the command the user typed; ``None`` keeps each module's own ``prog``.
PROG: str | None = None


def parser(
    prog: str, description: str, *, epilog: str | None = None, config: bool = True
) -> argparse.ArgumentParser:
    """An argument parser with the options every command shares.

    Parameters
    ----------
    prog : str
        How the user runs the command (``"python -m tools.tag"``).
    description, epilog : str
        Shown by ``--help``.
    config : bool
        Add ``--config PATH`` (commands that read settings).
    """
    p = argparse.ArgumentParser(prog=PROG or prog, description=description, epilog=epilog)
    if config:
        p.add_argument(
            "--config",
            metavar="PATH",
            help="settings file (default: $TAGSTREAM_CONFIG, ./config.toml, "
            "~/.config/tagstream/config.toml, built-in defaults)",
        )
    p.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    return p


def setting_flag(
    parser: argparse.ArgumentParser | argparse._ActionsContainer,
    *flags: str,
    key: str,
    help: str,
    metavar: str | None = None,
) -> argparse.Action:
    """Add a command-line flag that overrides setting ``key`` (``"inference.hop_seconds"``).

    The flag's type, choices and (for lists) repetition come from the setting's field in
    the settings schema, and :meth:`Context.load_config` applies every such flag given on
    the command line through the same checks as the file's values, so a command never
    lists its overrides again::

        cli.setting_flag(parser, "--hop-seconds", key="inference.hop_seconds", help="...")
        cfg = ctx.load_config()           # cfg.inference.hop_seconds is the flag's value

    A ``bool`` setting becomes a switch that sets it to true.
    """
    import typing

    from config import Config

    section, _, name = key.partition(".")
    sections = typing.get_type_hints(Config)
    if section not in sections:
        raise KeyError(f"{key}: no such settings section")
    fields = {f.name: f for f in dataclasses.fields(sections[section])}
    if name not in fields:
        raise KeyError(f"{key}: no such setting")
    tp = typing.get_type_hints(sections[section])[name]
    options: dict[str, Any] = {"dest": key, "help": help, "default": None}
    if tp is bool:
        options["action"] = "store_const"
        options["const"] = True
    elif typing.get_origin(tp) is tuple:
        options["action"] = "append"
        options["metavar"] = metavar
    else:
        options["type"] = tp
        options["metavar"] = metavar
        allowed = fields[name].metadata.get("choices")
        if allowed is not None:
            options["choices"] = allowed
    return parser.add_argument(*flags, **options)


def setup_logging(level: str | int = "INFO", *, stream: TextIO | None = None) -> None:
    """Send every logger's records to ``stream`` (stderr) in :data:`LOG_FORMAT`.

    Called once per process by :meth:`Context.load_config`; calling it again
    changes the level and the stream.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tagstream", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler._tagstream = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


@dataclasses.dataclass
class Context:
    """What a command's body gets from :func:`run`.

    Attributes
    ----------
    args : argparse.Namespace
        The parsed command line.
    stdout, stderr : text streams
        Where output and the error line go (injectable: tests drive the real ``main``).
    stop : threading.Event
        Set by SIGINT or SIGTERM; long-running bodies poll it or register a callback.
    started_at : float
        ``time.monotonic()`` when the command started (for start-up timings).
    """

    args: argparse.Namespace
    stdout: TextIO
    stderr: TextIO
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    started_at: float = dataclasses.field(default_factory=time.monotonic)
    _callbacks: list[Callable[[], None]] = dataclasses.field(default_factory=list)
    config: Config | None = None

    def load_config(self, overrides: Mapping[str, Any] | None = None) -> Config:
        """Load settings (``--config`` or the usual places) and set up logging.

        Parameters
        ----------
        overrides : mapping {"section.key": value}
            Values beyond the flags made by :func:`setting_flag` (which are applied
            without being listed); ``None`` values are ignored.  They pass the same
            checks as the file's values.

        Raises
        ------
        config.ConfigError
            One line naming the key (exit status :attr:`ExitStatus.USAGE`).
        """
        from config import load_config

        # Flags made by setting_flag() carry their setting's key as their dest.
        given = {key: value for key, value in vars(self.args).items() if "." in key}
        given.update({key: value for key, value in (overrides or {}).items() if value is not None})
        cfg = load_config(getattr(self.args, "config", None), overrides=given)
        setup_logging(cfg.logging.level)
        self.config = cfg
        return cfg

    @contextlib.contextmanager
    def on_stop(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call ``callback`` on SIGINT/SIGTERM while inside the ``with`` block.

        The callback runs inside the signal handler: it must only set flags or
        events (``worker.stop()``-style), never log or block.  While any callback
        is registered the handler does not raise :class:`KeyboardInterrupt`.
        """
        self._callbacks.append(callback)
        if self.stop.is_set():
            callback()
        try:
            yield
        finally:
            self._callbacks.remove(callback)

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()
        if not self._callbacks:
            raise KeyboardInterrupt
        for callback in list(self._callbacks):
            callback()


Body = Callable[[Context], "ExitStatus | int"]


def run(
    arg_parser: argparse.ArgumentParser,
    body: Body,
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    long_running: bool = False,
) -> int:
    """Parse ``argv``, run ``body`` inside the one error boundary; return the exit status.

    Parameters
    ----------
    arg_parser : argparse.ArgumentParser
        Usually from :func:`parser`.
    body : callable (Context) -> ExitStatus or int
        The command itself.
    argv : sequence of str or None
        Arguments without the program name; ``None`` reads ``sys.argv``.
    stdout, stderr : text streams or None
        Default ``sys.stdout`` / ``sys.stderr``.
    long_running : bool
        Ctrl-C and SIGTERM are the normal way to stop it: they return
        :attr:`ExitStatus.OK` instead of :attr:`ExitStatus.INTERRUPTED`.
    """
    started_at = time.monotonic()
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = arg_parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (argparse's 2)
        return int(ExitStatus.OK if not exc.code else ExitStatus.USAGE)
    ctx = Context(args=args, stdout=out, stderr=err, started_at=started_at)
    show_traceback = bool(getattr(args, "traceback", False))
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous: dict[int, Any] = {}
    if on_main_thread:
        previous = {sig: signal.signal(sig, ctx._handle_signal) for sig in _SIGNALS}
    try:
        return int(body(ctx))
    except KeyboardInterrupt:
        return int(ExitStatus.OK if long_running else ExitStatus.INTERRUPTED)
    except TagstreamError as exc:
        if show_traceback:
            traceback.print_exc(file=err)
        print(f"error: {exc}", file=err)
        return int(exc.status)
    except BrokenPipeError:  # `... | head`: the reader left, nothing more to say
        return int(ExitStatus.OK)
    except Exception as exc:  # the one error boundary
        if show_traceback:
            traceback.print_exc(file=err)
        print(f"error: {type(exc).__name__}: {exc} (rerun with --traceback for details)", file=err)
        return int(ExitStatus.ERROR)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
    body: Body,
    *,
    long_running: bool = False,
) -> Main:
    """A command's ``main(argv=None, *, stdout=None, stderr=None) -> int`` over :func:`run`.

    Parameters
    ----------
    build_parser : callable () -> argparse.ArgumentParser
        The command line (built with :func:`parser`).
    body : callable (Context) -> ExitStatus or int
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
        return run(
            build_parser(), body, argv, stdout=stdout, stderr=stderr, long_running=long_running
        )

    main.__module__ = body.__module__
    main.__doc__ = f"Run ``python -m {body.__module__}``; return its exit status."
    return main


def usage(message: str) -> UsageError:
    """A usage error to raise from a body (exit status :attr:`ExitStatus.USAGE`)."""
    return UsageError(message)


def exit_now(status: int) -> None:
    """Flush logs and standard streams, then leave without interpreter teardown.

    For processes with TensorFlow loaded, whose teardown takes about a second
    more and would put SIGTERM-to-exit over a second.  Everything the command
    owns must be closed already.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
