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

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from test_worker import (  # noqa: F401 - fixtures used by name
    Harness,
    expected_starts,
    frames_of,
    music,
    settings,
    tagger,
    worker_config,
)

from config import RecordConfig
from inference import StreamState, Worker
from monitor.recorder import Recorder
from protocol import decode_update
from protocol.subscriber import Subscriber

DEADLINE_S = 60.0


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(99)


def test_joining_a_stream_mid_way_counts_a_gap(rng) -> None:
    """What a restarted worker sees: the stream's first block here has seq > 0."""
    state = StreamState("s", settings=settings(), now=0.0)
    frames = frames_of(music(rng, 4.0), first_seq=120)
    state.accept(frames[0], received_time=0.0, now=0.0)
    assert state.gaps == 1
    for frame in frames[1:]:
        state.accept(frame, received_time=0.0, now=0.0)
    assert state.gaps == 1 and state.dropped == 0  # the rest is contiguous
    fresh = StreamState("t", settings=settings(), now=0.0)
    fresh.accept(frames_of(music(rng, 0.1))[0], received_time=0.0, now=0.0)
    assert fresh.gaps == 0


def _worker(tagger: Any, tmp_path: Path, **inference: object) -> Worker:  # noqa: F811
    config = worker_config(**inference)
    config = type(config)(
        **{
            **config.__dict__,
            "inference": type(config.inference)(
                **{
                    **config.inference.__dict__,
                    "input_endpoint": f"ipc://{tmp_path}/in",
                    "publish_endpoint": f"ipc://{tmp_path}/out",
                }
            ),
        }
    )
    worker = Worker(config, tagger=tagger)
    worker.start()
    worker.run_in_thread()
    return worker


def test_a_stalled_subscriber_neither_grows_the_worker_nor_slows_the_others(
    tagger: Any,  # noqa: F811
    tmp_path: Path,
    rng: np.random.Generator,
) -> None:
    """PUB drops for a subscriber past ``publish_hwm``; the others get every update."""
    # max_batch < publish_hwm: one batch of updates never overflows a healthy subscriber
    worker = _worker(tagger, tmp_path, hop_seconds=0.02, publish_hwm=16, max_batch=8)
    context: zmq.Context[Any] = zmq.Context()
    stalled = context.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 10)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(worker.publish_endpoint)
    harness = Harness(worker)  # the healthy subscriber (it probes until it is joined)
    try:
        probes = worker.stats().windows
        assert stalled.poll(5000), "the stalled subscriber never joined"
        y = music(rng, 12.0)
        harness.send_audio(y, stream="fault:slow")
        expected = len(expected_starts(len(y), 1))  # hop_seconds 0.02 -> 1 mel frame
        assert expected > 500
        updates = harness.receive(count=expected, stream="fault:slow")
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


def test_a_full_disk_at_the_recorder_leaves_the_worker_and_others_unaffected(
    tagger: Any,  # noqa: F811
    tmp_path: Path,
    rng: np.random.Generator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = _worker(tagger, tmp_path, hop_seconds=0.5)
    harness = Harness(worker)
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
    thread = threading.Thread(target=recorder.run, daemon=True)
    thread.start()
    try:
        with Subscriber(worker.publish_endpoint, streams=["fault:disk"]) as other:
            for attempt in range(50):  # until the recorder's subscription has joined
                harness.send_audio(np.zeros(16000 * 3 + 800, np.float32), stream=f"join:{attempt}")
                if recorder.received and other.receive(timeout_s=0.2) is None:
                    break
                time.sleep(0.2)
            assert recorder.received, "the recorder never joined"
            y = music(rng, 6.0)
            harness.send_audio(y, stream="fault:disk")
            expected = len(expected_starts(len(y), 31))
            got = [other.receive(timeout_s=DEADLINE_S) for _ in range(expected)]
            assert all(u is not None for u in got)
            assert [u.seq for u in got if u is not None] == list(range(expected))
            deadline = time.monotonic() + DEADLINE_S
            writer = recorder.writer

            def settled() -> bool:  # every received update written or counted as dropped
                return writer.written + writer.dropped == recorder.received >= expected

            while time.monotonic() < deadline and not (settled() and writer.dropped):
                time.sleep(0.05)
        # The first batches may still fit in the database's last free page.
        assert settled() and writer.dropped >= expected // 2, (writer.written, writer.dropped)
        stats = worker.stats()
        assert stats.rejected_total == 0 and stats.dropped == 0
        assert thread.is_alive()  # still recording (and failing) without crashing
    finally:
        recorder.stop()
        thread.join(timeout=DEADLINE_S)
        recorder.close()
        harness.close()
        worker.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "database or disk is full" in errors[0]


def test_a_real_worker_recorded_and_reported(
    tagger: Any,  # noqa: F811
    tmp_path: Path,
    rng: np.random.Generator,
) -> None:
    """No fault: a real worker's updates go through the recorder into a report."""
    import csv
    import io

    from tools import report

    worker = _worker(tagger, tmp_path, hop_seconds=0.5)
    harness = Harness(worker)
    recorder = Recorder(
        tmp_path / "onair.db",
        [worker.publish_endpoint],
        settings=RecordConfig(commit_interval_seconds=0.1),
    )
    thread = threading.Thread(target=recorder.run, daemon=True)
    thread.start()
    try:
        for attempt in range(50):  # until the recorder's subscription has joined
            harness.send_audio(np.zeros(16000 * 3 + 800, np.float32), stream=f"join:{attempt}")
            time.sleep(0.2)
            if recorder.received:
                break
        assert recorder.received, "the recorder never joined"
        y = music(rng, 6.0)
        harness.send_audio(y, stream="studio")
        expected = len(expected_starts(len(y), 31))
        deadline = time.monotonic() + DEADLINE_S
        written = 0
        while time.monotonic() < deadline and written < expected:
            time.sleep(0.1)
            rows = recorder.writer.connection.execute(  # type: ignore[union-attr]
                "SELECT COUNT(*) FROM updates WHERE stream = 'studio'"
            )
            written = rows.fetchone()[0]
        assert written == expected
    finally:
        recorder.stop()
        thread.join(timeout=DEADLINE_S)
        recorder.close()
        harness.close()
        worker.close()
    out = io.StringIO()
    status = report.main(
        ["--db", str(tmp_path / "onair.db"), "--stream", "studio", "--out", str(tmp_path)],
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
