"""Scale-out: two worker processes behind streamers that pin each stream to one worker.

Real processes (``python -m inference`` twice, ``python -m streamer`` per
stream) on private ipc endpoints; the streamers read ``streamer.endpoints``
from a config file.  One subscriber per worker tells which worker published
what; a third, connected to both (``subscribe.endpoints``), must see every
stream.  Waits are bounded by generous deadlines; nothing is timed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from helpers import DEADLINE_S, ROOT, Processes, audio_messages

from protocol.subscriber import Subscriber
from streamer.routing import endpoint_for
from tools.demo_audio import write_demo_wav

UPDATES_PER_STREAM = 3  # 4 s at hop 0.5 s: windows at frames 0, 31, 62


def test_endpoint_for_is_stable_and_spreads_streams() -> None:
    endpoints = [f"tcp://10.0.0.{i}:5555" for i in range(1, 5)]
    picks = [endpoint_for(f"studio:{i}", endpoints) for i in range(400)]
    assert picks == [endpoint_for(f"studio:{i}", endpoints) for i in range(400)]
    counts = [picks.count(e) for e in endpoints]
    assert min(counts) > 60  # 100 each on average
    # a fifth worker takes streams only from the others: nobody else moves
    more = [endpoint_for(f"studio:{i}", [*endpoints, "tcp://10.0.0.5:5555"]) for i in range(400)]
    assert all(new in (old, "tcp://10.0.0.5:5555") for old, new in zip(picks, more, strict=True))
    with pytest.raises(ValueError, match="at least one"):
        endpoint_for("a", [])
    with pytest.raises(ValueError, match="twice"):
        endpoint_for("a", ["tcp://x:1", "tcp://x:1"])


def join_subscribers(
    context: zmq.Context[Any], inputs: list[str], own: list[Subscriber], both: Subscriber
) -> None:
    """A positive barrier: probe streams into each worker until every subscriber has seen
    one from each worker it listens to (PUB drops what it sends before a subscription)."""
    pushes = []
    for endpoint in inputs:
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(endpoint)
        pushes.append(push)
    probe = np.zeros(int(3.2 * 16000), np.float32)
    heard: set[tuple[str, int]] = set()  # (which subscriber, from which worker)
    wanted = {("own", i) for i in range(len(inputs))} | {("both", i) for i in range(len(inputs))}
    for attempt in range(50):
        for i, push in enumerate(pushes):
            for message in audio_messages(probe, f"probe{i}:{attempt}", block=16000):
                push.send_multipart(message)
        deadline = time.monotonic() + 2.0
        while heard < wanted and time.monotonic() < deadline:
            for name, i, subscriber in [
                *(("own", i, s) for i, s in enumerate(own)),
                ("both", -1, both),
            ]:
                update = subscriber.receive(timeout_s=0.05)
                if update is not None and update.stream.startswith("probe"):
                    heard.add((name, int(update.stream[5]) if name == "both" else i))
        if heard >= wanted:
            return
    pytest.fail(f"subscribers never joined: heard {sorted(heard)}")


def test_two_workers_share_the_streams(
    processes: Processes, tmp_path: Path, context: zmq.Context[Any]
) -> None:
    inputs = [f"ipc://{tmp_path}/in{i}" for i in range(2)]
    publishes = [f"ipc://{tmp_path}/out{i}" for i in range(2)]
    # stream ids chosen so that each worker gets two
    streams: dict[str, str] = {}
    for i in range(100):
        stream = f"scale:{i}"
        target = endpoint_for(stream, inputs)
        if list(streams.values()).count(target) < 2:
            streams[stream] = target
        if len(streams) == 4:
            break
    config = tmp_path / "streamers.toml"
    config.write_text("[streamer]\nendpoints = [" + ", ".join(f'"{e}"' for e in inputs) + "]\n")
    wav = write_demo_wav(str(tmp_path / "demo.wav"), seconds=4.0)

    with (
        Subscriber(publishes[0]) as first,
        Subscriber(publishes[1]) as second,
        Subscriber(publishes) as both,
    ):
        workers = [processes.start_worker(f"worker{i}", inputs[i], publishes[i]) for i in range(2)]
        for i, worker in enumerate(workers):  # both load their model at the same time
            ready = processes.wait_ready(f"worker{i}", worker)
            assert ready["input_endpoint"] == inputs[i], ready
        join_subscribers(context, inputs, [first, second], both)
        args = ("streamer", "--config", str(config), "--file", wav, "--fast", "--stream-id")
        streamers = [processes.start(f"streamer-{s}", *args, s) for s in streams]
        for streamer in streamers:
            assert streamer.wait(timeout=DEADLINE_S) == 0
        expected = UPDATES_PER_STREAM * len(streams)
        seen: dict[int, dict[str, int]] = {0: defaultdict(int), 1: defaultdict(int)}
        merged: dict[str, int] = defaultdict(int)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and (
            sum(merged.values()) < expected
            or sum(sum(s.values()) for s in seen.values()) < expected
        ):
            for index, subscriber in ((0, first), (1, second)):
                update = subscriber.receive(timeout_s=0.05)
                if update is not None and not update.stream.startswith("probe"):
                    seen[index][update.stream] += 1
            update = both.receive(timeout_s=0.05)
            if update is not None and not update.stream.startswith("probe"):
                merged[update.stream] += 1
    for i, worker in enumerate(workers):
        worker.terminate()
        assert worker.wait(timeout=DEADLINE_S) == 0, processes.log(f"worker{i}")

    assert dict(merged) == {stream: UPDATES_PER_STREAM for stream in streams}
    for stream, target in streams.items():
        index = inputs.index(target)
        assert seen[index][stream] == UPDATES_PER_STREAM  # all from its own worker
        assert stream not in seen[1 - index]  # none from the other
        log = processes.log(f"streamer-{stream}")
        assert f"endpoint={target}" in log


def test_streamer_refuses_a_repeated_endpoint(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[streamer]\nendpoints = ["ipc:///tmp/x", "ipc:///tmp/x"]\n')
    wav = write_demo_wav(str(tmp_path / "demo.wav"), seconds=1.0)
    result = subprocess.run(
        [sys.executable, "-m", "streamer", "--config", str(config), "--file", wav, "--fast"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: streamer.endpoints:")
