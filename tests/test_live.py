"""``python -m tools.live`` as a user runs it: a network stream, a sound server that restarts.

The real command runs as a subprocess with its own worker and streamer (real
model, real ffmpeg, a real PulseAudio server); nothing is mocked.  Waits are
bounded by generous deadlines that only turn a hang into a failure; the time
from a signal to the exit is printed (``-s`` shows it), never asserted.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import DEADLINE_S, READY_DEADLINE_S, Processes, alive, children_of, wait_until

from tools.demo_audio import write_demo_wav

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="ffmpeg not installed (apt-get install ffmpeg)"
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a reader that hangs up early (ffmpeg probing the stream) is no error here


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on loopback: ``(folder, base URL)``."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=DEADLINE_S)


def streamer_log(live: subprocess.Popen[bytes]) -> str:
    """The log of tools.live's own streamer (in its private folder, found from its command)."""
    for command in children_of(live.pid).values():
        if " streamer " in command:
            match = re.search(r"--endpoint ipc://(\S+)/input", command)
            if match:
                path = Path(match.group(1)) / "streamer.log"
                return path.read_text(errors="replace") if path.exists() else ""
    return ""


@needs_ffmpeg
def test_live_tags_a_network_stream_given_by_url(
    processes: Processes, tmp_path: Path, http_folder: tuple[Path, str]
) -> None:
    """An mp3 made by ffmpeg, served over HTTP: tagged, then the run ends on its own."""
    folder, base = http_folder
    wav = write_demo_wav(str(tmp_path / "tune.wav"), seconds=8.0)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", wav, "-c:a", "libmp3lame",
         "-b:a", "128k", str(folder / "tune.mp3")],
        check=True, timeout=DEADLINE_S,
    )  # fmt: skip
    live = processes.start(
        "live", "tools.live", "--url", f"{base}/tune.mp3", stdout=subprocess.PIPE
    )
    out, _ = live.communicate(timeout=READY_DEADLINE_S + DEADLINE_S)
    log = processes.log("live")
    assert live.returncode == 0, log
    assert "error:" not in log
    text = out.decode()
    assert "tagstream live - live" in text
    # the last frame: a tag table and the dominant tag with its wall-clock time
    assert re.search(r"dominant: \d\d:\d\d:\d\d \S", text), text


def test_live_stops_on_sigterm_after_its_sound_device_went_away_and_came_back(
    processes: Processes, pulse_server: Any
) -> None:
    """The sound server dies and restarts under tools.live (capturing from it); then
    SIGTERM stops tools.live and its children, with status 0 and no error line."""
    try:
        import sounddevice  # noqa: F401
    except OSError:
        pytest.skip("PortAudio not installed (apt-get install libportaudio2)")
    live = processes.start(
        "live", "tools.live", "--device", "pulse", env=pulse_server.env, stdout=subprocess.PIPE
    )
    wait_until(lambda: "capturing device" in streamer_log(live), "tools.live's streamer capturing",
               process=live, timeout_s=READY_DEADLINE_S)  # fmt: skip
    kids = children_of(live.pid)
    pulse_server.stop()
    try:
        wait_until(
            lambda: "stopped delivering audio" in streamer_log(live),
            lambda: f"the streamer noticing the device is gone: {streamer_log(live)[-1500:]}",
            process=live,
        )
    finally:
        pulse_server.start()
    wait_until(
        lambda: "input device back" in streamer_log(live),
        lambda: f"the streamer capturing again: {streamer_log(live)[-1500:]}",
        process=live,
    )
    started = time.monotonic()
    live.send_signal(signal.SIGTERM)
    out, _ = live.communicate(timeout=DEADLINE_S)
    print(f"tools.live exited {time.monotonic() - started:.2f} s after SIGTERM")
    log = processes.log("live")
    assert live.returncode == 0, log
    assert "error:" not in log and "error:" not in out.decode()
    wait_until(lambda: not [pid for pid in kids if alive(pid)], "tools.live's children gone")
