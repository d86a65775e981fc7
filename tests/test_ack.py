"""Acks between the worker and the streamer: flow control, the end-of-stream handshake.

Real sockets, the real model, ``python -m streamer`` as a process.  A file longer
than five minutes through ``--fast`` to a deliberately slowed worker is in
``test_slow_worker.py``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import zmq
from helpers import (
    DEADLINE_S,
    StreamerSink,
    free_tcp_endpoint,
    wait_until,
)

import streamer.core
from protocol import Ack, AudioFrame, EndOfStream, decode_input, encode_ack
from streamer import FileSource, Streamer


def synth_music(rng: np.random.Generator, seconds: float, rate: int = 16000) -> np.ndarray:
    """Tones and noise that change every few seconds (what the model sees is irrelevant)."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 110.0 * 2 ** (np.floor(t / 4.0) % 12 / 12)
    y = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.05 * rng.standard_normal(len(t))
    return y.astype(np.float32)


def test_fast_sends_no_more_than_the_flow_window_ahead_of_the_acks(
    rng: np.random.Generator, tmp_path: Path, context: zmq.Context[Any]
) -> None:
    block_s = 0.1
    window_blocks = round(streamer.core.FLOW_WINDOW_S / block_s)
    path = tmp_path / "thirty.wav"
    soundfile.write(path, synth_music(rng, 30.0), 16000, subtype="PCM_16")
    sink = StreamerSink(context, ack=False)
    source = FileSource(path, block_seconds=block_s, realtime=False)
    fast = Streamer(source, endpoint=sink.endpoint, stream_id="flow")
    thread = threading.Thread(target=fast.run, daemon=True)
    thread.start()
    received: list[Any] = []
    routing_ids: list[bytes] = []

    def take(timeout_ms: int) -> bool:
        if not sink.socket.poll(timeout_ms):
            return False
        routing_id, *frames = sink.socket.recv_multipart()
        received.append(decode_input(frames))
        routing_ids.append(routing_id)
        return True

    def ack(seq: int, *, end: bool = False) -> None:
        sink.socket.send_multipart([routing_ids[-1], *encode_ack(Ack("flow", seq, end=end))])

    try:
        wait_until(lambda: take(100) and len(received) >= window_blocks, "the first window")
        # Unacknowledged, the streamer stops at the window (nothing more comes for a while;
        # a broken flow control shows here, a slow machine only makes this pass more easily).
        assert not take(1000)
        assert len(received) == window_blocks
        ack(40)  # 40 blocks tagged: 40 more may go
        wait_until(lambda: take(100) and len(received) >= window_blocks + 40, "40 more")
        assert not take(1000)
        while not isinstance(received[-1], EndOfStream):  # now a worker that keeps up
            ack(received[-1].seq + 1)
            wait_until(lambda: take(100), "the next block or the end")
        ack(300, end=True)
        thread.join(timeout=DEADLINE_S)
        assert not thread.is_alive(), "the streamer did not end after its end was acked"
    finally:
        fast.stop()
        sink.close()
    audio = [m for m in received if isinstance(m, AudioFrame)]
    assert [m.seq for m in audio] == list(range(300))
    assert received[-1] == EndOfStream("flow", 300)
    assert fast.stats().acked == 300


def test_the_streamer_says_when_no_worker_is_connected(
    rng: np.random.Generator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Blocks are counted as queued, not sent, and the log names the endpoint and the fix."""
    monkeypatch.setattr(streamer.core, "END_WAIT_BASE_S", 1.0)  # wait 1 s for a worker at the end
    monkeypatch.setattr(streamer.core, "NO_WORKER_WARN_S", 0.0)
    path = tmp_path / "short.wav"
    soundfile.write(path, synth_music(rng, 1.0), 16000, subtype="PCM_16")
    endpoint = free_tcp_endpoint()  # nobody listens there
    lonely = Streamer(FileSource(path, realtime=False), endpoint=endpoint, stream_id="alone")
    with caplog.at_level(logging.INFO, logger="streamer.core"):
        stats = lonely.run()
    assert stats.sent == 0
    assert stats.queued == 11  # 10 blocks and the end message
    assert not stats.worker_connected
    text = caplog.text
    assert f"no worker connected to {endpoint}; is `python -m inference` running?" in text
    assert "worker=none sent=0 queued=11" in text
