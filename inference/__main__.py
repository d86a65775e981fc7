"""``python -m inference``: run the streaming inference worker.

Examples
--------
::

    python -m inference                                  # endpoints from the settings file
    python -m inference --input ipc:///tmp/ts-in --publish ipc:///tmp/ts-out
    python -m inference --model MSD_vgg --hop-seconds 1.0
    python -m inference --mode streaming                 # 1.6-2.8x the streams, updates 1.2 s later
    python -m inference --precision bfloat16             # ~1.9x faster on AVX512_BF16/AMX CPUs
    python -m inference --ready-file /run/ts/worker.json # JSON once it serves (inference.ready)

Exit status (:class:`tagstream.errors.ExitStatus`): 0 stopped by Ctrl-C or
SIGTERM, 1 unexpected error, 2 bad usage or settings (checked before the model
loads), 3 the model could not be loaded, 4 an endpoint could not be bound.
"""

from __future__ import annotations

import argparse
import logging
import os

from tagstream import cli

__all__ = ["build_parser", "main", "run"]

logger = logging.getLogger("inference")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m inference",
        "Tag audio streams in real time: PULL audio blocks, PUB tag updates.",
        epilog="Settings not given here come from the settings file's [inference] and [model].",
    )
    for flag, key, metavar, text in (
        ("--input", "inference.input_endpoint", "ENDPOINT", "endpoint to bind for audio"),
        ("--publish", "inference.publish_endpoint", "ENDPOINT", "PUB endpoint to bind for tags"),
        ("--model", "model.name", "NAME|PATH", "pretrained name or model folder"),
        ("--hop-seconds", "inference.hop_seconds", "S", "seconds of audio between updates"),
    ):
        cli.setting_flag(parser, flag, key=key, metavar=metavar, help=text)
    cli.setting_flag(
        parser,
        "--mode",
        key="inference.mode",
        help="exact: whole window per update; streaming: only new frames (musicnn, +1.2 s)",
    )
    cli.setting_flag(
        parser,
        "--backend",
        key="model.backend",
        help="what runs the network: onnxruntime (no TensorFlow loaded), tensorflow, or auto "
        "(onnxruntime; tensorflow with --precision bfloat16)",
    )
    cli.setting_flag(
        parser,
        "--precision",
        key="model.precision",
        help="bfloat16: ~1.9x faster on CPUs with AVX512_BF16/AMX, within ~0.01",
    )
    parser.add_argument(
        "--ready-file",
        metavar="PATH",
        help="write JSON {pid, endpoints, model, mode, backend, precision} here once serving",
    )
    return parser


def run(ctx: cli.Context) -> int:
    """Serve until SIGINT or SIGTERM (the body handed to :func:`tagstream.cli.run`)."""
    args = ctx.args
    cfg = ctx.load_config()
    from inference.ready import remove_ready_file, write_ready_file
    from inference.worker import Worker

    if args.ready_file:
        remove_ready_file(args.ready_file)  # a stale file must not say this worker is ready
    worker = Worker(cfg, started_at=ctx.started_at)
    try:
        worker.start()  # SIGINT/SIGTERM while the model loads: KeyboardInterrupt, exit 0
        with ctx.on_stop(worker.stop):
            if args.ready_file:
                assert worker.tagger is not None
                write_ready_file(
                    args.ready_file,
                    {
                        "pid": os.getpid(),
                        "input_endpoint": worker.input_endpoint,
                        "publish_endpoint": worker.publish_endpoint,
                        "model": worker.tagger.name,
                        "mode": cfg.inference.mode,
                        "backend": worker.tagger.backend,
                        "precision": worker.tagger.precision,
                    },
                )
            worker.run()
    finally:
        worker.close()
        if args.ready_file:
            remove_ready_file(args.ready_file, pid=os.getpid())
        if ctx.stop.is_set():
            logger.info("stopping reason=signal")
    stats = worker.stats()
    logger.info(
        "stopped messages=%d windows=%d rejected=%d gaps=%d drops=%d shed=%d",
        stats.messages,
        stats.windows,
        stats.rejected_total,
        stats.gaps,
        stats.dropped + stats.refused,
        sum(stats.shed.values()),
    )
    return cli.ExitStatus.OK


main = cli.command(build_parser, run, long_running=True)

if __name__ == "__main__":
    # Sockets are closed and the last log line written by now. Interpreter teardown with
    # TensorFlow loaded takes ~0.9 s more, which would put SIGTERM-to-exit over a second.
    cli.exit_now(main())
