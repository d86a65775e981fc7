"""The inference worker: per-stream logic without sockets, then a real worker over tcp.

The in-process worker uses the real MSD_musicnn weights (converted once into
the default cache ``~/.cache/tagstream``) and real ZeroMQ sockets; audio is
synthesized with a seeded ``rng``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from helpers import (
    FRAME_S,
    ROOT,
    SPEC,
    WINDOW,
    expected_starts,
    frames_of,
    music,
    stream_settings,
    wire_header,
    worker_config,
)

from config import InferenceConfig, choices
from inference import (
    BACKENDS,
    AcceptResult,
    ExactBackend,
    ExponentialAverage,
    SettingsError,
    StreamSettings,
    StreamState,
    WindowScheduler,
    Worker,
)
from model import log_mel
from model.audio import resample
from model.tagger import window_starts
from protocol import (
    AudioFrame,
    TagUpdate,
    encode_audio,
)

#: Receive deadline for socket tests: generous, only there so a broken worker fails the test.
DEADLINE_S = 60.0


def feed(state: StreamState, frames: list[AudioFrame]) -> list[str]:
    return [state.accept(f, received_time=f.capture_time + 0.01, now=0.0) for f in frames]


# -- WindowScheduler, EMA, settings -------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 187, 400])
@pytest.mark.parametrize(("window", "hop"), [(5, 2), (5, 5), (4, 7), (187, 31)])
def test_scheduler_windows_equal_slices(chunk: int, window: int, hop: int, rng) -> None:
    frames = rng.random((500, 3), dtype=np.float32)
    scheduler = WindowScheduler(window_frames=window, hop_frames=hop, n_mels=3)
    got = []
    for start in range(0, len(frames), chunk):
        got += scheduler.push(frames[start : start + chunk])
    starts = [s for s, _ in got]
    assert starts == list(range(0, len(frames) - window + 1, hop))
    for start, win in got:
        np.testing.assert_array_equal(win, frames[start : start + window])


def test_scheduler_reset_restarts_frame_count(rng) -> None:
    scheduler = WindowScheduler(window_frames=4, hop_frames=4, n_mels=2)
    scheduler.push(rng.random((6, 2), dtype=np.float32))
    scheduler.reset()
    frames = rng.random((4, 2), dtype=np.float32)
    [(start, window)] = scheduler.push(frames)
    assert start == 0
    np.testing.assert_array_equal(window, frames)


def test_quickest_transit_follows_a_drifting_clock() -> None:
    """The least transit of the last one to two epochs, not of the stream's life."""
    from inference.windows import TRANSIT_EPOCH_S as EPOCH

    state = StreamState("s", settings=stream_settings(), now=0.0)
    assert state.min_transit_s == math.inf
    assert state.observe_transit(0.5, now=0.0) == 0.5
    assert state.observe_transit(0.2, now=10.0) == 0.2
    assert state.observe_transit(3.0, now=EPOCH + 1) == 0.2  # the last epoch still counts
    assert state.observe_transit(3.1, now=2 * EPOCH + 2) == 3.0  # 0.2 is two epochs old
    assert state.observe_transit(-1.0, now=2 * EPOCH + 3) == -1.0  # ahead: taken at once


def test_ema_alpha_and_update() -> None:
    s = stream_settings(hop_frames=31, ema_seconds=10.0)
    assert s.ema_alpha == pytest.approx(1 - math.exp(-31 * FRAME_S / 10.0))
    ema = ExponentialAverage(0.25)
    np.testing.assert_allclose(ema.update(np.array([1.0, 0.0])), [1.0, 0.0])
    np.testing.assert_allclose(ema.update(np.array([0.0, 1.0])), [0.75, 0.25])


def test_settings_refuse_a_window_that_disagrees_with_the_model() -> None:
    with pytest.raises(SettingsError, match="window_seconds=2"):
        StreamSettings.from_seconds(
            spec=SPEC,
            window_frames=WINDOW,
            window_seconds=2.0,
            hop_seconds=0.5,
            ema_seconds=10.0,
            max_gap_seconds=1.0,
        )
    ok = StreamSettings.from_seconds(
        spec=SPEC,
        window_frames=WINDOW,
        window_seconds=3.0,
        hop_seconds=0.5,
        ema_seconds=10.0,
        max_gap_seconds=1.0,
    )
    assert ok.hop_frames == 31


