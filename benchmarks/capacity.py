"""Worker capacity: the most real-time streams one worker sustains, by mode and backend.

    .venv/bin/python -m benchmarks.capacity [--seconds 20] [--hops 1.0 0.5] [--start 4]
        [--modes exact exact-onnxruntime streaming streaming-onnxruntime]

For every mode and hop, a worker subprocess (``python -m inference --mode M
--hop-seconds H``) is fed by :mod:`benchmarks.latency`'s load generator (0.1 s
blocks of every stream, paced in real time) and measured by its subscriber.  A
trial passes when the p99 latency stays below the hop and at least 90 % of the
expected updates arrived; the stream count is doubled from ``--start`` until a
trial fails, then bisected between the last pass and the first failure (to
within 12.5 %).  A mode with an ``-onnxruntime`` suffix (``streaming-onnxruntime``)
runs the worker with ``--backend onnxruntime``, one with a ``-bfloat16``
suffix (``exact-bfloat16``) with ``--precision bfloat16``; the others run on
TensorFlow, float32.  ``exact-nonetwork`` is exact mode with ``[content] network =
false`` (the content classifier without inaSpeechSegmenter's network, which costs
about 14 ms of a core per window).  ``--stagger`` spreads the streams'
starts over the hop, as independent feeds are; without it every stream's
window falls due at the same moment (the worst case).  ``--p99-ms`` sets a stricter latency bound.

Latency runs from the last sample an update needed: in streaming mode that is
the end of the window's look-ahead (73 frames = 1.168 s after the window), so
the column measures the work, and the look-ahead's fixed delay is printed
beside it.  The baseline is the first of ``--modes`` (exact mode on TensorFlow by
default), measured in the same run: the ratio column is streams sustained /
the baseline's at the same hop.  The ceiling
column is what the model's arithmetic allows at the CPU's measured matmul rate
(see :func:`measured_gflops`).  The CPU and the load average are printed with
the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from benchmarks.common import cpu_description, load_description
from benchmarks.latency import MODES, run_config, worker_settings
from benchmarks.streaming_hop import WINDOW_GFLOP

LOOKAHEAD_S = 73 * 256 / 16000


@dataclass(frozen=True)
class Trial:
    mode: str
    hop_seconds: float
    streams: int
    updates_per_s: float
    p50_ms: float
    p99_ms: float
    p99_limit_ms: float

    @property
    def passed(self) -> bool:
        expected = self.streams / self.hop_seconds
        return self.p99_ms < self.p99_limit_ms and self.updates_per_s >= 0.9 * expected


def trial(
    mode: str,
    hop: float,
    streams: int,
    seconds: float,
    warmup: float,
    *,
    stagger: bool = False,
    p99_limit_ms: float | None = None,
) -> Trial:
    settings = worker_settings(mode)
    lookahead = LOOKAHEAD_S if settings["mode"] == "streaming" else 0.0
    row = run_config(
        streams, seconds, hop, warmup, **settings, lookahead_s=lookahead, stagger=stagger
    )
    result = Trial(
        mode=mode,
        hop_seconds=hop,
        streams=streams,
        updates_per_s=float(row["updates_per_s"]),
        p50_ms=float(row["p50_ms"]),
        p99_ms=float(row["p99_ms"]),
        p99_limit_ms=1000.0 * hop if p99_limit_ms is None else p99_limit_ms,
    )
    print(
        f"  trial mode={mode} hop={hop:g} streams={streams} updates/s={result.updates_per_s:.1f} "
        f"(expected {streams / hop:.1f}) p50={result.p50_ms:.0f} ms p99={result.p99_ms:.0f} ms "
        f"-> {'pass' if result.passed else 'fail'}",
        flush=True,
    )
    return result


def search(
    mode: str,
    hop: float,
    *,
    start: int,
    seconds: float,
    warmup: float,
    limit: int,
    stagger: bool = False,
    p99_limit_ms: float | None = None,
) -> tuple[Trial | None, list[Trial]]:
    """Double from ``start`` until a failure, then bisect; return the best pass and all trials."""
    trials: list[Trial] = []
    best: Trial | None = None
    failed: int | None = None
    streams = start
    while streams <= limit:
        result = trial(
            mode, hop, streams, seconds, warmup, stagger=stagger, p99_limit_ms=p99_limit_ms
        )
        trials.append(result)
        if not result.passed:
            failed = streams
            break
        best = result
        streams *= 2
    low = best.streams if best else 0
    while failed is not None and failed - low > max(1, low // 8):
        middle = (low + failed) // 2
        result = trial(
            mode, hop, middle, seconds, warmup, stagger=stagger, p99_limit_ms=p99_limit_ms
        )
        trials.append(result)
        if result.passed:
            best, low = result, middle
        else:
            failed = middle
    return best, trials


def measured_gflops(size: int = 1024, repeats: int = 10) -> float:
    """This CPU's fp32 matmul rate through TensorFlow (median of ``repeats``), GFLOP/s."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.linalg.matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        times.append(time.perf_counter() - started)
    return 2 * size**3 / float(np.median(times)) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=25.0, help="seconds per trial")
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=10.0,
        help="seconds ignored at the start: every stream starts at once, and filling the "
        "streaming caches of 64 streams takes a few seconds of work",
    )
    parser.add_argument("--hops", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["exact", "exact-onnxruntime", "streaming", "streaming-onnxruntime"],
        choices=MODES,
        help="worker modes; -onnxruntime runs it with --backend onnxruntime, -bfloat16 with "
        "--precision bfloat16, -nonetwork with [content] network = false (the first given "
        "is the baseline)",
    )
    parser.add_argument("--start", type=int, default=4, help="first stream count tried")
    parser.add_argument("--limit", type=int, default=256, help="most streams tried")
    parser.add_argument(
        "--stagger",
        action="store_true",
        help="spread the streams' starts over the hop, as independent feeds are "
        "(default: every stream's window falls due at once, the worst case)",
    )
    parser.add_argument(
        "--p99-ms", type=float, help="pass only below this p99 latency (default: the hop)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(f"CPU: {cpu_description()}")
    print(f"start: {load_description()}", flush=True)
    gflops = measured_gflops()
    results: dict[tuple[str, float], Trial | None] = {}
    for hop in args.hops:
        for mode in args.modes:
            print(f"searching mode={mode} hop={hop:g} s", flush=True)
            best, _ = search(
                mode,
                hop,
                start=args.start,
                seconds=args.seconds,
                warmup=args.warmup_seconds,
                limit=args.limit,
                stagger=args.stagger,
                p99_limit_ms=args.p99_ms,
            )
            results[(mode, hop)] = best
    print()
    print(f"CPU: {cpu_description()}")
    print(f"end: {load_description()}")
    print(
        f"measured matmul rate {gflops:.0f} GFLOP/s; exact-mode ceiling = rate / "
        f"({WINDOW_GFLOP} GFLOP x windows per stream per s); streaming adds "
        f"{LOOKAHEAD_S:.3f} s look-ahead delay (not in the latency columns)"
    )
    print(
        f"{'hop s':>5} {'mode':>21} {'streams':>7} {'x ' + args.modes[0]:>8} {'upd/s':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'exact ceiling':>13}"
    )
    for hop in args.hops:
        baseline = results.get((args.modes[0], hop))
        ceiling = gflops / (WINDOW_GFLOP / hop)
        for mode in args.modes:
            best = results[(mode, hop)]
            if best is None:
                print(f"{hop:>5g} {mode:>21} {'<' + str(args.start):>7}")
                continue
            ratio = best.streams / baseline.streams if baseline else float("nan")
            print(
                f"{hop:>5g} {mode:>21} {best.streams:>7} {ratio:>7.2f}x {best.updates_per_s:>6.1f} "
                f"{best.p50_ms:>7.0f} {best.p99_ms:>7.0f} {ceiling:>13.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
