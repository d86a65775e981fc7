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
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from inference.ready import NotReadyError, wait_ready
from model.tagger import window_starts
from protocol.subscriber import Subscriber
from tools.demo_audio import write_demo_wav

ROOT = Path(__file__).resolve().parent.parent
#: Bound on any single wait: model loading on a busy 2-core machine included.
DEADLINE_S = 120.0
JSON_FIELDS = {
    "stream", "seq", "start_s", "end_s", "model", "tags", "smoothed",
    "capture_time", "received_time", "published_time", "gaps", "dropped",
}  # fmt: skip


class Processes:
    """Start commands with logs in ``folder``; :meth:`cleanup` kills whatever is left."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log,
            stderr=log,
        )
        log.close()
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def worker(self, name: str, input_endpoint: str, publish_endpoint: str):
        """Start a worker and wait for its ready file (not for a log line)."""
        ready_file = self.folder / f"{name}.ready"
        process = self.start(
            name, "inference", "--input", input_endpoint, "--publish", publish_endpoint,
            "--ready-file", str(ready_file),
        )  # fmt: skip
        try:
            wait_ready(ready_file, process=process, timeout_s=DEADLINE_S)
        except NotReadyError as exc:
            pytest.fail(f"{exc}: {self.log(name)[-2000:]}")
        return process

    def cleanup(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.cleanup()


def free_tcp_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_fast_file_through_the_pipeline(processes: Processes, tmp_path: Path) -> None:
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
        assert set(update) == JSON_FIELDS
        assert update["stream"] == "pipe:fast"
        assert update["start_s"] == pytest.approx(start * 256 / 16000)
        assert len(update["tags"]) == len(update["smoothed"]) == 50
    # the worker's windows are the file tagger's (same windows, same model)
    from model import load_tagger

    _, reference = load_tagger("MSD_musicnn").tag_audio(y, hop_frames=31)
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


def _children(pid: int) -> dict[int, str]:
    """``{pid: command line}`` of the direct children of ``pid`` (from /proc)."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            try:
                found[kid] = Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
    return found


def test_live_stops_quietly_when_its_worker_is_stopped(
    processes: Processes, tmp_path: Path
) -> None:
    """A worker stopped by a signal exits 0: live stops too, with no error line and status 0."""
    wav = write_demo_wav(str(tmp_path / "loop.wav"), seconds=4.0)
    live = processes.start("live", "tools.live", "--file", wav, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + DEADLINE_S
    while len(kids := _children(live.pid)) < 2:  # the streamer starts once the worker is ready
        assert live.poll() is None, processes.log("live")
        assert time.monotonic() < deadline, "tools.live never started its worker and streamer"
        time.sleep(0.1)
    (worker,) = [pid for pid, command in kids.items() if " inference " in command]
    os.kill(worker, signal.SIGTERM)
    assert live.wait(timeout=DEADLINE_S) == 0, processes.log("live")
    assert "error:" not in processes.log("live")
