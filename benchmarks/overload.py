"""Overload: more live streams than the worker can tag, then back to normal.

    python -m benchmarks.overload [--over-seconds 60] [--after-seconds 40]
                                  [--max-age 5] [--load 2.0] [--normal 0.3]

One in-process worker (exact mode, the real MSD_musicnn) per run, fed by a load
generator that sends real-time paced 0.1 s blocks of synthesized music for each
stream (``capture_time`` = the wall time of the block's first sample, sent once
its last sample is "captured"; a full send queue drops the block, as a live
streamer does).  The worker's capacity is measured first (one ``max_batch``
model call, in real-time streams at the configured hop); the run then has

* **during**: ``--load`` x capacity streams for ``--over-seconds``;
* **after**: ``--normal`` x capacity streams (the others end) for ``--after-seconds``.

A subscriber records each update's latency (publication - capture of the
window's last sample; one clock, so it is the real end-to-end figure).  Two
runs in the same process: with shedding (``inference.max_window_age_seconds =
--max-age``) and the baseline without (``0``).  The table gives latency p50,
p99 and max of the updates published during the overload, in the first 10 s
after it and in the rest, the share of windows shed, and how long after the
load ended the latency came back under ``--max-age`` for good; the ratio line
compares the two runs.  The CPU and the load average are printed with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import threading
import time
from typing import Any

import numpy as np
import zmq

from benchmarks.common import cpu_description, load_description, synthetic_music
from config import load_config
from protocol import AudioFrame, EndOfStream, decode_update, encode_audio, encode_end

BLOCK_SECONDS = 0.1
RATE = 16000
#: Updates this soon after the load ended count as "after, first 10 s".
EARLY_AFTER_S = 10.0


@dataclasses.dataclass
class RunResult:
    """One run's updates: (published wall time, latency, stream) and the shed counts."""

    label: str
    updates: list[tuple[float, float, str]]
    switched_at: float
    shed: int
    published: int
    dropped_at_sender: int


def _sender(
    endpoint: str,
    streams: list[str],
    keep: int,
    over_s: float,
    after_s: float,
    signal: np.ndarray,
    started: threading.Event,
    result: dict[str, Any],
) -> None:
    """Send every stream in real time; after ``over_s`` only the first ``keep`` go on."""
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.setsockopt(zmq.SNDHWM, 100 * len(streams))  # 10 s per stream, as a live streamer
    push.connect(endpoint)
    block = round(BLOCK_SECONDS * RATE)
    seqs = dict.fromkeys(streams, 0)
    dropped = 0
    t0 = time.time()
    started.set()
    tick = 0
    active = list(streams)
    ending: list[str] = []
    switched = False
    while True:
        due = t0 + (tick + 1) * BLOCK_SECONDS
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        elapsed = tick * BLOCK_SECONDS
        if not switched and elapsed >= over_s:
            switched = True
            result["switched_at"] = time.time()
            ending = active[keep:]
            active = active[:keep]
        # Ends wait for room like audio (a full queue: the worker is behind), tried each tick
        # so that the streams that go on stay paced.
        for stream in list(ending):
            try:
                push.send_multipart(encode_end(EndOfStream(stream, seqs[stream])), zmq.NOBLOCK)
                ending.remove(stream)
            except zmq.Again:
                break
        if elapsed >= over_s + after_s:
            break
        offset = (tick * block) % (len(signal) - block)
        samples = np.ascontiguousarray(signal[offset : offset + block, None])
        for stream in active:
            frame = AudioFrame(
                stream=stream,
                seq=seqs[stream],
                capture_time=due - BLOCK_SECONDS,
                sample_rate=RATE,
                channels=1,
                sample_format="f32",
                samples=samples,
            )
            seqs[stream] += 1
            try:
                push.send_multipart(encode_audio(frame), zmq.NOBLOCK, copy=False)
            except zmq.Again:
                dropped += 1
        tick += 1
    for stream in ending + active:
        push.send_multipart(encode_end(EndOfStream(stream, seqs[stream])))
    result["dropped"] = dropped
    push.close(linger=1000)
    context.term()


def run_once(
    tagger: Any,
    *,
    label: str,
    max_age_s: float,
    streams: int,
    keep: int,
    over_s: float,
    after_s: float,
    hop_s: float,
    max_batch: int,
    worker_class: type | None = None,
    priority_streams: tuple[str, ...] = (),
) -> RunResult:
    """One run of ``worker_class`` (default :class:`inference.Worker`) under the load.

    The streams are named ``load-0``, ``load-1``, ...; ``priority_streams`` is the
    worker's ``inference.priority_streams``.
    """
    from inference import Worker

    config = load_config(
        overrides={
            "inference.input_endpoint": "tcp://127.0.0.1:*",
            "inference.publish_endpoint": "tcp://127.0.0.1:*",
            "inference.hop_seconds": hop_s,
            "inference.max_batch": max_batch,
            "inference.max_window_age_seconds": max_age_s,
            "inference.max_streams_per_peer": max(streams, 1),
            "inference.priority_streams": list(priority_streams),
            "content.enabled": False,
        }
    )
    worker = (worker_class or Worker)(config, tagger=tagger)
    worker.start()
    thread = worker.run_in_thread()
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 1_000_000)
    sub.connect(worker.publish_endpoint)
    time.sleep(1.0)  # let the subscription reach the publisher (PUB drops before it)
    signal = synthetic_music(30.0, rng=np.random.default_rng(0), sample_rate=RATE)
    signal = signal.astype(np.float32)
    names = [f"load-{i}" for i in range(streams)]
    started = threading.Event()
    shared: dict[str, Any] = {}
    sender = threading.Thread(
        target=_sender,
        args=(worker.input_endpoint, names, keep, over_s, after_s, signal, started, shared),
        daemon=True,
    )
    sender.start()
    updates: list[tuple[float, float, str]] = []
    while sender.is_alive() or sub.poll(2000):
        if sub.poll(200):
            update = decode_update(sub.recv_multipart())
            now = time.time()
            updates.append((now, now - update.capture_time, update.stream))
    sender.join()
    stats = worker.stats()
    worker.stop()
    thread.join(timeout=30)
    worker.close()
    sub.close(linger=0)
    context.term()
    return RunResult(
        label=label,
        updates=updates,
        switched_at=shared.get("switched_at", math.inf),
        shed=sum(stats.shed.values()),
        published=stats.windows,
        dropped_at_sender=shared.get("dropped", 0),
    )


