"""Fault injection: a worker restart, a stalled subscriber, a recorder whose disk is full.

And the fault-free path it is measured against: a real worker recorded and reported.

Faults covered elsewhere (not repeated here):

* worker killed with SIGKILL and restarted while a streamer keeps capturing:
  ``test_pipeline.py::test_streamer_resumes_after_the_worker_is_killed`` (the
  resumed updates report the lost blocks as a gap; the per-stream logic is
  checked below);
* the capture device disappears and comes back:
  ``test_streamer.py::test_capture_resumes_after_the_sound_server_restarts``;
* the recorder killed with SIGKILL keeps every committed row and an intact
  database: ``test_record_report.py::test_kill_9_keeps_every_committed_row``;
* the recorder's disk full (alone): ``test_record_report.py::test_recorder_survives_a_full_disk``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from helpers import (
    DEADLINE_S,
    Harness,
    expected_starts,
    frames_of,
    music,
    stream_settings,
    wait_until,
    worker_config,
)

from config import RecordConfig
from inference import StreamState, Worker
from monitor.recorder import Recorder
from protocol import EndOfStream, decode_update, encode_audio, encode_end
from protocol.subscriber import Subscriber
from tools import report


def test_joining_a_stream_mid_way_counts_a_gap(rng) -> None:
    """What a restarted worker sees: the stream's first block here has seq > 0."""
    state = StreamState("s", settings=stream_settings(), now=0.0)
    frames = frames_of(music(rng, 4.0), first_seq=120)
    state.accept(frames[0], received_time=0.0, now=0.0)
    assert state.gaps == 1
    for frame in frames[1:]:
        state.accept(frame, received_time=0.0, now=0.0)
    assert state.gaps == 1 and state.dropped == 0  # the rest is contiguous
    fresh = StreamState("t", settings=stream_settings(), now=0.0)
    fresh.accept(frames_of(music(rng, 0.1))[0], received_time=0.0, now=0.0)
    assert fresh.gaps == 0


def ipc_worker(tagger: Any, tmp_path: Path, **inference: object) -> Worker:
    """A running in-process worker on ipc endpoints in ``tmp_path``."""
    config = worker_config(
        input_endpoint=f"ipc://{tmp_path}/in",
        publish_endpoint=f"ipc://{tmp_path}/out",
        **inference,
    )
    worker = Worker(config, tagger=tagger)
    worker.start()
    worker.run_in_thread()
    return worker


def join_recorder(harness: Harness, recorder: Recorder, other: Subscriber | None = None) -> None:
    """Publish short silent probe streams until the recorder (and ``other``) received one."""
    other_joined = other is None
    for attempt in range(50):
        stream = f"join:{attempt}"
        harness.send_audio(np.zeros(16000 * 3 + 800, np.float32), stream=stream)
        assert harness.receive(count=1, stream=stream), "the worker published no probe update"
        while other is not None and not other_joined and (update := other.receive(timeout_s=0.2)):
            other_joined = update.stream.startswith("join:")
        if recorder.received and other_joined:
            return
        time.sleep(0.2)  # a SUB socket is still joining
    pytest.fail("the recorder or the other subscriber never joined")


#: Samples per block in the stalled-subscriber test: about three updates each at hop 1 frame.
PACED_BLOCK = 800
#: Audio the worker may still hold back before a window is due (the STFT's centre padding
#: and the resampler's delay), over-estimated: windows of the audio before the last
#: ``LOOK_AHEAD`` samples sent are due.
LOOK_AHEAD = 2048


def test_a_stalled_subscriber_neither_grows_the_worker_nor_slows_the_others(
    tagger: Any,
    tmp_path: Path,
    rng: np.random.Generator,
) -> None:
    """PUB drops for a subscriber past ``publish_hwm``; the others get every update.

    The healthy subscriber paces the sender: before each block it waits for every update
    that the audio sent so far has made due, so it is never more than about a dozen
    updates (< ``publish_hwm``) behind, however slowly this process is scheduled.  The
    stalled subscriber never reads: it keeps what its HWMs and the socket buffers hold,
    and the worker drops the rest at its PUB socket instead of queueing or waiting.
    """
    worker = ipc_worker(tagger, tmp_path, hop_seconds=0.02, publish_hwm=16, max_batch=8)
    context: zmq.Context[Any] = zmq.Context()
    stalled = context.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 10)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(worker.publish_endpoint)
    harness = Harness(worker)  # the healthy subscriber (it probes until it is joined)
    try:
        for attempt in range(50):  # probe until the stalled subscriber has joined too
            if stalled.poll(200):
                break
            published = worker.stats().windows  # one probe at a time: no backlog of probes
            harness.send_audio(np.zeros(16000 * 3 + 800, np.float32), stream=f"join:{attempt}")
            worker.wait_for(lambda s, n=published: s.windows > n, timeout_s=DEADLINE_S)
        assert stalled.poll(0), "the stalled subscriber never joined"
        harness.receive(count=None)  # drain the join probes' updates
        probes = worker.stats().windows
        y = music(rng, 12.0)
        frames = frames_of(y, stream="fault:slow", block=PACED_BLOCK)
        updates: list[Any] = []
        for k, frame in enumerate(frames):
            due = len(expected_starts(max(0, k * PACED_BLOCK - LOOK_AHEAD), 1))
            if due > len(updates):
                updates += harness.receive(count=due - len(updates), stream="fault:slow")
                assert len(updates) >= due, f"the healthy subscriber lost updates: {len(updates)}"
            harness.send(encode_audio(frame))
        harness.send(encode_end(EndOfStream(stream="fault:slow", seq=len(frames))))
        expected = len(expected_starts(len(y), 1))  # hop_seconds 0.02 -> 1 mel frame
        assert expected > 500
        updates += harness.receive(count=expected - len(updates), stream="fault:slow")
        assert [u.seq for u in updates] == list(range(expected))  # none lost, in order
        stats = worker.wait_for(lambda s: s.windows >= probes + expected)
        assert stats.dropped == 0 and stats.rejected_total == 0
        # Now read what the stalled subscriber kept: bounded by the HWMs and the socket
        # buffers, far less than what was published (the rest was dropped, not queued).
        kept = 0
        while stalled.poll(500):
            decode_update(stalled.recv_multipart())
            kept += 1
        assert 0 < kept < expected // 2, (kept, expected)
    finally:
        harness.close()
        stalled.close(linger=0)
        context.term()
        worker.close()


