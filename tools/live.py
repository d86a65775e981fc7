"""Live demo: a worker, a streamer and the terminal dashboard, in one command.

    python -m tools.live                      # the embedded demo tune, looped until Ctrl-C
    python -m tools.live --once               # ... played once
    python -m tools.live --device hw:1        # a sound card
    python -m tools.live --file song.flac     # a file, in real time
    python -m tools.live --url http://radio.example:8000/live.mp3   # a network stream

The worker (``python -m inference``) and the streamer (``python -m streamer``)
run as child processes on ipc endpoints in a fresh temporary folder, so nothing
clashes with other workers; their logs go to files in that folder (shown on
failure).  The view is the terminal dashboard of :mod:`tools.dashboard`, over
the history model of :mod:`monitor.history`; the demo and ``--file`` loop
(the streamer starts the file again) and the view counts the audio time on,
keeping the history and the dominant tag.  While the view is on a terminal,
this process's own log lines go to a file (``--log-file``, default
``tagstream-live.log`` in the temporary folder, named under the view), not
across the screen.

Stopping: the children run in their own process group, so a terminal's
Ctrl-C reaches only this process, which then stops them.  Ctrl-C or SIGTERM
stops all of them within about a second, whatever state they are in (each
child gets SIGTERM, then SIGKILL after :data:`TERMINATE_GRACE_S`; a child that
still does not go, e.g. stuck in its sound driver, is left to the kernel
rather than waited for); the children also get SIGTERM if this process dies
(Linux ``PR_SET_PDEATHSIG``).  A child that exits during a stop is never
reported as a failure.

Exit status (README "Exit status"): 0 done or stopped, 1 unexpected error,
2 usage or config error, 3 a missing ``--file``, or the worker or the streamer failed.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from monitor import connect
from monitor.history import DashboardModel
from protocol import Event
from tagstream import cli
from tagstream.errors import UnavailableError
from tools.dashboard import (
    add_log_file_argument,
    default_log_file,
    logs_to_file,
    render_dashboard,
)

if TYPE_CHECKING:
    from config import Config

__all__ = ["LiveError", "LiveOptions", "build_parser", "main", "render", "run_live"]

logger = logging.getLogger(__name__)

#: Longest wait for the worker to load its model and bind.
READY_TIMEOUT_S = 180.0
#: With --once: seconds without updates after the streamer ended before stopping.
DRAIN_QUIET_S = 1.5
#: Seconds a child gets to exit after SIGTERM before SIGKILL.
TERMINATE_GRACE_S = 0.5
#: Longest receive wait of the view's loop, so that a stop is seen promptly.
_POLL_S = 0.1
#: Seconds waited for a SIGKILLed child before leaving it to the kernel.
KILL_WAIT_S = 0.2
TOP_TAGS = 10
STREAM_ID = "live"


#: Exit statuses of a child stopped from outside: its handler ran (0) or the signal
#: came before the handler was installed.
_STOPPED_BY_SIGNAL = (0, -signal.SIGTERM, -signal.SIGINT)


class LiveError(UnavailableError):
    """A child process failed; the message names it and its last log line."""


@dataclass(frozen=True)
class LiveOptions:
    """What :func:`run_live` plays and how.

    Attributes
    ----------
    device : str or None
        Capture device for the streamer (``--device``).
    file : str or None
        Audio file to stream in real time; with none of the three, the demo tune.
    url : str or None
        Network stream for the streamer (``--url``: Icecast/Shoutcast, HLS, a file
        over HTTP); it reconnects by itself, and a static file ends the run.
    once : bool
        Play the file once and exit, instead of looping until stopped.
    config : str or None
        Config file passed to both children.
    log_file : str or None
        Where this process's log lines go while the view is on a terminal.
    """

    device: str | None = None
    file: str | None = None
    url: str | None = None
    once: bool = False
    config: str | None = None
    log_file: str | None = None


def render(model: DashboardModel, *, top_k: int = TOP_TAGS, log_file: str | None = None) -> Any:
    """The terminal dashboard (:func:`tools.dashboard.render_dashboard`) of ``model``."""
    return render_dashboard(
        model, title="tagstream live", top_k=top_k, log_file=log_file, hint="Ctrl-C to stop"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM this child when its parent dies, so no orphan is left."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _Children:
    """The worker and streamer processes; :meth:`stop` leaves none running."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                process_group=0,  # the terminal's Ctrl-C is ours; we stop the children
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self.processes[name] = process
        return process

    def log_tail(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
        errors = [line for line in lines if line.startswith("error:")]
        return (errors or lines or ["(no output)"])[-1]

    def stop(self) -> None:
        """SIGTERM each child, SIGKILL what is left after the grace; never wait longer."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + TERMINATE_GRACE_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        deadline = time.monotonic() + KILL_WAIT_S
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # in the kernel (D state): it goes when it can
                logger.warning(
                    "child still exiting after SIGKILL name=%s pid=%d", name, process.pid
                )

    def worker_running(self) -> bool:
        """Whether the worker still runs.

        Raises
        ------
        LiveError
            It exited with a failure status.  A worker that exited 0 was
            stopped by a signal (SIGTERM from outside): a normal stop.
        """
        worker = self.processes["worker"]
        if worker.poll() is None:
            return True
        if worker.returncode not in _STOPPED_BY_SIGNAL:
            raise LiveError(f"the worker failed ({worker.returncode}): {self.log_tail('worker')}")
        logger.info("the worker stopped; stopping")
        return False


def _wait_ready(children: _Children, ready_file: Path, stop: threading.Event) -> bool:
    """Wait for the worker's ready file; ``False`` if stopped (or it stopped) first."""
    from inference.ready import read_ready_file

    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stop.is_set():
        if read_ready_file(ready_file) is not None:
            return True
        if not children.worker_running():
            return False
        if time.monotonic() > deadline:
            raise LiveError(f"the worker was not ready after {READY_TIMEOUT_S:g} s")
        stop.wait(0.1)
    return False


def run_live(
    options: LiveOptions, *, stop: threading.Event, out: TextIO, settings: Config | None = None
) -> None:
    """Start the worker and the streamer, show their tags until ``stop`` or the end.

    Parameters
    ----------
    options : LiveOptions
    stop : threading.Event
        Set it (e.g. from a signal handler) to stop everything.
    out : text stream
        Where the live view is drawn.
    settings : config.Config or None
        The settings of ``options.config`` (loaded here when ``None``).

    Raises
    ------
    LiveError
        The worker or the streamer failed.
    """
    from rich.console import Console
    from rich.live import Live

    if settings is None:
        from config import load_config

        settings = load_config(options.config)  # fail early, in one line, on a bad config
    cfg = settings
    folder = Path(tempfile.mkdtemp(prefix="tagstream-live-"))
    children = _Children(folder)
    try:
        input_endpoint = f"ipc://{folder}/input"
        publish_endpoint = f"ipc://{folder}/publish"
        ready_file = folder / "worker.ready"
        config_args = ["--config", options.config] if options.config else []
        children.start(
            "worker",
            ["inference", "--input", input_endpoint, "--publish", publish_endpoint,
             "--ready-file", str(ready_file), *config_args],
        )  # fmt: skip
        if options.device is not None:
            source = ["--device", options.device]
        elif options.url is not None:
            source = ["--url", options.url]
        elif options.file is not None:
            source = ["--file", options.file]
        else:
            from tools.demo_audio import write_demo_wav

            source = ["--file", write_demo_wav(str(folder / "demo.wav"))]
        loop = options.device is None and options.url is None and not options.once
        streamer_args = [
            "streamer", "--endpoint", input_endpoint, "--stream-id", STREAM_ID, *source,
            *config_args,
        ]  # fmt: skip
        if not _wait_ready(children, ready_file, stop):
            return
        with connect(publish_endpoint, security=cfg.security, events=True) as subscriber:
            streamer = children.start("streamer", streamer_args)
            # a looped file starts over: the view counts its audio time on
            model = DashboardModel(history_seconds=cfg.web.history_seconds, continue_restarts=loop)
            ended_at: float | None = None
            last_update = time.monotonic()
            console = Console(file=out)
            log_file = options.log_file or default_log_file("live")
            with (
                logs_to_file(log_file if console.is_terminal else None),
                Live(
                    get_renderable=lambda: render(
                        model, log_file=log_file if console.is_terminal else None
                    ),
                    console=console,
                    refresh_per_second=4,
                ),
            ):
                while not stop.is_set():
                    message = subscriber.receive_message(timeout_s=_POLL_S)
                    if isinstance(message, Event):
                        model.add_event(message)
                    elif message is not None:
                        model.add(message)
                        last_update = time.monotonic()
                    if stop.is_set() or not children.worker_running():
                        break
                    if ended_at is None and streamer.poll() is not None:
                        if stop.is_set():
                            break
                        if streamer.returncode not in _STOPPED_BY_SIGNAL:
                            raise LiveError(
                                f"the streamer failed ({streamer.returncode}): "
                                f"{children.log_tail('streamer')}"
                            )
                        if loop:
                            streamer = children.start("streamer", streamer_args)
                        else:
                            ended_at = time.monotonic()
                    if ended_at is not None:
                        now = time.monotonic()
                        if now - max(ended_at, last_update) > DRAIN_QUIET_S:
                            break
    finally:
        children.stop()
        shutil.rmtree(folder, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m tools.live", "Tag live audio (or the demo tune) in the terminal."
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--device", metavar="D", help='capture device, e.g. "hw:1"')
    source.add_argument("--file", metavar="PATH", help="stream a file in real time (looped)")
    source.add_argument(
        "--url",
        metavar="URL",
        help="a network stream: Icecast/Shoutcast, HLS (.m3u8), a file over HTTP(S)",
    )
    parser.add_argument("--once", action="store_true", help="play the file or demo once, exit")
    add_log_file_argument(parser, "live")
    return parser


def run(ctx: cli.Context) -> int:
    """The command's body: run the worker, the streamer and the view until stopped."""
    args = ctx.args
    if args.file is not None and not Path(args.file).is_file():
        raise UnavailableError(f"--file {args.file}: no such file; check the path")
    cfg = ctx.load_config()
    options = LiveOptions(
        device=args.device,
        file=args.file,
        url=args.url,
        once=args.once,
        config=args.config,
        log_file=args.log_file,
    )
    with ctx.on_stop(ctx.stop.set):  # polled: the children are stopped on the way out
        run_live(options, stop=ctx.stop, out=ctx.stdout, settings=cfg)
    return cli.ExitStatus.OK


main = cli.command(build_parser, run, long_running=True)


if __name__ == "__main__":
    # no interpreter teardown (its children are stopped already): on a busy machine
    # it alone took most of a second after Ctrl-C
    cli.exit_now(main())
