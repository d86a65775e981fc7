"""Per-stream metrics: what recording an update and answering a scrape cost the worker.

The worker hands every update it publishes to :class:`tagstream.metrics.StreamMetrics`
(``Worker._send``). This measures that per update against encoding the same update
for the wire (``protocol.encode_update``, the baseline, which the worker does for
every update anyway), and the time of one Prometheus scrape as streams grow.

    python -m benchmarks.stream_metrics [--updates 20000] [--streams 1 16 256]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
import timeit
from collections.abc import Callable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from benchmarks.common import cpu_description, load_description
from model.contract import MSD_TAGS
from protocol import TagUpdate, encode_update
from tagstream.metrics import StreamMetrics

#: The built-in ``metrics.stream_tags``.
STREAM_TAGS = ("rock", "pop", "electronic", "Hip-Hop", "jazz", "female vocalists", "male vocalists")


def an_update(stream: str, rng: np.random.Generator) -> TagUpdate:
    probabilities = rng.random(len(MSD_TAGS)).astype(np.float32)
    now = time.time()
    return TagUpdate(
        stream=stream,
        seq=1,
        start_s=0.0,
        end_s=3.0,
        model="MSD_musicnn",
        tags=MSD_TAGS,
        probabilities=probabilities,
        smoothed=probabilities,
        capture_time=now,
        received_time=now,
        published_time=now,
        content="music",
        content_probabilities={"music": 0.9, "speech": 0.05, "silence": 0.05},
        level_dbfs=-20.0,
    )


def per_call_us(call: Callable[[], object], number: int) -> float:
    """Best of 3 repeats of ``number`` calls, in microseconds per call."""
    return 1e6 * min(timeit.repeat(call, number=number, repeat=3)) / number


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream_metrics")
    parser.add_argument("--updates", type=int, default=20_000, help="calls per timing")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 256])
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    print(cpu_description())
    print(load_description())
    update = an_update("fm", rng)
    metrics = StreamMetrics(stream_tags=STREAM_TAGS)
    encode_us = per_call_us(lambda: encode_update(update), args.updates)
    observe_us = per_call_us(lambda: metrics.observe(update), args.updates)
    print(f"{'per update':<34} {'us':>8} {'ratio':>7}")
    print(f"{'encode_update (baseline)':<34} {encode_us:8.1f} {1.0:7.2f}")
    print(f"{'StreamMetrics.observe':<34} {observe_us:8.1f} {observe_us / encode_us:7.2f}")
    print()
    print(f"{'scrape, streams':<16} {'samples':>8} {'bytes':>9} {'ms':>8} {'ms/stream':>10}")
    for count in args.streams:
        metrics = StreamMetrics(stream_tags=STREAM_TAGS)
        registry = CollectorRegistry()
        registry.register(metrics)
        for i in range(count):
            metrics.observe(dataclasses.replace(update, stream=f"station-{i}"))
        text = generate_latest(registry)
        samples = sum(1 for line in text.decode().splitlines() if not line.startswith("#"))
        scrape_ms = per_call_us(functools.partial(generate_latest, registry), 5) / 1e3
        print(f"{count:<16} {samples:8d} {len(text):9d} {scrape_ms:8.1f} {scrape_ms / count:10.3f}")
    print(load_description())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
