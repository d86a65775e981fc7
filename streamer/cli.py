"""``python -m streamer``: send a sound device, a file, a network stream or many stations.

Examples
--------
::

    python -m streamer                        # default input -> tcp://127.0.0.1:5555
    python -m streamer --device hw:1          # ALSA card 1, device 0
    python -m streamer --device pulse         # the PulseAudio/PipeWire default source
    python -m streamer --device v.monitor     # a PulseAudio/PipeWire source by name
    python -m streamer --file song.flac       # a file, paced in real time
    python -m streamer --file song.flac --fast
    python -m streamer --url http://radio.example:8000/live.mp3 --stream-id radio-1
    python -m streamer --stations stations.toml   # many stations, one thread each
    python -m streamer --list-devices

Exit status (:class:`tagstream.errors.ExitStatus`): 0 ok or stopped by Ctrl-C /
SIGTERM, 1 error, 2 bad usage or config, 3 input device or file unavailable,
4 the metrics port cannot be bound.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO

from config import Config, MetricsConfig
from streamer.core import Source, Streamer
from tagstream import cli
from tagstream.errors import EndpointError, ExitStatus, TagstreamError, UsageError

if TYPE_CHECKING:
    from tagstream.metrics import MetricsServer

__all__ = ["build_parser", "main", "run"]

logger = logging.getLogger("streamer")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m streamer",
        "Send live or recorded audio to the tagstream inference worker.",
        epilog="Settings not given here come from the settings file's [streamer] section.",
    )
    cli.setting_flag(
        parser,
        "--endpoint",
        key="streamer.endpoint",
        help="worker input endpoint, e.g. tcp://127.0.0.1:5555",
    )
    source = parser.add_mutually_exclusive_group()
    cli.setting_flag(
        source,
        "--device",
        key="streamer.device",
        help='input device: "hw:1", "hw:1,0", an index, a PortAudio name such as "pulse", '
        'or a PulseAudio/PipeWire source name such as "alsa_output.pci-0000_00_1f.3.'
        'analog-stereo.monitor" (see --list-devices)',
    )
    source.add_argument("--file", metavar="PATH", help="stream an audio file instead")
    source.add_argument(
        "--url",
        help="a network stream: Icecast/Shoutcast, HLS (.m3u8), a file over HTTP(S), "
        "rtsp/srt/rtmp (decoded by ffmpeg; reconnects by itself)",
    )
    source.add_argument(
        "--stations",
        metavar="FILE",
        help="follow every station of a station file (TOML, [[station]] tables; "
        "see deploy/stations.example.toml), each with its own reader and reconnects",
    )
    source.add_argument(
        "--list-devices",
        action="store_true",
        help="print the input devices and the PulseAudio/PipeWire sources, and exit",
    )
    cli.setting_flag(
        parser,
        "--sample-rate",
        key="streamer.sample_rate",
        metavar="HZ",
        help="capture rate (0 = device default)",
    )
    cli.setting_flag(
        parser, "--channels", key="streamer.channels", metavar="N", help="channels (0 = 1)"
    )
    cli.setting_flag(
        parser,
        "--stream-id",
        key="streamer.stream_id",
        metavar="ID",
        help='stream name (default "<hostname>:<device or file>")',
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="with --file or a static --url: send as fast as the worker takes it",
    )
    return parser


def _print_devices(out: TextIO) -> None:
    from streamer.capture import list_input_devices, list_sound_server_sources

    try:
        devices = list_input_devices()
    except TagstreamError as exc:  # no PortAudio: the sound server's sources may still be there
        print(f"no PortAudio input devices: {exc}", file=out)
        devices = []
    sources = list_sound_server_sources()
    if sources:
        print("PulseAudio/PipeWire sources (pass --device NAME):", file=out)
        for server_source in sources:
            mark = "*" if server_source.is_default else " "
            print(f"{mark} {server_source.name}  ({server_source.description})", file=out)
        print("* = the server's default source", file=out)
        if devices:
            print(file=out)
    if not devices:
        if not sources:
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


def run(ctx: cli.Context) -> ExitStatus:
    """Stream until the source ends or Ctrl-C / SIGTERM; the body :func:`main` hands to cli.run."""
    args = ctx.args
    if args.list_devices:
        _print_devices(ctx.stdout)
        return ExitStatus.OK
    if args.fast and not (args.file or args.url):
        raise UsageError("--fast only applies to --file and --url")
    cfg = ctx.load_config()
    settings = cfg.streamer
    if args.stations:
        return _run_stations(ctx, args.stations, cfg)
    source: Source
    if args.file:
        from streamer.files import FileSource

        if settings.sample_rate or settings.channels:
            logger.warning("sample_rate and channels are ignored for files: sent as decoded")
        source = FileSource(args.file, block_seconds=settings.block_seconds, realtime=not args.fast)
    elif args.url:
        from streamer.network import NetworkSource

        if settings.channels:
            logger.warning("channels is ignored for --url: sent as mono")
        source = NetworkSource(
            args.url,
            sample_rate=settings.sample_rate or 16000,  # 0 = the model's rate
            block_seconds=settings.block_seconds,
            fast=args.fast,
            stall_timeout_s=settings.stall_timeout_seconds,
            backoff_initial_s=settings.reconnect_initial_seconds,
            backoff_max_s=settings.reconnect_max_seconds,
        )
    else:
        from streamer.capture import open_device

        source = open_device(
            settings.device,
            sample_rate=settings.sample_rate,
            channels=settings.channels,
            block_seconds=settings.block_seconds,
            queue_blocks=settings.queue_blocks,
            retry_seconds=settings.reopen_seconds,
        )
    try:
        endpoint = settings.endpoint
        given_endpoint = getattr(args, "streamer.endpoint")  # --endpoint beats scale-out
        if settings.endpoints and not given_endpoint:  # scale-out: this stream's worker
            from streamer.core import default_stream_id
            from streamer.routing import endpoint_for

            try:
                endpoint = endpoint_for(
                    settings.stream_id or default_stream_id(source.name), settings.endpoints
                )
            except ValueError as exc:
                raise UsageError(f"streamer.endpoints: {exc}") from None
        streamer = Streamer(
            source,
            endpoint=endpoint,
            stream_id=settings.stream_id or None,
            send_hwm=settings.send_hwm,
            status_interval_s=settings.status_interval_seconds,
            security=cfg.security,
        )
        metrics_server = _start_metrics(cfg.metrics, streamer)
    except BaseException:
        source.close()
        raise
    try:
        with ctx.on_stop(streamer.stop):
            streamer.run()
    finally:
        if metrics_server is not None:
            metrics_server.close()
    return ExitStatus.OK


def _run_stations(ctx: cli.Context, path: str, cfg: Config) -> ExitStatus:
    """Follow every station of the file until Ctrl-C / SIGTERM (or every static one ended)."""
    from streamer.stations import Stations, load_stations

    if getattr(ctx.args, "streamer.stream_id"):
        raise UsageError("--stream-id does not apply to --stations: each station has its id")
    stations = Stations(load_stations(path, cfg), cfg)
    if cfg.metrics.streamer_port:
        logger.warning(
            "metrics.streamer_port is not served with --stations; each station's counters "
            "are in its status lines"
        )
    with ctx.on_stop(stations.stop):
        stations.run()
    return ExitStatus.OK


def _start_metrics(settings: MetricsConfig, streamer: Streamer) -> MetricsServer | None:
    """Serve /metrics and /healthz on ``metrics.streamer_port`` (None when it is 0).

    Raises
    ------
    tagstream.errors.EndpointError
        The port cannot be bound (exit status 4).
    """
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
        raise EndpointError(
            f"cannot serve metrics.streamer_port={settings.streamer_port} on "
            f"{settings.bind!r} ({exc}); pick another port"
        ) from None
    return server


main = cli.command(build_parser, run, long_running=True)

if __name__ == "__main__":
    sys.exit(main())