# -- StreamState --------------------------------------------------------------------------


def test_stream_windows_equal_offline_mel_and_times(rng) -> None:
    y = music(rng, 5.0)
    state = StreamState("test:a", settings=stream_settings(), now=0.0)
    assert set(feed(state, frames_of(y, block=1234))) == {AcceptResult.ACCEPTED}
    state.end(now=0.0)
    windows = state.take_pending(100)
    mel = log_mel(y)
    assert [round(w.start_s / FRAME_S) for w in windows] == list(
        window_starts(len(mel), WINDOW, 31)
    )
    for w in windows:
        start = round(w.start_s / FRAME_S)
        np.testing.assert_allclose(w.mel, mel[start : start + WINDOW], atol=1e-4)
        assert w.end_s - w.start_s == pytest.approx(WINDOW * FRAME_S)
        # capture time of the last sample: the stream started at t=1000 with sample 0
        assert w.capture_time == pytest.approx(1_000.0 + w.end_s - 1 / 16000)
        assert w.received_time >= 1_000.0


def test_duplicate_blocks_are_dropped_and_counted(rng) -> None:
    frames = frames_of(music(rng, 1.0))
    state = StreamState("test:a", settings=stream_settings(), now=0.0)
    results = feed(state, [*frames[:5], frames[3], frames[4], *frames[5:]])
    assert results.count(AcceptResult.DUPLICATE) == 2
    assert state.dropped == 2 and state.gaps == 0


def test_restarted_streamer_starts_afresh(rng) -> None:
    state = StreamState("test:a", settings=stream_settings(), now=0.0)
    feed(state, frames_of(music(rng, 1.0), start_time=1_000.0))
    later = frames_of(music(rng, 0.2), start_time=2_000.0)  # seq 0 again, newer capture
    assert state.accept(later[0], received_time=2_000.0, now=0.0) == AcceptResult.RESTARTED


def test_small_gap_is_filled_with_silence(rng) -> None:
    y = music(rng, 6.0)
    frames = frames_of(y, block=1600)
    state = StreamState("test:a", settings=stream_settings(hop_frames=WINDOW), now=0.0)
    results = feed(state, frames[:20] + frames[23:])  # 0.3 s missing
    assert results.count(AcceptResult.GAP_FILLED) == 1 and state.gaps == 1
    state.end(now=0.0)
    windows = state.take_pending(10)
    expected = y.copy()
    expected[20 * 1600 : 23 * 1600] = 0.0
    mel = log_mel(expected)
    assert [w.start_s for w in windows] == pytest.approx([0.0, WINDOW * FRAME_S])
    for k, w in enumerate(windows):
        np.testing.assert_allclose(w.mel, mel[k * WINDOW : (k + 1) * WINDOW], atol=1e-4)
        assert w.capture_time == pytest.approx(1_000.0 + w.end_s - 1 / 16000)


def test_long_gap_resets_the_window_and_moves_the_clock(rng) -> None:
    y = music(rng, 8.0)
    frames = frames_of(y, block=1600)
    state = StreamState("test:a", settings=stream_settings(hop_frames=WINDOW), now=0.0)
    results = feed(state, frames[:20] + frames[40:])  # 2 s missing > max_gap_seconds=1
    assert results.count(AcceptResult.GAP_RESET) == 1
    assert state.gaps == 1 and state.resets == 1
    state.end(now=0.0)
    windows = state.take_pending(10)
    # 2 s before the gap: no whole window; after it a new segment starts at 4.0 s
    assert [w.start_s for w in windows] == pytest.approx([4.0])  # 4 s left: one window
    mel_after = log_mel(y[40 * 1600 :])
    np.testing.assert_allclose(windows[0].mel, mel_after[:WINDOW], atol=1e-4)
    assert windows[0].capture_time == pytest.approx(1_000.0 + windows[0].end_s - 1 / 16000)


