"""A file longer than five minutes through ``--fast`` to a deliberately slowed worker.

The worker is a real ``python -m inference`` process, slowed from outside as ``cpulimit``
does: it runs a tenth of each half second and is SIGSTOPped the rest, so it tags far
slower than ``--fast`` reads.  Every window of the file must still come out.

Before the end-of-stream handshake and flow control (``e158992``), the streamer sent the
whole file at once and closed its socket 30 s after the file ended, whatever the worker
still had to do: this test then got 305 of the 320 windows (the last 15 s never tagged,
though the worker ran freely for 2 more minutes) and failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import zmq
from helpers import DEADLINE_S, Processes, audio_messages, expected_starts, music, wait_until

from protocol import TagUpdate, decode_update

#: Longer than five minutes, as issue 12 asks.
FILE_S = 320.0
HOP_S = 1.0
#: The worker runs RUN_S of every RUN_S + STOP_S.
RUN_S, STOP_S = 0.05, 0.45


class DutyCycle:
    """SIGSTOP/SIGCONT a process so that it runs ``run_s`` of every ``run_s + stop_s``."""

    def __init__(self, pid: int, run_s: float, stop_s: float) -> None:
        self.pid, self.run_s, self.stop_s = pid, run_s, stop_s
        self.cycles = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._done.is_set():
                os.kill(self.pid, signal.SIGSTOP)
                self._done.wait(self.stop_s)  # the slowing itself, not a synchronisation
                os.kill(self.pid, signal.SIGCONT)
                self.cycles += 1
                self._done.wait(self.run_s)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Let the process run freely again (it is never left stopped)."""
        self._done.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)


def test_every_window_of_a_long_fast_file_from_a_slowed_worker(
    processes: Processes, rng: np.random.Generator, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[inference]\nhop_seconds = {HOP_S}\nmax_batch = 1\n")
    # ipc: kernel buffers of a unix socket are small, so what the worker has not taken
    # stays with the streamer (on loopback tcp megabytes could hide in the kernel).
    input_endpoint, publish_endpoint = f"ipc://{tmp_path}/in", f"ipc://{tmp_path}/out"
    worker = processes.worker("worker", input_endpoint, publish_endpoint, "--config", str(config))
    path = tmp_path / "long.wav"
    soundfile.write(path, music(rng, FILE_S), 16000, subtype="PCM_16")
    hop_frames = round(HOP_S * 16000) // 256
    starts = expected_starts(soundfile.info(str(path)).frames, hop_frames)

    context: zmq.Context[Any] = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(publish_endpoint)
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(input_endpoint)
    updates: list[TagUpdate] = []

    def take(timeout_ms: int = 100) -> None:
        while sub.poll(timeout_ms):
            update = decode_update(sub.recv_multipart())
            if update.stream == "long":
                updates.append(update)
            timeout_ms = 0

    duty: DutyCycle | None = None
    try:
        # Join the subscription with probe streams before the worker is slowed.
        probes = iter(range(1000))

        def joined() -> bool:
            for message in audio_messages(np.zeros(51200, np.float32), f"probe:{next(probes)}"):
                push.send_multipart(message)
            return bool(sub.poll(2000))

        wait_until(joined, "the subscription to reach the worker")
        duty = DutyCycle(worker.pid, RUN_S, STOP_S)
        streamer = processes.start(
            "streamer", "streamer", "--file", str(path), "--fast",
            "--endpoint", input_endpoint, "--stream-id", "long",
        )  # fmt: skip

        def ended() -> bool:  # read while waiting, so that no queue between us fills up
            take()
            return streamer.poll() is not None

        wait_until(ended, "the streamer to end", timeout_s=20 * DEADLINE_S)
        assert streamer.returncode == 0, processes.log("streamer")[-2000:]
        cycles = duty.cycles
        duty.stop()
        # The worker now runs freely: whatever it still holds comes out.
        wait_until(
            lambda: take() or len(updates) >= len(starts) or worker.poll() is not None,
            lambda: f"{len(starts)} windows, got {len(updates)}",
            timeout_s=DEADLINE_S,
        )
    finally:
        if duty is not None:
            duty.stop()
        sub.close()
        push.close()
        context.term()
    log = processes.log("streamer")
    assert cycles > 10, "the worker was not slowed"
    assert "gave up" not in log, log[-2000:]
    assert [u.seq for u in updates] == list(range(len(starts))), log[-2000:]
    assert [u.start_s for u in updates] == pytest.approx([s * 256 / 16000 for s in starts])
    assert updates[-1].end_s >= FILE_S - HOP_S
    assert all(u.dropped == 0 and u.shed == 0 for u in updates)  # not live: never shed
