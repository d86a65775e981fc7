"""The streamer: files and a real sound server, over real ZeroMQ sockets."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import zmq
from helpers import StreamerSink

from protocol import AudioFrame, EndOfStream
from streamer import FileSource, Streamer
from streamer.cli import main
from streamer.core import StreamerStats
from tagstream.errors import ExitStatus, UnavailableError

REPO_ROOT = Path(__file__).resolve().parent.parent
RECEIVE_TIMEOUT_MS = 10_000


def portaudio_available() -> bool:
    try:
        import sounddevice  # noqa: F401
    except OSError:
        return False
    return True


needs_portaudio = pytest.mark.skipif(
    not portaudio_available(), reason="PortAudio not installed (apt-get install libportaudio2)"
)


@pytest.fixture
def sink() -> Iterator[StreamerSink]:
    """A ROUTER socket on a random local port that acks like the worker's input."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    receiver = StreamerSink(context)
    yield receiver
    receiver.close()
    context.term()


def receive_until_end(
    sink: StreamerSink, *, timeout_ms: int = RECEIVE_TIMEOUT_MS
) -> tuple[list[AudioFrame], EndOfStream]:
    """Every audio frame up to the end message; fails if a message takes longer than timeout."""
    frames: list[AudioFrame] = []
    while True:
        message = sink.receive(timeout_ms)
        if isinstance(message, EndOfStream):
            return frames, message
        frames.append(message)


def run_and_receive(
    streamer: Streamer, sink: StreamerSink
) -> tuple[StreamerStats, list[AudioFrame], EndOfStream]:
    """Run ``streamer`` in a thread while ``sink`` receives (and acks) until its end message."""
    result: list[StreamerStats] = []
    thread = threading.Thread(target=lambda: result.append(streamer.run()), daemon=True)
    thread.start()
    try:
        frames, end = receive_until_end(sink)
        thread.join(timeout=RECEIVE_TIMEOUT_MS / 1000)
        assert not thread.is_alive(), "the streamer did not finish after its end was acked"
    finally:
        streamer.stop()
    return result[0], frames, end


def write_noise(
    path: Path, rng: np.random.Generator, *, seconds: float, rate: int, channels: int, subtype: str
) -> np.ndarray:
    """Write noise to ``path``; return exactly what decoding it gives, shape (frames, channels)."""
    noise = rng.uniform(-0.9, 0.9, (round(seconds * rate), channels))
    soundfile.write(path, noise, rate, subtype=subtype)
    decoded, _ = soundfile.read(path, dtype="float32", always_2d=True)
    return decoded


def check_stream(
    frames: list[AudioFrame], end: EndOfStream, *, stream: str, rate: int, expected_mono: np.ndarray
) -> None:
    assert [frame.seq for frame in frames] == list(range(len(frames)))
    assert end.seq == len(frames)
    assert {frame.stream for frame in frames} == {stream}
    assert end.stream == stream
    for frame in frames:
        assert (frame.sample_rate, frame.channels, frame.sample_format) == (rate, 1, "f32")
    received = np.concatenate([frame.samples[:, 0] for frame in frames])
    np.testing.assert_allclose(received, expected_mono, rtol=0, atol=1e-7)
    capture_times = [frame.capture_time for frame in frames]
    assert capture_times == sorted(capture_times)


# ---------------------------------------------------------------------------
# File source
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "subtype"), [(1, "PCM_16"), (2, "FLOAT"), (3, "PCM_24")])
def test_file_source_sends_every_sample_in_order(
    sink: StreamerSink,
    rng: np.random.Generator,
    tmp_path: Path,
    channels: int,
    subtype: str,
) -> None:
    path = tmp_path / "noise.wav"
    decoded = write_noise(path, rng, seconds=1.23, rate=22050, channels=channels, subtype=subtype)
    expected = decoded.mean(axis=1, dtype=np.float32) if channels > 1 else decoded[:, 0]
    source = FileSource(path, block_seconds=0.1, realtime=False)
    streamer = Streamer(source, endpoint=sink.endpoint, stream_id="test:noise")
    stats, frames, end = run_and_receive(streamer, sink)
    check_stream(frames, end, stream="test:noise", rate=22050, expected_mono=expected)
    assert [frame.frames for frame in frames[:-1]] == [2205] * (len(frames) - 1)
    assert not any(frame.live for frame in frames)  # --fast: not live, never shed
    assert stats.sent + stats.queued == len(frames) + 1
    assert stats.acked == len(frames)
    assert stats.dropped_send == 0


