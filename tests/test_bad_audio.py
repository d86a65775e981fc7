"""Odd and broken audio against a real worker: each behaviour of docs/ROBUSTNESS.md.

Every case goes through real ZeroMQ sockets into an in-process worker with the
real MSD_musicnn model (the ``run_worker`` fixture of ``conftest.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from helpers import FRAME_S, WINDOW, expected_starts, frames_of, music, stream_settings, wire_header

from inference import StreamState
from model.audio import SAMPLE_LIMIT
from protocol import MAX_BUFFER_BYTES, ProtocolError, decode_input

HOP_S = 3.0


def check_updates(updates: list, n_samples: int, sample_rate: int = 16000) -> None:
    """Every window of the audio came out, on the 16 kHz timeline, with valid probabilities."""
    n16 = round(n_samples * 16000 / sample_rate)
    starts = expected_starts(n16, 187)
    assert len(updates) >= len(starts) - 1 and updates, (len(updates), len(starts))
    for update, start in zip(updates, starts, strict=False):
        assert update.start_s == pytest.approx(start * FRAME_S, abs=2 * FRAME_S)
        assert update.end_s - update.start_s == pytest.approx(WINDOW * FRAME_S)
    for update in updates:
        for values in (update.probabilities, update.smoothed):
            assert np.isfinite(values).all()
            assert ((values >= 0) & (values <= 1)).all()


SIGNALS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "silence": lambda rng: np.zeros(16000 * 4, np.float32),
    "dc_offset": lambda rng: (0.7 + 0.1 * music(rng, 4.0)).astype(np.float32),
    "clipped": lambda rng: np.clip(20.0 * music(rng, 4.0), -1.0, 1.0),
    "out_of_range": lambda rng: (1000.0 * music(rng, 4.0)).astype(np.float32),
    "full_scale_square": lambda rng: np.sign(music(rng, 4.0) + 1e-6).astype(np.float32),
}


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_odd_but_valid_audio_is_tagged(name: str, run_worker, rng) -> None:
    harness = run_worker(hop_seconds=HOP_S)
    y = SIGNALS[name](rng)
    stream = f"bad:{name}"
    harness.send_audio(y, stream=stream)
    starts = expected_starts(len(y), 187)
    updates = harness.receive(count=len(starts), stream=stream)
    check_updates(updates, len(y))
    harness.barrier(rng)  # everything sent before it has been taken in
    stats = harness.worker.stats()
    assert stats.samples_replaced == 0 and stats.rejected_total == 0
    if name == "silence":  # the model's answer to silence: the same for every window
        np.testing.assert_allclose(updates[0].probabilities, updates[-1].probabilities, atol=1e-6)


def test_out_of_range_samples_are_limited(rng) -> None:
    """Finite samples beyond +-SAMPLE_LIMIT are clipped there, so the mel power stays finite."""
    state = StreamState("x", settings=stream_settings(hop_frames=187), now=0.0)
    y = np.full(16000 * 4, 3e38, np.float32)
    y[::2] = -3e38
    for frame in frames_of(y):
        state.accept(frame, received_time=0.0, now=0.0)
    [window] = state.take_pending(1)
    assert np.isfinite(window.mel).all()
    assert SAMPLE_LIMIT == 16.0


@pytest.mark.parametrize(
    ("value", "name"), [(np.nan, "nan"), (np.inf, "posinf"), (-np.inf, "neginf")]
)
def test_non_finite_samples_are_replaced_and_counted(run_worker, rng, value, name) -> None:
    harness = run_worker(hop_seconds=HOP_S)
    y = music(rng, 4.0)
    y[16000:24000] = value  # half a second of it
    y[::97] = value
    stream = f"bad:{name}"
    harness.send_audio(y, stream=stream)
    updates = harness.receive(count=len(expected_starts(len(y), 187)), stream=stream)
    check_updates(updates, len(y))
    replaced = int(np.count_nonzero(~np.isfinite(y)))
    stats = harness.worker.wait_for(lambda s: s.samples_replaced >= replaced)
    assert stats.samples_replaced == replaced


@pytest.mark.parametrize("sample_rate", [8000, 11025, 96000, 192000])
def test_unusual_sample_rates_are_resampled(run_worker, rng, sample_rate) -> None:
    harness = run_worker(hop_seconds=HOP_S)
    y = music(rng, 4.0, sample_rate)
    stream = f"rate:{sample_rate}"
    harness.send_audio(y, stream=stream, sample_rate=sample_rate, block=sample_rate // 10)
    n16 = round(len(y) * 16000 / sample_rate)
    updates = harness.receive(count=len(expected_starts(n16, 187)), stream=stream)
    check_updates(updates, len(y), sample_rate)


def test_one_sample_frames_are_tagged(run_worker, rng) -> None:
    harness = run_worker(hop_seconds=HOP_S)
    y = music(rng, 3.1, 8000)  # 24 800 messages of one sample each
    harness.send_audio(y, stream="tiny:8k", sample_rate=8000, block=1)
    updates = harness.receive(count=1, stream="tiny:8k")
    check_updates(updates, len(y), 8000)
    harness.barrier(rng)  # every one-sample block and the end have been taken in
    stats = harness.worker.stats()
    assert stats.gaps == 0 and stats.dropped == 0 and stats.rejected_total == 0


def test_the_largest_frame_is_tagged_and_a_larger_one_rejected(run_worker, rng) -> None:
    harness = run_worker(hop_seconds=HOP_S)
    rate = 384_000
    y = music(rng, 10.0, rate)  # 10 s at 384 kHz: 15.4 MB, the largest audio message allowed
    assert y.nbytes <= MAX_BUFFER_BYTES
    harness.send_audio(y, stream="huge:ok", sample_rate=rate, block=len(y))
    updates = harness.receive(count=len(expected_starts(160_000, 187)), stream="huge:ok")
    check_updates(updates, len(y), rate)
    header = wire_header(stream="huge:bad", sample_rate=16000, frames=160_001)  # 10 s + 1 sample
    message = [header, bytes(160_001 * 4)]
    with pytest.raises(ProtocolError) as excinfo:
        decode_input(message)
    assert excinfo.value.reason == "length"
    harness.send(message)
    stats = harness.worker.wait_for(lambda s: s.rejected.get("length", 0) >= 1)
    assert stats.rejected == {"length": 1}
