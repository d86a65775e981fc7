"""The worker in streaming mode: real workers over tcp, streamed updates against exact ones.

Two in-process workers share one MSD_musicnn tagger: one in exact mode, one in
streaming mode.  The same interleaved streams go to both; every window must
come out of both with the same times, and the streaming probabilities must be
within the bound documented in :mod:`model.streaming` (tests/test_streaming_model.py)
of the exact ones.  Windows whose look-ahead lies beyond the end of a stream
are recomputed exactly, so those must be equal.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from helpers import WINDOW, Harness, frames_of, music, worker_config

from inference import Worker, WorkerError
from model.architectures import build_vgg
from model.tagger import Tagger
from protocol import EndOfStream, TagUpdate, encode_audio, encode_end
from tagstream.errors import ExitStatus

LOOKAHEAD_FRAMES = 73
# tests/test_streaming_model.py: streaming windows see real audio where the exact model
# zero-pads both window edges.
EXACT_MAX_DIFF = 0.15
EXACT_MEAN_DIFF = 0.01
STREAMS = 3


@pytest.fixture
def workers(tagger: Tagger) -> Iterator[dict[str, Harness]]:
    harnesses: dict[str, Harness] = {}
    started: list[Worker] = []
    try:
        for mode in ("exact", "streaming"):
            worker = Worker(worker_config(hop_seconds=0.5, mode=mode), tagger=tagger)
            started.append(worker)
            worker.start()
            worker.run_in_thread()
            harnesses[mode] = Harness(worker)
        yield harnesses
    finally:
        for harness in harnesses.values():
            harness.close()
        for worker in started:
            worker.close()


def send_interleaved(harness: Harness, signals: dict[str, np.ndarray]) -> None:
    """Blocks of all streams in turn (block k of every stream, then k + 1), then the ends."""
    per_stream = {name: frames_of(y, stream=name, block=1600) for name, y in signals.items()}
    for k in range(max(len(frames) for frames in per_stream.values())):
        for frames in per_stream.values():
            if k < len(frames):
                harness.send(encode_audio(frames[k]))
    for name, frames in per_stream.items():
        harness.send(encode_end(EndOfStream(stream=name, seq=len(frames))))


def collect(harness: Harness, signals: dict[str, np.ndarray], count: int) -> dict[str, list]:
    by_stream: dict[str, list[TagUpdate]] = {name: [] for name in signals}
    while sum(len(updates) for updates in by_stream.values()) < count:
        updates = harness.receive(count=1)
        assert updates, "the worker stopped publishing"
        if updates[0].stream in by_stream:
            by_stream[updates[0].stream].append(updates[0])
    return by_stream


def test_streaming_updates_are_close_to_exact_ones_and_batched(workers, rng) -> None:
    # different lengths, so the streams' tails differ; all start together so windows coincide
    signals = {f"stream:{i}": music(rng, seconds) for i, seconds in enumerate((9.0, 8.0, 10.0))}
    counts = {}
    for name, y in signals.items():
        frames = 1 + len(y) // 256
        counts[name] = len(range(0, frames - WINDOW + 1, 31))
    # Pause the streaming worker while the audio is queued, so its streams' windows fall
    # due together: whether a running worker batches depends on how fast audio arrives.
    paused = workers["streaming"].worker
    assert paused.pause()
    for harness in workers.values():
        send_interleaved(harness, signals)
    time.sleep(0.5)  # let ZeroMQ's I/O thread queue the messages (not a timing check)
    paused.run_in_thread()
    exact = collect(workers["exact"], signals, sum(counts.values()))
    streamed = collect(workers["streaming"], signals, sum(counts.values()))

    diffs, tails = [], 0
    for name, y in signals.items():
        frames = 1 + len(y) // 256
        a, b = exact[name], streamed[name]
        assert len(a) == len(b) == counts[name]
        assert [u.seq for u in b] == list(range(counts[name]))
        for e, s in zip(a, b, strict=True):
            assert s.start_s == pytest.approx(e.start_s)
            assert s.end_s == pytest.approx(e.end_s)
            assert s.capture_time == pytest.approx(e.capture_time)
            assert s.capture_time == pytest.approx(1_000.0 + s.end_s - 1 / 16000)
            end_frame = round(s.end_s * 16000 / 256)
            if end_frame + LOOKAHEAD_FRAMES <= frames:  # streamed
                diffs.append(np.abs(s.probabilities - e.probabilities))
            else:  # the look-ahead never came: recomputed exactly
                np.testing.assert_allclose(s.probabilities, e.probabilities, atol=1e-5)
                tails += 1
    diff = np.stack(diffs)
    assert len(diff) >= 3 * STREAMS and tails >= STREAMS
    assert diff.max() <= EXACT_MAX_DIFF
    assert diff.mean() <= EXACT_MEAN_DIFF
    assert diff.max() > 0  # streamed, not recomputed: the window edges see real audio
    streaming = workers["streaming"].worker
    streaming.stop()  # so its counters and metrics are read at the same point
    assert streaming.wait_idle(5.0)
    batch_sizes = streaming.stats().batch_sizes
    assert max(batch_sizes) >= 2, batch_sizes  # due streams share one push
    # Streaming model calls feed the same metrics as exact ones.
    registry = streaming.metrics.registry
    calls = sum(batch_sizes.values())
    assert registry.get_sample_value("tagstream_worker_model_seconds_count") == calls
    published = streaming.stats().windows  # the probes' and the test streams' updates
    assert published >= sum(len(updates) for updates in streamed.values())
    assert registry.get_sample_value("tagstream_worker_latency_seconds_count") == published


def test_streaming_mode_refuses_a_model_that_is_not_musicnn(tagger: Tagger) -> None:
    vgg = Tagger(build_vgg(), tagger.contract)  # a VGG network with musicnn's contract
    worker = Worker(worker_config(mode="streaming"), tagger=vgg)
    with pytest.raises(WorkerError, match="needs a musicnn model") as info:
        worker.start()
    assert info.value.reason == "settings"
    assert info.value.status == ExitStatus.USAGE  # python -m inference exits 2
    worker.close()