def test_file_source_paces_in_real_time(
    sink: StreamerSink, rng: np.random.Generator, tmp_path: Path
) -> None:
    path = tmp_path / "one_second.flac"
    decoded = write_noise(path, rng, seconds=1.0, rate=16000, channels=1, subtype="PCM_16")
    streamer = Streamer(FileSource(path, block_seconds=0.1), endpoint=sink.endpoint, stream_id="rt")
    started = time.monotonic()
    _, frames, end = run_and_receive(streamer, sink)
    elapsed = time.monotonic() - started
    check_stream(frames, end, stream="rt", rate=16000, expected_mono=decoded[:, 0])
    assert elapsed >= 0.9 * 1.0, f"1 s of audio streamed in {elapsed:.2f} s: not paced"


def test_default_stream_id_is_host_and_file_stem(
    sink: StreamerSink, rng: np.random.Generator, tmp_path: Path
) -> None:
    path = tmp_path / "my song.wav"
    write_noise(path, rng, seconds=0.2, rate=8000, channels=1, subtype="PCM_16")
    streamer = Streamer(FileSource(path, realtime=False), endpoint=sink.endpoint)
    assert streamer.stream_id == f"{socket.gethostname()}:my song"
    _, frames, end = run_and_receive(streamer, sink)
    assert {frame.stream for frame in frames} == {end.stream} == {streamer.stream_id}


def test_fast_file_waits_for_a_slow_worker_instead_of_dropping(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    """send_hwm=1: the streamer must wait for the reader, never drop."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sink = StreamerSink(context, rcvhwm=1)
    path = tmp_path / "noise.wav"
    decoded = write_noise(path, rng, seconds=3.0, rate=8000, channels=1, subtype="PCM_16")
    source = FileSource(path, block_seconds=0.01, realtime=False)  # 300 messages
    streamer = Streamer(source, endpoint=sink.endpoint, stream_id="slow", send_hwm=1)
    thread = threading.Thread(target=streamer.run, daemon=True)
    try:
        thread.start()
        frames: list[AudioFrame] = []
        while True:
            message = sink.receive(RECEIVE_TIMEOUT_MS)
            if isinstance(message, EndOfStream):
                break
            frames.append(message)
            time.sleep(0.001)  # a slow reader
        thread.join(timeout=10)
        assert not thread.is_alive()
    finally:
        streamer.stop()
        sink.close()
        context.term()
    check_stream(frames, message, stream="slow", rate=8000, expected_mono=decoded[:, 0])
    assert streamer.stats().dropped_send == 0


def test_main_streams_a_file_fast(
    sink: StreamerSink,
    rng: np.random.Generator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "noise.ogg"
    decoded = write_noise(path, rng, seconds=0.5, rate=16000, channels=2, subtype="VORBIS")
    argv = ["--file", str(path), "--fast", "--endpoint", sink.endpoint, "--stream-id", "cli"]
    statuses: list[int] = []
    thread = threading.Thread(target=lambda: statuses.append(main(argv)), daemon=True)
    thread.start()
    frames, end = receive_until_end(sink)
    thread.join(timeout=RECEIVE_TIMEOUT_MS / 1000)
    assert statuses == [ExitStatus.OK]
    check_stream(
        frames, end, stream="cli", rate=16000, expected_mono=decoded.mean(axis=1, dtype=np.float32)
    )
    assert "error" not in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_a_file_stream_cleanly(
    sink: StreamerSink, rng: np.random.Generator, tmp_path: Path, signum: int
) -> None:
    endpoint = sink.endpoint
    path = tmp_path / "long.wav"
    write_noise(path, rng, seconds=60.0, rate=8000, channels=1, subtype="PCM_16")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamer",
            "--file",
            str(path),
            "--endpoint",
            endpoint,
            "--stream-id",
            "long",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.socket.poll(RECEIVE_TIMEOUT_MS), "streamer sent nothing"
        process.send_signal(signum)
        frames, end = receive_until_end(sink)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == ExitStatus.OK, stderr
    assert 0 < len(frames) < 600  # stopped long before the 60 s file's end
    assert end.seq == frames[-1].seq + 1
    assert "Traceback" not in stderr


# ---------------------------------------------------------------------------
# Errors at the boundary
# ---------------------------------------------------------------------------


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.wav"
    assert main(["--file", str(missing)]) == ExitStatus.UNAVAILABLE
    assert str(missing) in error_line(capsys)


def test_corrupt_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    assert main(["--file", str(corrupt)]) == ExitStatus.UNAVAILABLE
    assert "cannot decode" in error_line(capsys)


def test_file_without_audio_is_refused_like_tools_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file source decodes with model.audio, so it refuses what file tagging refuses."""
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros((0, 1), np.float32), 16000)
    assert main(["--file", str(empty), "--fast"]) == ExitStatus.UNAVAILABLE
    assert error_line(capsys) == f"error: {empty}: contains no audio"


