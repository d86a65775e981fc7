"""Shedding stale work: a worker given more live audio than it can tag says so and catches up.

Real sockets and the real model.  The overload is real: several live streams
(capture times behind the worker's clock, as live audio is) send far more audio
at once than one model call takes, with ``max_window_age_seconds`` small, so
windows wait longer than that before their turn.  Nothing here asserts on how
long anything took; the latency bound itself is measured by
``benchmarks/overload.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Any

import numpy as np
import pytest
from helpers import expected_starts, frames_of, music, wait_until
from prometheus_client import generate_latest

from protocol import (
    EndOfStream,
    TagUpdate,
    decode_update,
    encode_audio,
    encode_end,
    encode_update,
)

FLOOD_STREAMS = 3
FLOOD_SECONDS = 20.0


def test_an_overloaded_worker_sheds_stale_windows_and_says_so(
    run_worker: Any, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    harness = run_worker(hop_seconds=0.5, max_window_age_seconds=0.5, status_interval_seconds=0.2)
    worker = harness.worker
    assert worker.settings is not None
    y = music(rng, FLOOD_SECONDS)
    per_stream = len(expected_starts(len(y), worker.settings.hop_frames))
    # The harness's probe streams are through before counting: a stream sent after them
    # (not live, so never shed) has its update once everything before it has left.
    settled = frames_of(music(rng, 3.2), stream="settled")
    settled = [dataclasses.replace(f, live=False) for f in settled]
    for frame in settled:
        harness.send(encode_audio(frame))
    harness.send(encode_end(EndOfStream(stream="settled", seq=len(settled))))
    assert len(harness.receive(count=1, stream="settled")) == 1
    before = wait_until(lambda: (s := worker.stats()).pending == 0 and s, "the settled stream")
    live = [f"live:{i}" for i in range(FLOOD_STREAMS)]
    with caplog.at_level(logging.INFO, logger="inference.worker"):
        blocks = {s: frames_of(y, stream=s, block=8000) for s in [*live, "file"]}
        # A recorded stream beside them (live: false) is never shed, however late.
        blocks["file"] = [dataclasses.replace(f, live=False) for f in blocks["file"]]
        for i in range(len(blocks["file"])):  # interleaved, as concurrent senders
            for stream in blocks:
                harness.send(encode_audio(blocks[stream][i]))
        for stream, frames in blocks.items():
            harness.send(encode_end(EndOfStream(stream=stream, seq=len(frames))))
        total = per_stream * len(blocks)
        updates: list[TagUpdate] = []

        def accounted() -> bool:
            updates.extend(u for u in harness.receive(count=None) if u.stream in blocks)
            stats = worker.stats()
            shed = sum(stats.shed.values()) - sum(before.shed.values())
            return len(updates) + shed >= total and stats.pending == 0

        wait_until(accounted, lambda: f"every window published or shed: {worker.stats()}")
        updates.extend(u for u in harness.receive(count=None) if u.stream in blocks)
    stats = worker.stats()
    # Every window is published or counted as shed; none is lost silently.
    shed = stats.shed.get("stale", 0) - before.shed.get("stale", 0)
    assert len(updates) + shed == total
    assert shed > 0, "no window was shed: the flood did not overload the worker"
    assert stats.shed.get("overflow", 0) == before.shed.get("overflow", 0)
    by_stream: dict[str, list[TagUpdate]] = {}
    for update in updates:
        by_stream.setdefault(update.stream, []).append(update)
    # The recorded stream gets every window; the live ones say what they lost.
    assert len(by_stream["file"]) == per_stream
    assert all(u.shed == 0 for u in by_stream["file"])
    for stream in live:
        got = by_stream.get(stream, [])
        assert all(u.behind_s is not None and u.behind_s >= 0 for u in got)
        assert [u.shed for u in got] == sorted(u.shed for u in got)  # counts only grow
        assert all(u.dropped >= u.shed for u in got)
    assert sum(by_stream[s][-1].shed for s in live if s in by_stream) > 0
    assert max(u.behind_s or 0.0 for u in updates) > 0
    # The status line, the metric and the log say so.
    statuses = [r.getMessage() for r in caplog.records if r.getMessage().startswith("status ")]
    assert any(int(re.search(r" shed=(\d+)", m).group(1)) > 0 for m in statuses), statuses[-3:]
    assert any("shed stale windows stream=live:" in r.getMessage() for r in caplog.records)
    exposition = generate_latest(worker.metrics.registry).decode()
    match = re.search(r'tagstream_worker_shed_total\{reason="stale"\} (\S+)', exposition)
    assert match and float(match.group(1)) == stats.shed["stale"]
    # Recovered: a new live stream, once the flood is through, loses nothing.
    after = harness.barrier(rng, stream="after")
    assert after.shed == 0 and after.dropped == 0


def test_updates_carry_behind_and_shed_through_the_wire(run_worker: Any, rng: Any) -> None:
    """An unloaded worker: every update says how far behind it is (0 shed, behind < a hop)."""
    harness = run_worker(hop_seconds=0.5)
    y = music(rng, 5.0)
    harness.send_audio(y, stream="calm")
    starts = expected_starts(len(y), 31)
    updates = harness.receive(count=len(starts), stream="calm")
    assert len(updates) == len(starts)
    assert all(u.shed == 0 for u in updates)
    assert all(u.behind_s is not None for u in updates)
    assert updates[-1].behind_s < 0.5 + 0.1  # the audio after the last window: less than a hop
    # What the subscriber decodes is what was encoded.
    again = decode_update(encode_update(updates[-1]))
    assert (again.shed, again.behind_s) == (updates[-1].shed, updates[-1].behind_s)


def test_live_audio_that_waited_on_the_way_is_shed_by_its_own_age(
    run_worker: Any, rng: np.random.Generator
) -> None:
    """A sender holds 5 s of live audio back (its queue, a stalled link) and then sends it
    at once: it is as late as its capture times say, though the worker has only just
    received it.  Windows older than the bound are shed at their turn, even on an idle
    worker (ages from reception alone tagged them all), and the fresh ones are tagged."""
    max_age_s, prefix_s, held_s = 3.0, 3.2, 5.0
    harness = run_worker(hop_seconds=0.5, max_window_age_seconds=max_age_s)
    worker = harness.worker
    assert worker.settings is not None
    y = music(rng, prefix_s + held_s)
    t0 = time.time()  # the prefix's last sample is captured now: its transit is ~0
    frames = frames_of(y, stream="held", block=8000, start_time=t0 - prefix_s)
    prefix = round(prefix_s * 16000) // 8000
    for frame in frames[:prefix]:
        harness.send(encode_audio(frame))
    updates = harness.receive(count=1, stream="held")  # the worker has taken the prefix
    before = worker.stats().shed.get("stale", 0)
    # The sender holds the rest back until it has all been captured (this is the
    # scenario's passage of time, not a synchronisation).
    time.sleep(max(0.0, t0 + held_s - time.time()))
    for frame in frames[prefix:]:
        harness.send(encode_audio(frame))
    harness.send(encode_end(EndOfStream(stream="held", seq=len(frames))))
    total = len(expected_starts(len(y), worker.settings.hop_frames))

    def accounted() -> bool:
        updates.extend(harness.receive(count=None, stream="held"))
        shed = worker.stats().shed.get("stale", 0) - before
        return len(updates) + shed >= total and worker.stats().pending == 0

    wait_until(accounted, lambda: f"every window published or shed: {worker.stats()}")
    shed = worker.stats().shed.get("stale", 0) - before
    assert len(updates) + shed == total
    assert shed > 0, "nothing shed: the held audio's age was not seen"
    # A published window of the held audio ended at most the bound before it was sent
    # (its turn came after that): a window's end_s is its last sample's audio time.
    # The worker dates it by its capture time plus the stream's quickest transit, taken
    # from each block's first sample: the prefix's last block, sent at t0, began
    # ``transit_s`` before, so the held audio counts that much younger than its capture
    # times say (0.7 s here; with a bound of 0.05 s, whether the window ending 0.2 s
    # under it was shed depended on how soon its turn came).
    transit_s = prefix_s - (prefix - 1) * 8000 / 16000
    held = [u for u in updates if u.end_s > prefix_s]
    assert all(u.end_s >= prefix_s + held_s - max_age_s - transit_s - 0.05 for u in held), [
        u.end_s for u in held
    ]
    after = harness.barrier(rng, stream="after")  # a fresh live stream loses nothing
    assert after.shed == 0 and after.dropped == 0
