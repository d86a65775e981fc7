"""``python -m streamer``: capture a sound device (or play a file) to the inference worker.

Examples
--------
::

    python -m streamer                        # default input -> tcp://127.0.0.1:5555
    python -m streamer --device hw:1          # ALSA card 1, device 0
    python -m streamer --device pulse         # the PulseAudio/PipeWire default source
    python -m streamer --file song.flac       # a file, paced in real time
    python -m streamer --file song.flac --fast
    python -m streamer --list-devices

Exit status: see :class:`streamer.core.ExitStatus` (0 ok or stopped by Ctrl-C /
SIGTERM, 1 error, 2 bad usage or config, 3 input device or file unavailable).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, TextIO

from config import ConfigError, MetricsConfig, load_config
from protocol.security import SecurityError
from streamer.core import ExitStatus, Source, Streamer, StreamerError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("streamer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m streamer",
        description="Send live or recorded audio to the tagstream inference worker.",
        epilog="Settings not given here come from config.toml [streamer].",
    )
    parser.add_argument("--config", metavar="PATH", help="config file (default: config.toml)")
    parser.add_argument("--endpoint", help="worker input endpoint, e.g. tcp://127.0.0.1:5555")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--device", help='input device: "hw:1", "hw:1,0", a name such as "pulse", or an index'
    )
    source.add_argument("--file", metavar="PATH", help="stream an audio file instead")
    source.add_argument(
        "--list-devices", action="store_true", help="print the input devices and exit"
    )
    parser.add_argument(
        "--sample-rate", type=int, metavar="HZ", help="capture rate (0 = device default)"
    )
    parser.add_argument("--channels", type=int, metavar="N", help="channels to capture (0 = 1)")
    parser.add_argument(
        "--stream-id", metavar="ID", help='stream name (default "<hostname>:<device or file>")'
    )
    parser.add_argument(
        "--fast", action="store_true", help="with --file: send as fast as the worker takes it"
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback on errors"
    )
    return parser


def _print_devices(out: TextIO) -> None:
    from streamer.capture import list_input_devices

    devices = list_input_devices()
    if not devices:
        print("no input devices found", file=out)
        return
    print(f"  {'index':>5}  {'channels':>8}  {'rate':>6}  {'host api':<10}  name", file=out)
    for device in devices:
        mark = "*" if device.is_default else " "
        print(
            f"{mark} {device.index:>5}  {device.max_input_channels:>8}  "
            f"{device.default_sample_rate:>6.0f}  {device.host_api:<10}  {device.name}",
            file=out,
        )
    print("* = default input; pass --device INDEX, a name, or an ALSA name such as hw:1", file=out)


@contextmanager
def _stop_on_signals(streamer: Streamer) -> Iterator[None]:
    """SIGINT/SIGTERM ask the streamer to stop; a second one interrupts at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        # No logging here: a handler that writes to stderr while the main thread is
        # writing a log line raises "reentrant call" inside the interrupted write.
        if streamer.stopped:
            raise KeyboardInterrupt
        streamer.stop()

    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    else:
        previous = {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run(args: argparse.Namespace, out: TextIO) -> ExitStatus:
    if args.list_devices:
        _print_devices(out)
        return ExitStatus.OK
    if args.fast and not args.file:
        raise StreamerError("--fast only applies to --file", status=ExitStatus.USAGE)
    cfg = load_config(
        args.config,
        overrides={
            "streamer.endpoint": args.endpoint,
            "streamer.device": args.device,
            "streamer.sample_rate": args.sample_rate,
            "streamer.channels": args.channels,
            "streamer.stream_id": args.stream_id,
        },
    )
    logging.basicConfig(
        level=cfg.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = cfg.streamer
    source: Source
    if args.file:
        from streamer.files import FileSource

        if settings.sample_rate or settings.channels:
            logger.warning("sample_rate and channels are ignored for files: sent as decoded")
        source = FileSource(args.file, block_seconds=settings.block_seconds, realtime=not args.fast)
    else:
        from streamer.capture import DeviceSource

        source = DeviceSource(
            settings.device,
            sample_rate=settings.sample_rate,
            channels=settings.channels,
            block_seconds=settings.block_seconds,
            queue_blocks=settings.queue_blocks,
            retry_seconds=settings.reopen_seconds,
        )
    endpoint = settings.endpoint
    if settings.endpoints and not args.endpoint:  # scale-out: this stream's worker
        from streamer.core import default_stream_id
        from streamer.routing import endpoint_for

        try:
            endpoint = endpoint_for(
                settings.stream_id or default_stream_id(source.name), settings.endpoints
            )
        except ValueError as exc:
            source.close()
            raise StreamerError(f"streamer.endpoints: {exc}", status=ExitStatus.USAGE) from None
    try:
        streamer = Streamer(
            source,
            endpoint=endpoint,
            stream_id=settings.stream_id or None,
            send_hwm=settings.send_hwm,
            status_interval_s=settings.status_interval_seconds,
            security=cfg.security,
        )
    except BaseException:
        source.close()
        raise
    metrics_server = _start_metrics(cfg.metrics, streamer, source)
    try:
        with _stop_on_signals(streamer):
            streamer.run()
    finally:
        if metrics_server is not None:
            metrics_server.close()
    return ExitStatus.OK


def _start_metrics(settings: MetricsConfig, streamer: Streamer, source: Source) -> Any:
    """Serve /metrics and /healthz on ``metrics.streamer_port`` (None when it is 0)."""
    if not settings.streamer_port:
        return None
    from tagstream.metrics import MetricsServer, StreamerMetrics

    def health() -> tuple[bool, dict[str, Any]]:
        stats = streamer.stats()
        return not streamer.stopped, {"stream": streamer.stream_id, "sent": stats.sent}

    server = MetricsServer(
        StreamerMetrics(streamer.stats).registry,
        port=settings.streamer_port,
        bind=settings.bind,
        health=health,
    )
    try:
        server.start()
    except OSError as exc:
        source.close()
        raise StreamerError(
            f"cannot serve metrics.streamer_port={settings.streamer_port} on "
            f"{settings.bind!r} ({exc}); pick another port",
            status=ExitStatus.USAGE,
        ) from None
    return server


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the streamer CLI; return the exit status (see :class:`ExitStatus`).

    Parameters
    ----------
    argv : sequence of str or None
        Arguments without the program name; ``None`` reads ``sys.argv``.
    stdout, stderr : text streams or None
        Where the device list and the error line go (default: ``sys.stdout`` / ``sys.stderr``).
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        return int(_run(args, out))
    except KeyboardInterrupt:
        return int(ExitStatus.OK)
    except (ConfigError, SecurityError, StreamerError) as exc:
        status = exc.status if isinstance(exc, StreamerError) else ExitStatus.USAGE
        if args.traceback:
            traceback.print_exc(file=err)
        print(f"error: {exc}", file=err)
        return int(status)
    except Exception as exc:  # the CLI's one error boundary
        if args.traceback:
            traceback.print_exc(file=err)
        print(f"error: {type(exc).__name__}: {exc} (rerun with --traceback for details)", file=err)
        return int(ExitStatus.ERROR)