def _percentiles(latencies: list[float]) -> str:
    if not latencies:
        return f"{'-':>7} {'-':>7} {'-':>7} {0:>7}"
    p50, p99 = np.percentile(latencies, [50, 99])
    return f"{p50:7.1f} {p99:7.1f} {max(latencies):7.1f} {len(latencies):7d}"


def recovery_s(result: RunResult, bound_s: float) -> float:
    """Seconds after the load ended until every later update was at most ``bound_s`` late.

    ``inf`` when the run's last update was still later than that (never recovered).
    """
    after = [(t, latency) for t, latency, _ in result.updates if t >= result.switched_at]
    late = [t for t, latency in after if latency > bound_s]
    if not late:
        return 0.0
    if late[-1] == after[-1][0]:
        return math.inf
    return late[-1] - result.switched_at


def measure_capacity(tagger: Any, max_batch: int, hop_s: float) -> tuple[float, float]:
    """(seconds per ``max_batch`` model call, real-time streams one worker can tag at ``hop_s``)."""
    tagger.warm_up()
    windows = np.zeros((max_batch, 187, 96), np.float32)
    tagger.predict(windows)
    started = time.perf_counter()
    for _ in range(3):
        tagger.predict(windows)
    batch_s = (time.perf_counter() - started) / 3
    return batch_s, max_batch / batch_s * hop_s


def load_arguments(
    prog: str, doc: str | None, *, load: float, max_batch: int
) -> argparse.ArgumentParser:
    """The options every overload benchmark takes (``--max-age``, ``--load``, ``--hop-seconds``,
    ``--max-batch``), with this benchmark's defaults for the load and the batch."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--max-age", type=float, default=5.0, help="max_window_age_seconds")
    parser.add_argument("--load", type=float, default=load, help="streams, x capacity")
    parser.add_argument("--hop-seconds", type=float, default=0.5)
    parser.add_argument("--max-batch", type=int, default=max_batch)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = load_arguments("python -m benchmarks.overload", __doc__, load=2.0, max_batch=16)
    parser.add_argument("--over-seconds", type=float, default=60.0)
    parser.add_argument("--after-seconds", type=float, default=40.0)
    parser.add_argument("--normal", type=float, default=0.3, help="streams after, x capacity")
    args = parser.parse_args(argv)

    from model import load_tagger

    print(cpu_description())
    print(load_description())
    tagger = load_tagger("MSD_musicnn")
    batch_s, capacity = measure_capacity(tagger, args.max_batch, args.hop_seconds)
    streams = max(2, math.ceil(args.load * capacity))
    keep = max(1, math.floor(args.normal * capacity))
    print(
        f"capacity ~{capacity:.1f} real-time streams (one batch of {args.max_batch}: "
        f"{batch_s * 1000:.0f} ms, hop {args.hop_seconds} s); during: {streams} streams for "
        f"{args.over_seconds:g} s, after: {keep} for {args.after_seconds:g} s"
    )
    results = []
    for label, max_age in (("shedding", args.max_age), ("baseline", 0.0)):
        results.append(
            run_once(
                tagger,
                label=label,
                max_age_s=max_age,
                streams=streams,
                keep=keep,
                over_s=args.over_seconds,
                after_s=args.after_seconds,
                hop_s=args.hop_seconds,
                max_batch=args.max_batch,
            )
        )
    print()
    header = f"{'run':<9} {'phase':<12} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'updates':>7}"
    print(header)
    print("-" * len(header))
    summary = {}
    for result in results:
        switched = result.switched_at
        phases = {
            "during": [lat for t, lat, _ in result.updates if t < switched],
            "after 0-10s": [
                lat for t, lat, _ in result.updates if switched <= t < switched + EARLY_AFTER_S
            ],
            "after 10s+": [lat for t, lat, _ in result.updates if t >= switched + EARLY_AFTER_S],
        }
        for phase, latencies in phases.items():
            print(f"{result.label:<9} {phase:<12} {_percentiles(latencies)}")
        total = result.shed + result.published
        share = result.shed / total if total else 0.0
        back = recovery_s(result, args.max_age + 2.0)
        summary[result.label] = (phases, share, back)
        print(
            f"{result.label:<9} shed {result.shed} of {total} windows ({share:.0%}); "
            f"latency under {args.max_age + 2.0:g} s for good {back:.1f} s after the load "
            f"ended; sender dropped {result.dropped_at_sender} blocks (full queue)"
        )
    shed_during = summary["shedding"][0]["during"]
    base_during = summary["baseline"][0]["during"]
    if shed_during and base_during:
        ratio = np.percentile(base_during, 99) / np.percentile(shed_during, 99)
        print(
            f"\nratio: baseline p99 during / shedding p99 during = {ratio:.1f}x "
            f"(bound: max_age {args.max_age:g} s + one model call of {batch_s:.2f} s)"
        )
    print(cpu_description())
    print(load_description())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