def test_corrupt_file_with_traceback_flag_shows_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"not audio at all")
    assert main(["--file", str(corrupt), "--traceback"]) == ExitStatus.UNAVAILABLE
    assert "Traceback" in capsys.readouterr().err


def test_bad_config_is_the_config_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[streamer]\nblock_seconds = "fast"\n')
    assert main(["--config", str(config), "--file", "x.wav"]) == ExitStatus.USAGE
    assert "streamer.block_seconds" in error_line(capsys)


def test_bad_stream_id_is_a_usage_error(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.wav"
    write_noise(path, rng, seconds=0.1, rate=8000, channels=1, subtype="PCM_16")
    assert main(["--file", str(path), "--stream-id", "x" * 200]) == ExitStatus.USAGE
    assert "stream" in error_line(capsys)


def test_bad_endpoint_is_a_usage_error(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.wav"
    write_noise(path, rng, seconds=0.1, rate=8000, channels=1, subtype="PCM_16")
    assert main(["--file", str(path), "--endpoint", "nowhere"]) == ExitStatus.USAGE
    assert "nowhere" in error_line(capsys)


def test_metrics_port_in_use_is_an_endpoint_error(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.wav"
    write_noise(path, rng, seconds=0.1, rate=8000, channels=1, subtype="PCM_16")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = tmp_path / "metrics.toml"
        config.write_text(f"[metrics]\nstreamer_port = {taken.getsockname()[1]}\n")
        status = main(
            ["--config", str(config), "--file", str(path), "--endpoint", "tcp://127.0.0.1:9"]
        )
    assert status == ExitStatus.ENDPOINT
    assert "metrics.streamer_port" in error_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [["--device", "pulse", "--file", "a.wav"], ["--fast"], ["--sample-rate", "fast"]],
    ids=["device-and-file", "fast-without-file", "bad-number"],
)
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == ExitStatus.USAGE
    assert capsys.readouterr().err.strip()


def test_file_source_rejects_missing_file_directly(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError) as info:
        FileSource(tmp_path / "missing.flac")
    assert info.value.status == ExitStatus.UNAVAILABLE


@needs_portaudio
def test_missing_device_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--device", "hw:7"]) == ExitStatus.UNAVAILABLE
    assert error_line(capsys) == (
        "error: no input device matches 'hw:7'; list them with python -m streamer --list-devices"
    )


@needs_portaudio
def test_missing_named_device_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--device", "no such sound card 1234"]) == ExitStatus.UNAVAILABLE
    assert "no such sound card 1234" in error_line(capsys)


@needs_portaudio
def test_list_devices_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-devices"]) == ExitStatus.OK
    out = capsys.readouterr().out
    assert out.strip()


# ---------------------------------------------------------------------------
# Device names
# ---------------------------------------------------------------------------


def test_alsa_hw_names_match_portaudio_device_names() -> None:
    from streamer.capture import InputDevice, match_device

    devices = [
        InputDevice(0, "HDA Intel PCH: ALC892 Analog (hw:0,0)", "ALSA", 2, 44100.0),
        InputDevice(3, "USB Audio CODEC: Audio (hw:1,0)", "ALSA", 2, 48000.0),
        InputDevice(4, "USB Audio CODEC: Digital (hw:1,1)", "ALSA", 2, 48000.0),
        InputDevice(12, "hw:1,0 lookalike (hw:11,0)", "ALSA", 2, 48000.0),
        InputDevice(7, "pulse", "ALSA", 32, 44100.0),
    ]
    assert match_device("hw:1", devices) == 3
    assert match_device("hw:1,0", devices) == 3
    assert match_device("hw:1,1", devices) == 4
    assert match_device("hw:11", devices) == 12
    assert match_device("7", devices) == 7
    assert match_device("pulse", devices) is None  # left to sounddevice's name matching
    for missing in ("hw:2", "hw:1,5", "8"):
        with pytest.raises(UnavailableError) as info:
            match_device(missing, devices)
        assert info.value.status == ExitStatus.UNAVAILABLE
        assert f"'{missing}'" in str(info.value)


# ---------------------------------------------------------------------------
# Real capture through a PulseAudio server
# ---------------------------------------------------------------------------


def tone_sequence(rate: int) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """0.3 s silence, 0.8 s at 1 kHz, 0.8 s at 2.5 kHz, 0.3 s silence.

    Returns the signal and the tones as (start_sample, stop_sample, frequency_hz).
    """

    def tone(freq: float, seconds: float) -> np.ndarray:
        t = np.arange(round(seconds * rate)) / rate
        fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms fades: no clicks
        return 0.5 * fade * np.sin(2 * np.pi * freq * t)

    silence = np.zeros(round(0.3 * rate))
    parts = [silence, tone(1000.0, 0.8), tone(2500.0, 0.8), silence]
    bounds = np.cumsum([0] + [len(part) for part in parts])
    tones = [(int(bounds[1]), int(bounds[2]), 1000.0), (int(bounds[2]), int(bounds[3]), 2500.0)]
    return np.concatenate(parts).astype(np.float32), tones


def dominant_frequency(signal_: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal_ * np.hanning(len(signal_))))
    return float(np.fft.rfftfreq(len(signal_), 1 / rate)[np.argmax(spectrum)])


@needs_portaudio
def test_captures_what_pulseaudio_plays(
    pulse_server: Any, sink: StreamerSink, tmp_path: Path
) -> None:
    """Play a known tone sequence into PulseAudio; the streamer must deliver that signal."""
    sock, endpoint = sink.socket, sink.endpoint
    rate = pulse_server.sample_rate
    played, tones = tone_sequence(rate)
    wav = tmp_path / "tones.wav"
    soundfile.write(wav, played, rate, subtype="PCM_16")
    played = soundfile.read(wav, dtype="float32")[0]

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamer",
            "--device",
            "pulse",
            "--sample-rate",
            str(rate),
            "--endpoint",
            endpoint,
            "--stream-id",
            "pulse:test",
        ],
        cwd=REPO_ROOT,
        env=pulse_server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    frames: list[AudioFrame] = []

    def receive(count: int) -> None:
        for _ in range(count):
            if not sock.poll(RECEIVE_TIMEOUT_MS):
                process.kill()
                pytest.fail(f"streamer sent nothing for 10 s; stderr: {process.communicate()[1]}")
            message = sink.receive(0)
            assert isinstance(message, AudioFrame)
            frames.append(message)

    try:
        receive(3)  # capture is running
        player = threading.Thread(target=pulse_server.play, args=(wav,))
        player.start()
        while player.is_alive():
            receive(1)
        player.join()
        receive(10)  # 1 s more: the tail of the played signal
        process.send_signal(signal.SIGTERM)
        rest, end = receive_until_end(sink)
        frames.extend(rest)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == ExitStatus.OK, stderr
    assert end.stream == "pulse:test"
    assert all(frame.sample_rate == rate and frame.channels == 1 for frame in frames)
    seqs = [frame.seq for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "blocks lost or out of order"
    captured = np.concatenate([frame.samples[:, 0] for frame in frames]).astype(np.float64)

    # Where in the capture the played signal starts: the cross-correlation peak.
    n = len(captured) + len(played)
    xcorr = np.fft.irfft(np.fft.rfft(captured, n) * np.conj(np.fft.rfft(played, n)), n)
    lag = int(np.argmax(xcorr[: len(captured)]))
    assert lag + len(played) <= len(captured), "capture ended before the signal did"
    aligned = captured[lag : lag + len(played)]
    correlation = float(np.corrcoef(aligned, played)[0, 1])
    assert correlation > 0.9, f"captured audio does not match the played signal ({correlation=})"
    for start, stop, freq in tones:
        middle = aligned[start + rate // 10 : stop - rate // 10]
        assert abs(dominant_frequency(middle, rate) - freq) < 10.0
    assert np.sqrt(np.mean(aligned[tones[0][0] : tones[-1][1]] ** 2)) > 0.1  # not attenuated


@needs_portaudio
def test_capture_resumes_after_the_sound_server_restarts(
    pulse_server: Any, sink: StreamerSink
) -> None:
    """The device vanishes mid-capture: the streamer retries, resumes, and leaves a seq gap."""
    sock, endpoint = sink.socket, sink.endpoint
    process = subprocess.Popen(
        [sys.executable, "-m", "streamer", "--device", "pulse", "--endpoint", endpoint],
        cwd=REPO_ROOT,
        env=pulse_server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def next_frame(timeout_ms: int = RECEIVE_TIMEOUT_MS) -> AudioFrame:
        if not sock.poll(timeout_ms):
            process.kill()
            pytest.fail(f"streamer sent nothing; stderr: {process.communicate()[1]}")
        message = sink.receive(0)
        assert isinstance(message, AudioFrame)
        return message

    try:
        before = [next_frame() for _ in range(3)]
        pulse_server.stop()
        try:
            # Drain what was captured before the server died (bounded).
            while sock.poll(2000):
                before.append(next_frame())
        finally:
            pulse_server.start()
        after = [next_frame(30_000) for _ in range(3)]  # retries every 3 s
        process.send_signal(signal.SIGTERM)
        _, end = receive_until_end(sink)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == ExitStatus.OK, stderr
    assert "input device back" in stderr
    assert after[0].seq > before[-1].seq + 1, "the outage must show as a sequence gap"
    assert [frame.seq for frame in after] == list(range(after[0].seq, after[0].seq + 3))
    assert end.seq > after[-1].seq
