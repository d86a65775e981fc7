"""Turns: more live streams than one batch holds, on a worker that cannot keep up.

    python -m benchmarks.turns [--seconds 40] [--load 1.5] [--max-batch 8]
                               [--max-age 5] [--hop-seconds 0.5]

The worker hands the model at most ``max_batch`` windows per call, one per stream
in turn.  It used to offer the streams in one fixed order (the order they arrived),
so when it was behind, the first ``max_batch`` streams took every batch and the
others waited until their windows were shed as stale: a station group larger than
a batch had its last stations dark while the first were on time.  Now the streams
served least recently go first (``Worker._served_last``).

One in-process worker (exact mode, the real MSD_musicnn, shedding at ``--max-age``)
per run, fed by :mod:`benchmarks.overload`'s load generator (real-time paced blocks
of synthesized music) with ``--load`` x its measured capacity of streams for
``--seconds``.  Two runs in the same process: the worker as shipped ("in turn") and
the baseline, the same worker offering its streams in the fixed order ("fixed
order").  The table gives, per run, the updates each stream got (fewest, median,
most), the streams that got none, and the spread of the streams' median latencies;
the ratio line compares the fewest updates a stream got.  The CPU and the load
average are printed with it.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from benchmarks.common import cpu_description, load_description
from benchmarks.overload import RunResult, measure_capacity, run_once


def _fixed_order_worker() -> type:
    from inference import Worker

    class FixedOrderWorker(Worker):
        """The baseline: streams offered in the order they arrived, whoever was served."""

        def _served_last(self, due: object) -> None:
            return None

    return FixedOrderWorker


def per_stream(result: RunResult, streams: list[str]) -> tuple[list[int], list[float]]:
    """Updates per stream (in ``streams`` order) and the median latency of those with any."""
    counts = dict.fromkeys(streams, 0)
    latencies: dict[str, list[float]] = {s: [] for s in streams}
    for _, latency, stream in result.updates:
        if stream in counts:
            counts[stream] += 1
            latencies[stream].append(latency)
    medians = [float(np.median(v)) for v in latencies.values() if v]
    return list(counts.values()), medians


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.turns", description=__doc__)
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each run")
    parser.add_argument("--load", type=float, default=1.5, help="streams, x capacity")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-age", type=float, default=5.0, help="max_window_age_seconds")
    parser.add_argument("--hop-seconds", type=float, default=0.5)
    args = parser.parse_args(argv)

    from inference import Worker
    from model import load_tagger

    print(cpu_description())
    print(load_description())
    tagger = load_tagger("MSD_musicnn")
    batch_s, capacity = measure_capacity(tagger, args.max_batch, args.hop_seconds)
    streams = max(args.max_batch + 2, math.ceil(args.load * capacity))
    print(
        f"capacity ~{capacity:.1f} real-time streams (one batch of {args.max_batch}: "
        f"{batch_s * 1000:.0f} ms, hop {args.hop_seconds} s); {streams} streams for "
        f"{args.seconds:g} s, shedding windows older than {args.max_age:g} s"
    )
    names = [f"load-{i}" for i in range(streams)]
    rows = {}
    for label, worker_class in (("in turn", Worker), ("fixed order", _fixed_order_worker())):
        result = run_once(
            tagger,
            label=label,
            max_age_s=args.max_age,
            streams=streams,
            keep=streams,
            over_s=args.seconds,
            after_s=0.0,
            hop_s=args.hop_seconds,
            max_batch=args.max_batch,
            worker_class=worker_class,
        )
        counts, medians = per_stream(result, names)
        rows[label] = (counts, medians, result)
    print()
    header = (
        f"{'run':<12} {'updates/stream: fewest':>22} {'median':>7} {'most':>5} "
        f"{'streams with none':>17} {'median latency s: lowest':>24} {'highest':>8} "
        f"{'shed':>6}"
    )
    print(header)
    print("-" * len(header))
    for label, (counts, medians, result) in rows.items():
        low = f"{min(medians):.1f}" if medians else "-"
        high = f"{max(medians):.1f}" if medians else "-"
        print(
            f"{label:<12} {min(counts):>22d} {float(np.median(counts)):>7.0f} {max(counts):>5d} "
            f"{sum(1 for c in counts if c == 0):>17d} {low:>24} {high:>8} {result.shed:>6d}"
        )
    fewest_turn, fewest_fixed = min(rows["in turn"][0]), min(rows["fixed order"][0])
    ratio = f"{fewest_turn / fewest_fixed:.1f}x" if fewest_fixed else "inf (one got none)"
    print(
        f"\nratio: fewest updates a stream got, in turn / fixed order = "
        f"{fewest_turn} / {fewest_fixed} = {ratio}"
    )
    print(cpu_description())
    print(load_description())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