@pytest.fixture
def ipc_harness(tagger: Any, tmp_path: Path) -> Iterator[Harness]:
    """A worker (hop 0.5 s) on ipc endpoints in ``tmp_path`` and its joined harness."""
    worker = ipc_worker(tagger, tmp_path, hop_seconds=0.5)
    harness = Harness(worker)
    yield harness
    harness.close()
    worker.close()


@contextlib.contextmanager
def running(recorder: Recorder) -> Iterator[threading.Thread]:
    """:meth:`Recorder.run` in a thread; stopped, joined and closed on the way out."""
    thread = threading.Thread(target=recorder.run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        recorder.stop()
        thread.join(timeout=DEADLINE_S)
        recorder.close()


def test_a_full_disk_at_the_recorder_leaves_the_worker_and_others_unaffected(
    ipc_harness: Harness,
    tmp_path: Path,
    rng: np.random.Generator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness, worker = ipc_harness, ipc_harness.worker
    caplog.set_level(logging.INFO, logger="monitor")
    recorder = Recorder(
        tmp_path / "full.db",
        [worker.publish_endpoint],
        settings=RecordConfig(commit_interval_seconds=0.1),
    )
    connection = recorder.writer.connection
    assert connection is not None
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL from now on
    with running(recorder) as thread, Subscriber(worker.publish_endpoint) as other:
        join_recorder(harness, recorder, other)
        # Long enough that what still fits in the database's free space (a few rows)
        # is a small part of it.
        y = music(rng, 20.0)
        harness.send_audio(y, stream="fault:disk")
        expected = len(expected_starts(len(y), 31))
        got: list[Any] = []
        while len(got) < expected:
            update = other.receive(timeout_s=DEADLINE_S)
            assert update is not None, f"the other subscriber got {len(got)} of {expected}"
            if update.stream == "fault:disk":
                got.append(update)
        assert [u.seq for u in got] == list(range(expected))
        writer = recorder.writer

        def settled() -> bool:  # every received update written or counted as dropped
            return writer.written + writer.dropped == recorder.received >= expected

        wait_until(lambda: settled() and writer.dropped, "the recorder to drop updates")
        # The first batches may still fit in the database's last free pages.
        assert settled() and writer.dropped >= expected // 2, (writer.written, writer.dropped)
        stats = worker.stats()
        assert stats.rejected_total == 0 and stats.dropped == 0
        assert thread.is_alive()  # still recording (and failing) without crashing
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "database or disk is full" in errors[0]


def test_a_real_worker_recorded_and_reported(
    ipc_harness: Harness,
    tmp_path: Path,
    rng: np.random.Generator,
) -> None:
    """No fault: a real worker's updates go through the recorder into a report."""
    harness = ipc_harness
    db = tmp_path / "onair.db"
    recorder = Recorder(
        db,
        [harness.worker.publish_endpoint],
        settings=RecordConfig(commit_interval_seconds=0.1),
    )
    with running(recorder):
        join_recorder(harness, recorder)
        y = music(rng, 6.0)
        harness.send_audio(y, stream="studio")
        expected = len(expected_starts(len(y), 31))
        connection = recorder.writer.connection
        assert connection is not None

        def written() -> int:
            query = "SELECT COUNT(*) FROM updates WHERE stream = 'studio'"
            return int(connection.execute(query).fetchone()[0])

        wait_until(lambda: written() >= expected, f"{expected} rows written")
        assert written() == expected
    out = io.StringIO()
    status = report.main(
        ["--db", str(db), "--stream", "studio", "--out", str(tmp_path)],
        stdout=out,
    )
    assert status == 0
    with (tmp_path / "segments.csv").open(newline="") as fh:
        segments = list(csv.DictReader(fh))
    assert segments and {row["stream"] for row in segments} == {"studio"}
    assert sum(int(row["updates"]) for row in segments) == expected
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (tmp_path / "hourly.csv").open(newline="") as fh:
        hours = list(csv.DictReader(fh))
    assert sum(int(row["updates"]) for row in hours) == expected
