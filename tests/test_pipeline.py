"""The whole pipeline as separate processes: streamer -> worker -> subscriber.

Every process is the real command (``python -m inference``, ``python -m
streamer``, ``python -m tools.subscribe``, ``python -m tools.live``) on ipc or
tcp endpoints private to the test.  Waits are bounded by generous deadlines
that only turn a hang into a failure; nothing asserts on how long anything took.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from helpers import DEADLINE_S, Processes, children_of, free_tcp_endpoint, wait_until

from model.tagger import window_starts
from protocol.subscriber import Subscriber
from tools.demo_audio import write_demo_wav

JSON_FIELDS = {
    "stream", "seq", "start_s", "end_s", "model", "tags", "smoothed",
    "capture_time", "received_time", "published_time", "gaps", "dropped",
}  # fmt: skip
#: Set when the worker classifies content (``[content]`` settings), says how far behind
#: the stream it is, and has shed windows of it (docs/PROTOCOL.md, optional fields).
CONTENT_FIELDS = {
    "content", "content_probabilities", "level_dbfs", "change_at_s", "change_strength",
    "change_speech", "behind_s", "shed",
}  # fmt: skip


def test_fast_file_through_the_pipeline(processes: Processes, tmp_path: Path, tagger: Any) -> None:
    wav = write_demo_wav(str(tmp_path / "demo.wav"), seconds=8.0)
    y, _ = soundfile.read(wav, dtype="float32")
    starts = window_starts(1 + len(y) // 256, 187, 31)  # hop_seconds=0.5 -> 31 frames
    input_endpoint = f"ipc://{tmp_path}/in"
    publish_endpoint = f"ipc://{tmp_path}/out"
    # the subscriber connects first, so it is subscribed by the time the worker is ready
    subscriber = processes.start(
        "subscribe",
        "tools.subscribe", "--endpoint", publish_endpoint, "--json",
        "--count", str(len(starts)), "--timeout", str(DEADLINE_S),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    worker = processes.worker("worker", input_endpoint, publish_endpoint)
    streamer = processes.start(
        "streamer",
        "streamer", "--file", wav, "--fast", "--endpoint", input_endpoint,
        "--stream-id", "pipe:fast",
    )  # fmt: skip
    assert streamer.wait(timeout=DEADLINE_S) == 0, processes.log("streamer")
    out, _ = subscriber.communicate(timeout=DEADLINE_S)
    assert subscriber.returncode == 0, processes.log("subscribe")
    updates = [json.loads(line) for line in out.decode().splitlines()]
    assert [u["seq"] for u in updates] == list(range(len(starts)))
    for update, start in zip(updates, starts, strict=True):
        assert JSON_FIELDS <= set(update) <= JSON_FIELDS | CONTENT_FIELDS
        assert update["stream"] == "pipe:fast"
        assert update["start_s"] == pytest.approx(start * 256 / 16000)
        assert len(update["tags"]) == len(update["smoothed"]) == 50
    # the worker's windows are the file tagger's (same windows, same model)
    _, reference = tagger.tag_audio(y, hop_frames=31)
    got = np.array([[u["tags"][t] for t in updates[0]["tags"]] for u in updates])
    np.testing.assert_allclose(got, reference, atol=1e-3)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=DEADLINE_S) == 0
    assert f"windows={len(starts)}" in processes.log("worker")


def test_streamer_resumes_after_the_worker_is_killed(processes: Processes, tmp_path) -> None:
    wav = write_demo_wav(str(tmp_path / "long.wav"), seconds=60.0)
    input_endpoint, publish_endpoint = free_tcp_endpoint(), free_tcp_endpoint()
    first = processes.worker("worker1", input_endpoint, publish_endpoint)
    with Subscriber(publish_endpoint, streams=["pipe:restart"]) as subscriber:
        streamer = processes.start(
            "streamer",
            "streamer", "--file", wav, "--endpoint", input_endpoint,
            "--stream-id", "pipe:restart",
        )  # fmt: skip
        assert subscriber.receive(timeout_s=DEADLINE_S) is not None, processes.log("worker1")
        first.kill()  # kill -9 mid-stream
        first.wait()
        killed_at = time.time()
        second = processes.worker("worker2", input_endpoint, publish_endpoint)
        update = subscriber.receive(timeout_s=DEADLINE_S)
        while update is not None and update.published_time < killed_at:
            update = subscriber.receive(timeout_s=DEADLINE_S)  # in flight before the kill
        assert update is not None, processes.log("worker2")
        assert update.stream == "pipe:restart" and update.seq == 0  # a fresh worker's first
        assert update.gaps >= 1  # joined mid-stream: the blocks lost with worker1 are a gap
        assert streamer.poll() is None  # never restarted: still streaming in real time
        streamer.send_signal(signal.SIGTERM)
        assert streamer.wait(timeout=DEADLINE_S) == 0
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=DEADLINE_S) == 0


def test_live_plays_a_file_once_and_exits(processes: Processes, tmp_path: Path) -> None:
    wav = write_demo_wav(str(tmp_path / "short.wav"), seconds=4.0)
    live = processes.start("live", "tools.live", "--file", wav, "--once", stdout=subprocess.PIPE)
    out, _ = live.communicate(timeout=DEADLINE_S)
    assert live.returncode == 0, processes.log("live")
    assert "tagstream live - live" in out.decode()


def test_live_stops_quietly_when_its_worker_is_stopped(
    processes: Processes, tmp_path: Path
) -> None:
    """A worker stopped by a signal exits 0: live stops too, with no error line and status 0."""
    wav = write_demo_wav(str(tmp_path / "loop.wav"), seconds=4.0)
    live = processes.start("live", "tools.live", "--file", wav, stdout=subprocess.DEVNULL)
    # the streamer starts once the worker is ready
    wait_until(lambda: len(children_of(live.pid)) >= 2, "tools.live's worker and streamer",
               process=live)  # fmt: skip
    kids = children_of(live.pid)
    (worker,) = [pid for pid, command in kids.items() if " inference " in command]
    os.kill(worker, signal.SIGTERM)
    assert live.wait(timeout=DEADLINE_S) == 0, processes.log("live")
    assert "error:" not in processes.log("live")
