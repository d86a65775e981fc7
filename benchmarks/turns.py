"""Turns: more live streams than one batch holds, on a worker that cannot keep up.

    python -m benchmarks.turns [--seconds 40] [--load 1.5] [--max-batch 8]
                               [--max-age 5] [--hop-seconds 0.5] [--priority 2]

The worker hands the model at most ``max_batch`` windows per call, one per stream
in turn.  It used to offer the streams in one fixed order (the order they arrived),
so when it was behind, the first ``max_batch`` streams took every batch and the
others waited until their windows were shed as stale: a station group larger than
a batch had its last stations dark while the first were on time.  Now the streams
served least recently go first (``Worker._served_last``).

In turn, every stream is equally late, the station's main feed as much as its
archive feeds.  ``inference.priority_streams`` names the streams whose due windows
go into each batch first (``Worker._take_due``): they stay on time while the worker
can, and the others take the lateness.

One in-process worker (exact mode, the real MSD_musicnn, shedding at ``--max-age``)
per run, fed by :mod:`benchmarks.overload`'s load generator (real-time paced blocks
of synthesized music) with ``--load`` x its measured capacity of streams for
``--seconds``.  Three runs in the same process: the worker as shipped ("in turn"),
the baseline, the same worker offering its streams in the fixed order ("fixed
order"), and the worker with ``--priority`` of its streams (the last ones to
arrive) as priority streams ("priority").  The first table gives, per run, the
updates each stream got (fewest, median, most), the streams that got none, and the
spread of the streams' median latencies; its ratio line compares the fewest updates
a stream got.  The second compares the priority streams with the others, in turn
and with priority; its ratio line compares the priority streams' p99 latency.  The
CPU and the load average are printed with them.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.common import cpu_description, load_description
from benchmarks.overload import RunResult, load_arguments, measure_capacity, run_once


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


def group_latencies(result: RunResult, group: set[str]) -> tuple[float, list[float]]:
    """Median updates per stream of ``group``, and the latencies of its updates."""
    counts = dict.fromkeys(group, 0)
    latencies = []
    for _, latency, stream in result.updates:
        if stream in counts:
            counts[stream] += 1
            latencies.append(latency)
    return float(np.median(list(counts.values()))), latencies


def main(argv: list[str] | None = None) -> int:
    parser = load_arguments("python -m benchmarks.turns", __doc__, load=1.5, max_batch=8)
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each run")
    parser.add_argument(
        "--priority", type=int, default=2, help="priority streams in the third run (0: no run)"
    )
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
    priority = names[len(names) - min(max(args.priority, 0), len(names)) :]
    runs: list[tuple[str, type, tuple[str, ...]]] = [
        ("in turn", Worker, ()),
        ("fixed order", _fixed_order_worker(), ()),
    ]
    if priority:
        runs.append(("priority", Worker, tuple(priority)))
    rows = {}
    for label, worker_class, patterns in runs:
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
            priority_streams=patterns,
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
    if priority:
        print(f"\npriority streams: {', '.join(priority)} ({len(priority)} of {streams})")
        header = (
            f"{'run':<12} {'streams':<9} {'updates/stream':>14} {'p50 s':>7} {'p99 s':>7} "
            f"{'max s':>7}"
        )
        print(header)
        print("-" * len(header))
        p99 = {}
        for label in ("in turn", "priority"):
            result = rows[label][2]
            for group, members in (
                ("priority", set(priority)),
                ("others", set(names) - set(priority)),
            ):
                if not members:
                    continue
                median, latencies = group_latencies(result, members)
                if latencies:
                    p50, high = np.percentile(latencies, [50, 99])
                    figures = f"{p50:7.1f} {high:7.1f} {max(latencies):7.1f}"
                    p99[label, group] = float(high)
                else:
                    figures = f"{'-':>7} {'-':>7} {'-':>7}"
                print(f"{label:<12} {group:<9} {median:>14.0f} {figures}")
        if ("in turn", "priority") in p99 and p99.get(("priority", "priority")):
            before, after = p99["in turn", "priority"], p99["priority", "priority"]
            print(
                f"\nratio: priority streams' p99 latency, in turn / with priority = "
                f"{before:.1f} / {after:.1f} s = {before / after:.1f}x"
            )
    print(cpu_description())
    print(load_description())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
