"""Shared pytest fixtures: every fixture that more than one test module uses lives here.

``rng`` (one seed), ``tagger`` (MSD_musicnn, loaded once per session), ``context`` (ZeroMQ),
``run_worker`` (in-process workers with a joined harness), ``processes`` (``python -m``
commands, killed after the test), ``pulse_server`` (PulseAudio) and ``browser`` (Chromium).
Builders and waits that are not fixtures live in ``tests/helpers.py``.
"""

from __future__ import annotations

# ==== streamer: private PulseAudio server (pulse_server) =====================================
# A session-wide PulseAudio with one null sink "v" whose monitor is the default source, so that
# audio played with ``pulse_server.play(path)`` can be captured through PortAudio's ALSA
# "pulse"/"default" devices (libasound2-plugins).  Needs the Debian packages pulseaudio,
# pulseaudio-utils, libasound2-plugins and libportaudio2; skipped when pulseaudio is missing.
import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from helpers import Harness, Processes, new_rng, worker_config

from inference import Worker

PULSE_SINK = "v"
PULSE_SINK_RATE = 16000


@dataclasses.dataclass(frozen=True)
class PulseServer:
    """A private PulseAudio server living in ``root``.

    Attributes
    ----------
    root : Path
        Folder holding the server's runtime, state and config folders.
    env : dict
        A full environment (``os.environ`` plus the PULSE_/XDG_ variables) for
        subprocesses that should talk to this server, e.g. ``python -m streamer``.
    sink : str
        The null sink to play into; its monitor ``<sink>.monitor`` is the default source.
    sample_rate : int
        The sink's rate in Hz (mono).
    """

    root: Path
    env: dict[str, str]
    sink: str = PULSE_SINK
    sample_rate: int = PULSE_SINK_RATE

    def pactl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10
        )

    def play(self, path: str | os.PathLike[str], *, timeout_s: float = 60.0) -> None:
        """Play an audio file into the sink and wait until it has been played."""
        subprocess.run(
            ["paplay", f"--device={self.sink}", os.fspath(path)],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )

    def start(self) -> None:
        """Start the daemon and wait until it answers; fails the test if it does not."""
        started = subprocess.run(
            [
                "pulseaudio",
                "--daemonize=yes",
                "--system=false",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "--disable-shm=yes",
                "-n",
                "--load=module-native-protocol-unix auth-anonymous=1",
                # norewinds=1: without it the first ~2 s of a new capture were lost.
                f"--load=module-null-sink sink_name={self.sink} rate={self.sample_rate} "
                "channels=1 norewinds=1",
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if started.returncode != 0:
            pytest.fail(f"pulseaudio did not start: {started.stderr.strip()}")
        for _ in range(100):  # up to ~10 s
            if self.pactl("info").returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("pulseaudio started but pactl info never answered")
        default = self.pactl("set-default-source", f"{self.sink}.monitor")
        if default.returncode != 0:
            pytest.fail(f"pactl set-default-source failed: {default.stderr.strip()}")

    def stop(self) -> None:
        """Kill the daemon (``pulseaudio --kill``, SIGKILL if it lingers) and wait for it."""
        pid = _pulse_pid(self.env)
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True, timeout=10)
        for _ in range(50):
            if subprocess.run(["pulseaudio", "--check"], env=self.env).returncode != 0:
                return
            time.sleep(0.1)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


def _pulse_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name, sub in (
        ("PULSE_RUNTIME_PATH", "runtime"),
        ("PULSE_STATE_PATH", "state"),
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_RUNTIME_DIR", "xdg"),
    ):
        folder = root / sub
        folder.mkdir(mode=0o700)
        env[name] = str(folder)
    env["PULSE_COOKIE"] = str(root / "cookie")
    env.pop("PULSE_SERVER", None)
    return env


def _pulse_pid(env: dict[str, str]) -> int | None:
    try:
        return int((Path(env["PULSE_RUNTIME_PATH"]) / "pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@pytest.fixture(scope="session")
def pulse_server() -> Iterator[PulseServer]:
    """A private PulseAudio server with a null sink; killed at the end of the session."""
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if "pulseaudio" in missing:
        pytest.skip("pulseaudio not installed; .ci/run installs it")
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pulseaudio-utils); .ci/run installs it")
    # A short path: the server's unix socket path must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="tagstream-pulse-"))
    server = PulseServer(root=root, env=_pulse_env(root))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# ==== end streamer block ======================================================================


# ==== web: headless Chromium driven by Playwright (browser) ==================================
# Debian's chromium (``apt-get install chromium libatomic1``; scripts/install.sh --dev does it)
# driven by the playwright Python package; Playwright's own browser downloads are never used.
# No browser is left behind, even when the test process is killed: Playwright's driver is a
# child process on pipes, and when those close (the test process died, even by SIGKILL) it
# kills Chromium; Chromium also exits when its debugging pipe to the driver closes (seen with
# SIGKILL on the test process alone and on its whole process group).
CHROMIUM_PATH = os.environ.get("TAGSTREAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """A headless Chromium (``playwright.sync_api.Browser``) for the session; closed at the end."""
    if not Path(CHROMIUM_PATH).exists():
        pytest.skip(
            f"{CHROMIUM_PATH} not found; install Debian's chromium and libatomic1 "
            "(scripts/install.sh --dev; CI does) or set TAGSTREAM_CHROMIUM"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright not installed (pip install -r requirements-dev.txt)",
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, args=list(CHROMIUM_ARGS), timeout=60_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


# ==== end web block ===========================================================================


# ==== shared: seeded rng, the session's tagger, ZeroMQ, in-process workers, processes =========
# Builders and waits live in tests/helpers.py; the fixtures that own a resource live here.


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator seeded with ``helpers.SEED``: the same numbers in every test."""
    return new_rng()


@pytest.fixture(scope="session")
def tagger() -> object:
    """MSD_musicnn (``model.load_tagger``), loaded and warmed up once per session."""
    from model import load_tagger

    tagger = load_tagger("MSD_musicnn")
    tagger.warm_up()
    return tagger


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A ZeroMQ context, destroyed (``linger=0``) after the test."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def run_worker(tagger: object) -> Iterator[object]:
    """``run_worker(**inference) -> Harness``: an in-process worker on the session's tagger.

    Each worker runs its loop in a thread on free tcp ports; its harness's SUB socket has
    joined when the call returns.  Every worker and harness is closed after the test.
    """
    started: list[tuple[Worker, Harness]] = []

    def start(**inference: object) -> Harness:
        worker = Worker(worker_config(**inference), tagger=tagger)
        worker.start()
        worker.run_in_thread()
        harness = Harness(worker)
        started.append((worker, harness))
        return harness

    yield start
    for worker, harness in started:
        harness.close()
        worker.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start ``python -m`` commands with logs in ``tmp_path``; whatever is left is killed."""
    procs = Processes(tmp_path)
    yield procs
    procs.cleanup()


# ==== end shared block ========================================================================
