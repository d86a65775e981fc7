"""Sound-server sources by name: ``--device v.monitor`` and ``--list-devices`` against the
real PulseAudio server the test session starts (``pulse_server`` in conftest.py: a null
sink "v" whose monitor is ``v.monitor``).  No ``pactl`` or ``PULSE_SOURCE`` is given to
the streamer: it finds the source by name through FFmpeg's ``pulse`` input.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from helpers import ROOT, Collector, Processes, wait_until

from tagstream.errors import ExitStatus

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg (apt-get install ffmpeg)"
)
pytestmark = needs_ffmpeg


def streamer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_list_devices_names_the_sound_servers_sources(pulse_server: Any) -> None:
    done = streamer(pulse_server.env, "--list-devices")
    assert done.returncode == ExitStatus.OK, done.stderr
    lines = done.stdout.splitlines()
    assert "PulseAudio/PipeWire sources (pass --device NAME):" in lines
    monitor = [line for line in lines if f"{pulse_server.sink}.monitor" in line]
    assert monitor == [f"* {pulse_server.sink}.monitor  (Monitor of Null Output)"], lines


def test_the_sound_servers_sources_as_a_library(
    pulse_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamer.capture import list_sound_server_sources, open_device
    from streamer.network import NetworkSource

    for name, value in pulse_server.env.items():
        monkeypatch.setenv(name, value)
    [source] = list_sound_server_sources()
    assert (source.name, source.is_default) == (f"{pulse_server.sink}.monitor", True)
    opened = open_device(f"{pulse_server.sink}.monitor", block_seconds=0.1)
    try:
        assert isinstance(opened, NetworkSource) and opened.live
        assert opened.name == f"{pulse_server.sink}.monitor"
        assert opened.sample_rate == 16000
    finally:
        opened.close()


def test_an_unknown_server_source_is_exit_3_naming_the_sources(pulse_server: Any) -> None:
    done = streamer(pulse_server.env, "--device", "pulse:nosuch.monitor")
    assert done.returncode == ExitStatus.UNAVAILABLE, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "no PulseAudio/PipeWire source named 'nosuch.monitor'" in line
    assert f"sources: {pulse_server.sink}.monitor" in line and "--list-devices" in line


def test_an_alsa_name_still_goes_to_portaudio(pulse_server: Any) -> None:
    """``hw:N`` is never looked up on the sound server; a missing card says so."""
    done = streamer(pulse_server.env, "--device", "hw:97")
    assert done.returncode == ExitStatus.UNAVAILABLE, done.stderr
    assert "no input device matches 'hw:97'" in done.stderr


def test_a_sink_monitor_is_tagged_by_name(
    pulse_server: Any, run_worker: Any, processes: Processes, tmp_path: Path
) -> None:
    """Silence from the idle null sink, then a played tone: the worker hears both."""
    rate = pulse_server.sample_rate
    t = np.arange(8 * rate) / rate
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    harness = run_worker()
    collector = Collector(harness, "monitor")
    try:
        processes.start(
            "streamer", "streamer", "--device", f"{pulse_server.sink}.monitor",
            "--endpoint", harness.worker.input_endpoint, "--stream-id", "monitor",
            env=pulse_server.env,
        )  # fmt: skip

        def seen() -> str:
            levels = [round(u.level_dbfs or -999) for u in collector.updates()]
            return f"levels {levels}; streamer log: {processes.log('streamer')[-2000:]}"

        wait_until(lambda: any(u.content == "silence" for u in collector.updates()), seen)
        player = threading.Thread(target=pulse_server.play, args=(wav,), daemon=True)
        player.start()
        wait_until(
            lambda: any(-20.0 < (u.level_dbfs or -999.0) < 0.0 for u in collector.updates()),
            seen,
        )
        player.join(timeout=60)
    finally:
        collector.close()
    log = processes.log("streamer")
    assert "pulse:v.monitor" in log, log[-2000:]
