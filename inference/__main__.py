"""``python -m inference``: run the streaming inference worker.

Examples
--------
::

    python -m inference                                  # endpoints from config.toml
    python -m inference --input ipc:///tmp/ts-in --publish ipc:///tmp/ts-out
    python -m inference --model MSD_vgg --hop-seconds 1.0
    python -m inference --mode streaming                 # 1.6-2.8x the streams, updates 1.2 s later
    python -m inference --precision bfloat16             # ~1.9x faster on AVX512_BF16/AMX CPUs

Exit status (:class:`ExitStatus`): 0 stopped by Ctrl-C or SIGTERM, 1 unexpected
error, 2 bad usage or config, 3 the model could not be loaded, 4 an endpoint
could not be bound.
"""

from __future__ import annotations

import argparse
import enum
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from config import ConfigError, load_config

__all__ = ["ExitStatus", "build_parser", "main"]

logger = logging.getLogger("inference")


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    MODEL = 3
    ENDPOINT = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference",
        description="Tag audio streams in real time: PULL audio blocks, PUB tag updates.",
        epilog="Settings not given here come from config.toml [inference] and [model].",
    )
    parser.add_argument("--config", metavar="PATH", help="config file (default: config.toml)")
    parser.add_argument("--input", metavar="ENDPOINT", help="PULL endpoint to bind for audio")
    parser.add_argument("--publish", metavar="ENDPOINT", help="PUB endpoint to bind for tags")
    parser.add_argument("--model", metavar="NAME|PATH", help="pretrained name or model folder")
    parser.add_argument(
        "--hop-seconds", type=float, metavar="S", help="seconds of audio between updates"
    )
    parser.add_argument(
        "--mode",
        choices=("exact", "streaming"),
        help="exact: whole window per update; streaming: only new frames (musicnn, +1.2 s)",
    )
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        help="bfloat16: ~1.9x faster on CPUs with AVX512_BF16/AMX, within ~0.01",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback on errors"
    )
    return parser


def _serve(args: argparse.Namespace, started_at: float) -> ExitStatus:
    cfg = load_config(
        args.config,
        overrides={
            "inference.input_endpoint": args.input,
            "inference.publish_endpoint": args.publish,
            "inference.hop_seconds": args.hop_seconds,
            "inference.mode": args.mode,
            "model.name": args.model,
            "model.precision": args.precision,
        },
    )
    logging.basicConfig(
        level=cfg.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from inference.worker import Worker

    worker = Worker(cfg, started_at=started_at)
    serving = threading.Event()
    received: list[str] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        # No logging here: a handler that writes to stderr while the main thread is
        # writing a log line raises "reentrant call" inside the interrupted write.
        received.append(signal.Signals(signum).name)
        if not serving.is_set():
            raise KeyboardInterrupt  # still loading the model: leave at once
        worker.stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.start()
        serving.set()
        if not worker.stopping:
            worker.run()
    finally:
        worker.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
        if received:
            logger.info("stopping signal=%s", received[0])
    logger.info("stopped %s", " ".join(f"{k}={v}" for k, v in _summary(worker).items()))
    return ExitStatus.OK


def _summary(worker: object) -> dict[str, int]:
    stats = worker.stats()  # type: ignore[attr-defined]
    return {
        "messages": stats.messages,
        "windows": stats.windows,
        "rejected": stats.rejected_total,
        "gaps": stats.gaps,
        "drops": stats.dropped + stats.refused,
    }


def main(argv: Sequence[str] | None = None, *, stderr: TextIO | None = None) -> int:
    """Run the worker until Ctrl-C or SIGTERM; return the exit status (:class:`ExitStatus`).

    Parameters
    ----------
    argv : sequence of str or None
        Arguments without the program name; ``None`` reads ``sys.argv``.
    stderr : text stream or None
        Where the one-line error goes (default ``sys.stderr``).
    """
    started_at = time.monotonic()
    err = stderr if stderr is not None else sys.stderr
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    from inference.worker import WorkerError
    from model import ContractError, ModelLoadError

    try:
        return int(_serve(args, started_at))
    except KeyboardInterrupt:
        return int(ExitStatus.OK)
    except (ConfigError, WorkerError, ModelLoadError, ContractError) as exc:
        status = ExitStatus.MODEL
        if isinstance(exc, ConfigError):
            status = ExitStatus.USAGE
        elif isinstance(exc, WorkerError):
            status = ExitStatus.ENDPOINT if exc.reason == "endpoint" else ExitStatus.USAGE
        if args.traceback:
            traceback.print_exc(file=err)
        print(f"error: {exc}", file=err)
        return int(status)
    except Exception as exc:  # the CLI's one error boundary
        if args.traceback:
            traceback.print_exc(file=err)
        print(f"error: {type(exc).__name__}: {exc} (rerun with --traceback for details)", file=err)
        return int(ExitStatus.ERROR)


if __name__ == "__main__":
    status = main()
    # Sockets are closed and the last log line written by now. Interpreter teardown with
    # TensorFlow loaded takes ~0.9 s more, which would put SIGTERM-to-exit over a second:
    # flush and leave without it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