def test_nan_and_inf_samples_are_replaced_and_counted(rng) -> None:
    y = music(rng, 4.0)
    y[100:110] = np.nan
    y[5000] = np.inf
    state = StreamState("test:a", settings=stream_settings(), now=0.0)
    feed(state, frames_of(y))
    state.end(now=0.0)
    assert state.samples_replaced == 11
    windows = state.take_pending(10)
    assert windows and all(np.isfinite(w.mel).all() for w in windows)


def test_pending_windows_are_capped(rng) -> None:
    state = StreamState(
        "test:a", settings=stream_settings(hop_frames=1, max_pending_windows=5), now=0.0
    )
    feed(state, frames_of(music(rng, 4.0)))
    assert state.pending == 5
    assert state.dropped > 0


# -- backends ----------------------------------------------------------------------------


def test_every_mode_has_a_backend() -> None:
    assert set(BACKENDS) == set(choices(InferenceConfig, "mode"))
    assert all(BACKENDS[mode].mode == mode for mode in BACKENDS)


def test_exact_backend_takes_one_window_per_stream_in_turn(rng) -> None:
    states = []
    for name, seconds in (("a", 5.0), ("b", 5.0), ("c", 3.2)):
        state = StreamState(f"test:{name}", settings=stream_settings(), now=0.0)
        feed(state, frames_of(music(rng, seconds), stream=f"test:{name}"))
        states.append(state)
    before = [state.pending for state in states]
    assert before[0] >= 3 and before[1] >= 3 and before[2] == 1
    backend = ExactBackend(tagger=None)  # choosing windows needs no model
    assert backend.has_due(states)
    due = backend.take_due(states, limit=5)
    assert [item.state.stream for item in due] == [
        "test:a", "test:b", "test:c", "test:a", "test:b"
    ]  # fmt: skip
    assert all(item.lookahead_s == 0.0 for item in due)
    assert [state.pending for state in states] == [before[0] - 2, before[1] - 2, 0]
    assert [item.window.start_s for item in due[:2]] == [0.0, 0.0]
    assert due[3].window.start_s == pytest.approx(31 * FRAME_S)  # each stream's oldest first
    assert not backend.has_due([states[2]])


# -- the command: every settings check before TensorFlow ------------------------------------

#: Runs ``python -m inference``'s main once per argv in one process; prints, per run, the exit
#: status, the last stderr line and whether TensorFlow had been imported by then.
_MAIN_PER_ARGV = """
import io, json, sys
from inference.__main__ import main
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    status = main(argv, stderr=err)
    last_line = err.getvalue().strip().splitlines()[-1:]
    print(json.dumps([status, last_line, "tensorflow" in sys.modules]))
"""


