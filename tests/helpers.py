"""Builders and waits shared by the test modules (fixtures live in ``conftest.py``).

Imported as ``helpers``: pytest's default ``prepend`` import mode puts ``tests/`` on
``sys.path`` for the test modules and ``conftest.py`` that live there.  Nothing here
imports TensorFlow; the model is loaded once per session by the ``tagger`` fixture.

Every wait is bounded by a generous deadline that only turns a hang into a failure;
nothing here asserts on how long anything took.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from config import Config, load_config
from inference import StreamSettings, Worker
from inference.ready import NotReadyError, wait_ready
from model import MUSICNN_FEATURES
from model.tagger import window_starts
from protocol import (
    Ack,
    AudioFrame,
    EndOfStream,
    Event,
    TagUpdate,
    decode_input,
    decode_published,
    encode_ack,
    encode_audio,
    encode_end,
)
from protocol.subscriber import Subscriber

ROOT = Path(__file__).resolve().parent.parent
#: Bound on any single wait: model loading on a busy 2-core machine included.
DEADLINE_S = 120.0
#: Bound on a worker process getting ready: importing TensorFlow and loading the model, two
#: workers at once on a 2-core machine that is busy with other work too.
READY_DEADLINE_S = 300.0
#: The one seed of the tests' random generators (the ``rng`` fixture and :func:`new_rng`).
SEED = 20240611
SPEC = MUSICNN_FEATURES
#: MSD_musicnn's window in mel frames (3 s) and one mel frame in seconds.
WINDOW = 187
FRAME_S = SPEC.frame_seconds


def new_rng() -> np.random.Generator:
    """A generator seeded with :data:`SEED`; for module-scoped fixtures (tests use ``rng``)."""
    return np.random.default_rng(SEED)


# -- waits ------------------------------------------------------------------------------------


def wait_until(
    condition: Callable[[], object],
    what: str | Callable[[], str],
    *,
    timeout_s: float = DEADLINE_S,
    interval_s: float = 0.05,
    process: subprocess.Popen[bytes] | None = None,
) -> Any:
    """Poll ``condition`` until it is truthy and return that value.

    Fails the test naming ``what`` (or what ``what()`` describes, e.g. what was seen) past
    ``timeout_s`` (never an assertion on time), or at once when ``process`` has exited.
    """
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process exited ({process.returncode}) waiting for {_say(what)}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout_s:g} s waiting for {_say(what)}")
        time.sleep(interval_s)
    return result


def _say(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


# -- audio and wire messages -------------------------------------------------------------------


def music(rng: np.random.Generator, seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """A few seconds of tones, clicks and noise: enough for the model to say something."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    y = 0.3 * np.sin(2 * np.pi * 110 * t) + 0.2 * np.sin(2 * np.pi * 440 * t * (1 + 0.01 * t))
    y += 0.4 * (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.standard_normal(len(t))
    y += 0.05 * rng.standard_normal(len(t))
    return (0.5 * y).astype(np.float32)


def frames_of(
    y: np.ndarray,
    *,
    stream: str = "test:a",
    sample_rate: int = 16000,
    block: int = 1600,
    start_time: float = 1_000.0,
    first_seq: int = 0,
) -> list[AudioFrame]:
    """Cut mono audio into AudioFrames with consistent seq and capture times."""
    return [
        AudioFrame(
            stream=stream,
            seq=first_seq + i,
            capture_time=start_time + offset / sample_rate,
            sample_rate=sample_rate,
            channels=1,
            sample_format="f32",
            samples=np.ascontiguousarray(y[offset : offset + block, None]),
        )
        for i, offset in enumerate(range(0, len(y), block))
    ]


def audio_messages(y: np.ndarray, stream: str, *, block: int = 8000) -> list[list[Any]]:
    """The wire messages of one whole stream of mono 16 kHz audio, its end message last."""
    frames = frames_of(y, stream=stream, block=block)
    return [
        *(encode_audio(frame) for frame in frames),
        encode_end(EndOfStream(stream=stream, seq=len(frames))),
    ]


def wire_header(**fields: object) -> bytes:
    """An audio message's msgpack header: a valid 4-sample f32 block, changed by ``fields``."""
    base: dict[str, object] = {
        "version": 1,
        "kind": "audio",
        "stream": "evil:1",
        "seq": 0,
        "capture_time": 1.0,
        "sample_rate": 16000,
        "channels": 1,
        "sample_format": "f32",
        "frames": 4,
    }
    base.update(fields)
    return bytes(msgpack.packb(base))


def stream_settings(hop_frames: int = 31, **changes: float) -> StreamSettings:
    """The worker's per-stream settings for MSD_musicnn's window and ``hop_frames``."""
    return StreamSettings(spec=SPEC, window_frames=WINDOW, hop_frames=hop_frames, **changes)


def expected_starts(n_samples: int, hop_frames: int) -> list[int]:
    """The first mel frame of every window the worker tags in ``n_samples`` at 16 kHz."""
    return list(window_starts(1 + n_samples // SPEC.hop_length, WINDOW, hop_frames))


def assert_same_update(got: TagUpdate, want: TagUpdate) -> None:
    """Every field equal, the probability arrays compared exactly."""
    for field in (
        "stream", "seq", "start_s", "end_s", "model", "tags",
        "capture_time", "received_time", "published_time", "gaps", "dropped",
        "shed", "behind_s",
    ):  # fmt: skip
        assert getattr(got, field) == getattr(want, field), field
    np.testing.assert_array_equal(got.probabilities, want.probabilities)
    np.testing.assert_array_equal(got.smoothed, want.smoothed)


# -- an in-process worker -----------------------------------------------------------------------


def worker_config(**inference: object) -> Config:
    """Settings for an in-process worker on free tcp ports, with ``inference.*`` overrides.

    Shedding stale work is off (``max_window_age_seconds = 0``) unless a test asks for it:
    the tests send audio faster than real time, and on a loaded machine whether a window
    waits 10 s must not decide what they see (``tests/test_overload.py`` tests shedding).
    """
    overrides: dict[str, object] = {
        "inference.input_endpoint": "tcp://127.0.0.1:*",
        "inference.publish_endpoint": "tcp://127.0.0.1:*",
        "inference.max_window_age_seconds": 0,
    }
    overrides.update({f"inference.{k}": v for k, v in inference.items()})
    return load_config(overrides=overrides)


class Harness:
    """A running worker, a PUSH socket feeding it and a SUB socket reading it.

    The SUB socket has joined when the constructor returns: it probes with short silent
    streams until one of their updates comes back (PUB drops what it publishes before a
    subscription arrives).
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.context: zmq.Context[Any] = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(worker.input_endpoint)
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(worker.publish_endpoint)
        self.join_subscription()

    def join_subscription(self) -> None:
        """Send probe streams until one of their updates comes back, then drain the probes'.

        One probe at a time: the next is sent only once the worker has published an update
        of the last, so a slow worker (a loaded machine) never builds a backlog of probes
        that the test's own updates would then wait behind.
        """
        probe = np.zeros(int(3.2 * 16000), dtype=np.float32)
        for attempt in range(50):
            published = self.worker.stats().windows
            self.send_audio(probe, stream=f"probe:{attempt}", block=16000 * 2)
            self.worker.wait_for(lambda s, n=published: s.windows > n, timeout_s=DEADLINE_S)
            if self.sub.poll(200):
                self.receive(count=None)  # drain the probe's updates
                return
        raise AssertionError("the SUB socket never received a probe update")

    def send(self, message: list[Any]) -> None:
        self.push.send_multipart(message, copy=False)

    def send_audio(self, y: np.ndarray, *, end: bool = True, **kwargs: Any) -> int:
        """Send ``y`` cut by :func:`frames_of` (``kwargs``) and its end; return the block count."""
        frames = frames_of(y, **kwargs)
        for frame in frames:
            self.send(encode_audio(frame))
        if end:
            self.send(encode_end(EndOfStream(stream=frames[0].stream, seq=len(frames))))
        return len(frames)

    def receive(self, *, count: int | None, stream: str | None = None) -> list[TagUpdate]:
        """``count`` updates (of ``stream``), or with ``count=None`` whatever comes in 0.5 s.

        The worker's events (dead air, talk: published on the same socket, perhaps after a
        stream's last update) are skipped.
        """
        updates: list[TagUpdate] = []
        deadline = time.monotonic() + (0.5 if count is None else DEADLINE_S)
        while (count is None or len(updates) < count) and time.monotonic() < deadline:
            if self.sub.poll(100):
                message = decode_published(self.sub.recv_multipart())
                if isinstance(message, TagUpdate) and (stream is None or message.stream == stream):
                    updates.append(message)
        return updates

    def barrier(self, rng: np.random.Generator, *, stream: str = "barrier") -> TagUpdate:
        """Send one known good stream (3.2 s, one window) and wait for its update.

        Messages sent before it on this PUSH socket have been taken in by the worker when
        it returns: a positive barrier before asserting counters.
        """
        self.send_audio(music(rng, 3.2), stream=stream)
        [update] = self.receive(count=1, stream=stream)
        return update

    def close(self) -> None:
        self.push.close(linger=0)
        self.sub.close(linger=0)
        self.context.term()


class StreamerSink:
    """A ROUTER socket standing in for the worker's input: decodes what a streamer sends.

    With ``ack=True`` it answers like a worker that has tagged each block as soon as it
    arrives (``docs/PROTOCOL.md``, "Ack"), so ``--fast`` flow control and the end-of-stream
    handshake complete; with ``ack=False`` it answers nothing, as an older worker.
    """

    def __init__(self, context: zmq.Context[Any], *, ack: bool = True, rcvhwm: int = 1000):
        self.ack = ack
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"

    def receive(self, timeout_ms: int = 10_000) -> Any:
        """The next input message (``protocol.decode_input``); fails past ``timeout_ms``."""
        assert self.socket.poll(timeout_ms), f"no message within {timeout_ms} ms"
        routing_id, *frames = self.socket.recv_multipart(copy=False)
        message = decode_input(frames)
        if self.ack and isinstance(message, AudioFrame):
            ack = Ack(message.stream, message.seq + 1)
            self.socket.send_multipart([routing_id, *encode_ack(ack)])
        elif self.ack and isinstance(message, EndOfStream):
            ack = Ack(message.stream, message.seq, end=True)
            self.socket.send_multipart([routing_id, *encode_ack(ack)])
        return message

    def close(self) -> None:
        self.socket.close(linger=0)


# -- processes ----------------------------------------------------------------------------------


def read_to_end(source: Any) -> tuple[list[Any], list[Any]]:
    """All of a network source's blocks and events, read in this thread; the source is closed."""
    events: list[Any] = []
    source.on_event = events.append
    try:
        blocks = list(source.blocks(threading.Event()))
    finally:
        source.close()
    return blocks, events


class SourceReader:
    """Iterates a network source's blocks in a thread, keeping blocks and events for a test."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.blocks: list[Any] = []
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()
        source.on_event = self.events.append
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for block in self.source.blocks(self.stop):
                self.blocks.append(block)
        except BaseException as exc:
            self.error = exc

    def done(self) -> bool:
        """Whether ``blocks()`` has returned (the source ended, failed or was stopped)."""
        return not self._thread.is_alive()

    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]

    def seen(self) -> str:
        """What was read so far, for a failed wait's message."""
        titles = [(round(e.at_s, 2), e.title) for e in self.events if e.kind == "now_playing"]
        return (
            f"{len(self.blocks)} blocks, events {self.kinds()}, titles {titles}, "
            f"status {self.source.status_fields()}, error {self.error!r}"
        )

    def close(self) -> None:
        """Stop, and fail the test if ``blocks()`` did not return or raised."""
        self.stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "blocks() did not return within 10 s of stop"
        self.source.close()
        if self.error is not None:
            raise self.error


def free_port() -> int:
    """A tcp port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


class Processes:
    """Start ``python -m`` commands with logs in ``folder``; :meth:`cleanup` kills what is left."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        stdout: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Run ``python -m *args`` from the checkout; stderr (and stdout) go to ``name.log``."""
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            env=env,
        )
        log.close()
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def start_worker(
        self, name: str, input_endpoint: str, publish_endpoint: str, *args: str
    ) -> subprocess.Popen[bytes]:
        """Start ``python -m inference`` writing its ready file; :meth:`wait_ready` waits."""
        return self.start(
            name, "inference", "--input", input_endpoint, "--publish", publish_endpoint,
            "--ready-file", str(self.ready_file(name)), *args,
        )  # fmt: skip

    def wait_ready(self, name: str, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        """The worker's ready file once written (never a log line); fails with its log."""
        try:
            return wait_ready(self.ready_file(name), process=process, timeout_s=READY_DEADLINE_S)
        except NotReadyError as exc:
            pytest.fail(f"{exc}: {self.log(name)[-2000:]}")

    def worker(
        self, name: str, input_endpoint: str, publish_endpoint: str, *args: str
    ) -> subprocess.Popen[bytes]:
        """Start ``python -m inference`` and wait for its ready file."""
        process = self.start_worker(name, input_endpoint, publish_endpoint, *args)
        self.wait_ready(name, process)
        return process

    def ready_file(self, name: str) -> Path:
        """Where the worker started as ``name`` writes its ready file."""
        return self.folder / f"{name}.ready"

    def cleanup(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait()


def children_of(pid: int) -> dict[int, str]:
    """``{pid: command line}`` of every descendant of ``pid`` (from /proc/*/task/*/children)."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            for kid in kids - set(found):
                try:
                    cmdline = Path(f"/proc/{kid}/cmdline").read_bytes()
                except OSError:
                    continue
                found[kid] = cmdline.replace(b"\0", b" ").decode(errors="replace")
                todo.append(kid)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---------------------------------------------------------------------------
# Published messages: updates and events
# ---------------------------------------------------------------------------


def events(messages: list[Any], kind: str) -> list[Event]:
    return [m for m in messages if isinstance(m, Event) and m.event == kind]


def updates(messages: list[Any]) -> list[TagUpdate]:
    return [m for m in messages if isinstance(m, TagUpdate)]


class Collector:
    """A :class:`protocol.subscriber.Subscriber` with ``events=True`` read by a thread."""

    def __init__(self, harness: Harness, stream: str) -> None:
        self.messages: list[TagUpdate | Event] = []
        self.stream = stream
        self.harness = harness
        self.subscriber = Subscriber(harness.worker.publish_endpoint, events=True)
        self._stop = threading.Event()
        # Join: probe streams until the subscription has reached the worker.
        for attempt in range(50):
            harness.send_audio(np.zeros(int(3.2 * 16000), np.float32), stream=f"join:{attempt}")
            if self.subscriber.receive_message(timeout_s=0.3) is not None:
                break
        else:
            raise AssertionError("the subscriber never joined")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.subscriber.receive_message(timeout_s=0.2)
            if message is not None and message.stream == self.stream:
                self.messages.append(message)

    def events(self, kind: str) -> list[Event]:
        return events(list(self.messages), kind)

    def updates(self) -> list[TagUpdate]:
        return updates(list(self.messages))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.subscriber.close()


#: Prepended to a child script (``python -c``): TensorFlow, Keras, tf2onnx and onnx fail to
#: import, so a script that still runs proves its path never needs them.
WITHOUT_TENSORFLOW = """import importlib.abc
import sys

class Unimportable(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "keras", "tf2onnx", "onnx"):
            raise ImportError(f"{name} is made unimportable by the test")
        return None

sys.meta_path.insert(0, Unimportable())
"""