def test_bad_settings_exit_before_tensorflow_loads(tmp_path: Path) -> None:
    wrong_window = tmp_path / "window.toml"
    wrong_window.write_text("[inference]\nwindow_seconds = 2.0\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        metrics = tmp_path / "metrics.toml"
        metrics.write_text(f"[metrics]\nworker_port = {busy.getsockname()[1]}\n")
        cases = [
            (["--hop-seconds", "0.001"], 2, "inference.hop_seconds=0.001 is shorter"),
            (["--hop-seconds", "inf"], 2, "inference.hop_seconds"),
            (["--config", str(wrong_window)], 2, "inference.window_seconds=2"),
            (["--mode", "streaming", "--model", "MSD_vgg"], 2, "needs a musicnn model"),
            (["--mode", "fast"], 2, "invalid choice: 'fast'"),
            (["--precision", "float16"], 2, "invalid choice: 'float16'"),
            (["--model", str(tmp_path / "missing")], 3, "nor a model folder"),
            (["--config", str(metrics)], 4, "metrics.worker_port"),
        ]
        result = subprocess.run(
            [sys.executable, "-c", _MAIN_PER_ARGV, json.dumps([argv for argv, _, _ in cases])],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
    assert result.returncode == 0, result.stderr
    runs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(runs) == len(cases), result.stdout
    for (argv, status, message), (got_status, last_line, tensorflow) in zip(
        cases, runs, strict=True
    ):
        assert got_status == status, (argv, last_line)
        assert last_line and "error: " in last_line[0] and message in last_line[0], argv
        assert not tensorflow, f"{argv}: TensorFlow was imported before the error"


# -- a real worker over tcp ---------------------------------------------------------------


def test_worker_publishes_updates_with_times_and_all_tags(run_worker, tagger, rng) -> None:
    harness = run_worker(hop_seconds=0.5)
    y = music(rng, 5.0)
    harness.send_audio(y, stream="test:one")
    starts = expected_starts(len(y), 31)
    updates = harness.receive(count=len(starts), stream="test:one")
    assert [u.seq for u in updates] == list(range(len(starts)))
    assert [u.start_s for u in updates] == pytest.approx([s * FRAME_S for s in starts])
    for update in updates:
        assert update.end_s - update.start_s == pytest.approx(WINDOW * FRAME_S)
        assert update.tags == tagger.tags and len(update.tags) == 50
        assert update.model == "MSD_musicnn"
        assert ((update.probabilities >= 0) & (update.probabilities <= 1)).all()
        assert update.capture_time == pytest.approx(1_000.0 + update.end_s - 1 / 16000)
        assert update.capture_time <= update.received_time <= update.published_time
        assert set(update.to_json_dict()["tags"]) == set(tagger.tags)
    np.testing.assert_allclose(updates[0].smoothed, updates[0].probabilities)
    alpha = 1 - math.exp(-31 * FRAME_S / 10.0)
    np.testing.assert_allclose(
        updates[1].smoothed,
        alpha * updates[1].probabilities + (1 - alpha) * updates[0].probabilities,
        rtol=1e-5,
        atol=1e-6,
    )


def test_hostile_input_is_counted_and_does_not_stop_the_worker(run_worker, rng) -> None:
    harness = run_worker(hop_seconds=3.0)
    pcm = np.zeros(4, dtype="<f4").tobytes()
    bad = {
        "header": [[b"\xff\x00garbage"], [b""], [msgpack.packb([1, 2, 3]), pcm]],
        "frames": [[wire_header(), pcm, pcm]],
        "version": [[wire_header(version=99), pcm]],
        "kind": [[wire_header(kind="tags"), pcm]],
        "sample_rate": [[wire_header(sample_rate=500), pcm], [wire_header(sample_rate=10**9), pcm]],
        "length": [[wire_header(frames=10**9), pcm], [wire_header(frames=0), b""]],
        "size": [[wire_header(frames=4), pcm + b"\x00"]],
        "stream": [[wire_header(stream=""), pcm]],
    }
    for messages in bad.values():
        for message in messages:
            harness.send(message)
    # NaN samples, one-sample blocks (16 kHz and 44.1 kHz), a 6-channel i16 block
    nan_audio = music(rng, 3.5)
    nan_audio[::7] = np.nan
    harness.send_audio(nan_audio, stream="evil:nan")
    harness.send_audio(music(rng, 0.05), stream="evil:tiny16", block=1)
    harness.send_audio(music(rng, 0.05, 44100), stream="evil:tiny44", block=1, sample_rate=44100)
    harness.send(
        encode_audio(
            AudioFrame(
                stream="evil:i16",
                seq=0,
                capture_time=1.0,
                sample_rate=48000,
                channels=6,
                sample_format="i16",
                samples=rng.integers(-30000, 30000, (4800, 6)).astype("<i2"),
            )
        )
    )
    # ... and the worker still tags a good stream
    y = music(rng, 4.0)
    harness.send_audio(y, stream="test:good")
    assert len(harness.receive(count=1, stream="test:good")) == 1
    stats = harness.worker.wait_for(lambda s: s.ended >= 4)
    for reason, messages in bad.items():
        assert stats.rejected.get(reason, 0) >= len(messages), (reason, stats.rejected)
    assert stats.samples_replaced == len(nan_audio[::7])
    assert stats.rejected.get("internal", 0) == 0


def test_windows_of_several_streams_share_a_batch(run_worker, rng) -> None:
    harness = run_worker(hop_seconds=3.0)
    # Pause the loop so every stream's window is due at the same step: whether a
    # running worker batches depends on how fast audio arrives, which a test
    # should not race against.
    assert harness.worker.pause()  # step() by hand from here on: the loop thread has returned
    streams = [f"test:batch{i}" for i in range(8)]
    clips = {s: music(rng, 3.5) for s in streams}
    for offset in range(0, len(clips[streams[0]]), 8000):  # interleave 0.5 s blocks
        for stream in streams:
            harness.send(
                encode_audio(
                    frames_of(
                        clips[stream][offset : offset + 8000],
                        stream=stream,
                        block=8000,
                        first_seq=offset // 8000,
                    )[0]
                )
            )
    time.sleep(0.5)  # let ZeroMQ's I/O thread queue all 56 messages (not a timing check)
    updates: list[TagUpdate] = []
    for _ in range(20):
        harness.worker.step()
        updates += harness.receive(count=None)
        if len(updates) >= len(streams):
            break
    assert sorted(u.stream for u in updates) == streams
    stats = harness.worker.stats()
    assert max(stats.batch_sizes) == len(streams), stats.batch_sizes


def test_a_batch_smaller_than_the_streams_serves_them_in_turn(run_worker, rng) -> None:
    """With more streams than ``max_batch``, the streams served least recently go first.

    Served in a fixed order, the first ``max_batch`` streams of a busy worker took every
    batch while the others waited (and, live, were shed as stale): a station group larger
    than the batch had its last stations behind while the first were on time.
    """
    harness = run_worker(hop_seconds=0.5, max_batch=2)
    assert harness.worker.pause()  # step() by hand from here on: the loop thread has returned
    streams = [f"test:turn{i}" for i in range(5)]
    clips = {s: music(rng, 5.0) for s in streams}
    for offset in range(0, len(clips[streams[0]]), 8000):  # interleave 0.5 s blocks
        for stream in streams:
            frame = frames_of(
                clips[stream][offset : offset + 8000],
                stream=stream,
                block=8000,
                first_seq=offset // 8000,
            )[0]
            harness.send(encode_audio(frame))
    time.sleep(0.5)  # let ZeroMQ's I/O thread queue all 50 messages (not a timing check)
    order: list[str] = []
    for _ in range(100):
        harness.worker.step()
        order += [u.stream for u in harness.receive(count=None)]
        if len(order) >= 5 * len(streams):
            break
    assert sorted(set(order)) == streams and len(order) == 5 * len(streams), order
    # Every stream has its first update before any has its second, and so on.
    served = dict.fromkeys(streams, 0)
    for stream in order:
        served[stream] += 1
        assert served[stream] - min(served.values()) <= 1, order


def test_priority_streams_fill_each_batch_before_the_others(run_worker, rng) -> None:
    """``inference.priority_streams``: a busy worker serves those streams' due windows first.

    In turn, a priority stream got one window per batch like every other stream, so a
    worker that was behind left the station's main feed as late as its archive feeds.
    Three archive streams send 8 s each in 0.1 s blocks, then the priority stream its
    5 s in one message: once the worker has read it, its five windows wait together and
    every batch takes them first, so its updates come one after another however the
    input arrives (in turn, they shared the batches with the archive windows waiting).
    """
    harness = run_worker(hop_seconds=0.5, max_batch=2, priority_streams=("test:air-*",))
    assert harness.worker.pause()  # step() by hand from here on: the loop thread has returned
    archive = [f"test:archive-{i}" for i in range(3)]
    clips = {s: music(rng, 8.0) for s in archive}
    for offset in range(0, len(clips[archive[0]]), 1600):
        for stream in archive:
            [frame] = frames_of(
                clips[stream][offset : offset + 1600],
                stream=stream,
                first_seq=offset // 1600,
            )
            harness.send(encode_audio(frame))
    [air] = frames_of(music(rng, 5.0), stream="test:air-a", block=80000)
    harness.send(encode_audio(air))
    order: list[str] = []
    for _ in range(400):
        harness.worker.step()
        order += [u.stream for u in harness.receive(count=None)]
        if len(order) >= 3 * 11 + 5:
            break
    assert sorted(order) == sorted(archive * 11 + ["test:air-a"] * 5), order
    first = order.index("test:air-a")
    assert order[first : first + 5] == ["test:air-a"] * 5, " ".join(order)
    # The archive streams still had windows waiting then (the worker reads its input
    # faster than it tags it), so the priority stream went ahead of them.
    assert len(order) - (first + 5) >= 4, " ".join(order)


@pytest.mark.parametrize(
    ("live", "max_age_s", "reads_on"),
    [(True, 60.0, True), (False, 60.0, False), (True, 0.0, False)],
    ids=["live-shed", "not-live", "live-never-shed"],
)
def test_a_starved_live_stream_does_not_hold_up_the_input(
    run_worker, rng, live: bool, max_age_s: float, reads_on: bool
) -> None:
    """A stream with half of ``max_pending_windows`` (32) waiting stops the worker's reads
    only when nothing else bounds its backlog.

    Shedding stale work bounds a live stream's backlog, and a stream the worker starves
    (not among ``priority_streams`` while it is behind) reaches 32 windows at a hop under
    ``max_window_age_seconds / 32``; stopping the reads for it kept the priority
    streams' audio waiting in the socket (``python -m benchmarks.turns --hop-seconds
    0.25 --max-age 10 --priority 2``).  A stream that is not live, or any stream when
    shedding is off, still stops them: that audio waits in the socket, not in memory.
    """
    harness = run_worker(hop_seconds=0.5, max_batch=2, max_window_age_seconds=max_age_s)
    assert harness.worker.pause()  # step() by hand from here on
    now = time.time()
    # 40 s in 0.1 s blocks: 75 windows (the newest 64 wait), far more than the worker
    # takes in 10 steps of 2, none older than 60 s.  Then another stream's 8 s.
    backlog = frames_of(music(rng, 40.0), stream="test:archive", start_time=now - 45)
    for frame in backlog:
        harness.send(encode_audio(dataclasses.replace(frame, live=live)))
    others = frames_of(music(rng, 8.0), stream="test:air", start_time=now - 10)
    for frame in others:
        harness.send(encode_audio(frame))
    sent = len(backlog) + len(others)
    before = harness.worker.stats().messages
    time.sleep(0.5)  # loopback tcp: let the messages reach the worker's socket
    read = []
    for _ in range(10):  # each step reads up to 64 rounds of max_batch messages
        harness.worker.step()
        read.append(harness.worker.stats().messages - before)
    if reads_on:
        assert read[-1] == sent, read
    else:
        # The reads stopped once 32 windows waited (18.5 s of audio, 185 blocks), then went
        # on one round per step, not 64: the rest, the other stream's too, waits in the socket.
        assert read[-1] < len(backlog), read


def test_too_many_streams_are_refused(run_worker, rng) -> None:
    harness = run_worker(hop_seconds=3.0, max_streams=2)
    # the probe streams ended, so the worker starts with no stream
    for i in range(4):
        harness.send_audio(music(rng, 0.3), stream=f"test:s{i}", end=False)
    stats = harness.worker.wait_for(lambda s: s.refused >= 6)
    assert stats.refused == 6 and stats.streams == 2


@pytest.mark.parametrize("sample_rate", [16000, 44100])
def test_streamed_windows_agree_with_tag_audio(run_worker, tagger, rng, sample_rate) -> None:
    """hop == window: the worker's windows are tools.tag's (Tagger.tag_audio), within 1e-3.

    At 44.1 kHz the reference is ``tag_audio(resample(y))``: the worker's soxr
    stream resampler gives the same samples as the one-shot resampler, so the
    tolerance is the same 1e-3.
    """
    harness = run_worker(hop_seconds=WINDOW * FRAME_S)
    y = music(rng, 10.0, sample_rate)
    harness.send_audio(y, stream="test:agree", sample_rate=sample_rate, block=sample_rate // 10)
    y16 = resample(y, orig_sr=sample_rate, target_sr=16000)
    starts, reference = tagger.tag_audio(y16)
    assert len(starts) == 3
    updates = harness.receive(count=len(starts), stream="test:agree")
    assert [u.start_s for u in updates] == pytest.approx(list(starts))
    np.testing.assert_allclose(
        np.stack([u.probabilities for u in updates]), reference, atol=1e-3, rtol=0
    )


def test_stop_and_close_end_the_worker(tagger) -> None:
    worker = Worker(worker_config(), tagger=tagger)
    worker.start()
    thread = worker.run_in_thread()
    worker.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    worker.close()
    worker.close()
    with pytest.raises(RuntimeError):
        worker.start()
