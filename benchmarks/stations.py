"""How many 128 kbit/s mp3 stations one streamer process follows on one core.

    .venv/bin/python -m benchmarks.stations [--counts 1,8,32,64] [--seconds 20] [--core 0]

A child process (on the other cores) serves N live "stations" the way Icecast serves a
mount: seeded synthetic music (:func:`benchmarks.common.synthetic_music`) encoded by
ffmpeg as constant 128 kbit/s mp3, sent at real time in 0.1 s packets with ICY metadata
(a title) every 16000 bytes, without a length.  For each N, one real ``python -m
streamer --stations`` process follows the N stations, pinned to one core
(``os.sched_setaffinity``; its ffmpeg decoders inherit the pin), and sends to a PULL
socket in this process, which counts every station's audio blocks and sequence gaps.

After ``--warmup`` seconds, for ``--seconds``: the CPU time of the streamer and its
ffmpeg children (``/proc/PID/stat``), as a share of the one core; the audio received
against real time (a station that is followed delivers 100 %); and the sequence gaps
(reconnects).  The ratio column is the CPU per station against the one-station run of
the same invocation (the baseline).  The last line says how many stations the core
follows: the largest N that kept up, and the per-station cost extrapolated to 90 % of
the core.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import zmq

import protocol
from benchmarks.common import (
    MP3_BYTES_PER_SECOND,
    ROOT,
    answer_like_icecast,
    cpu_description,
    make_mp3,
)

PACKET_S = 0.1
PACKET_BYTES = int(MP3_BYTES_PER_SECOND * PACKET_S)
BLOCK_SECONDS = 0.1
#: A station is followed when this share of real-time audio arrived and no gap.
KEPT_UP = 0.98
#: Longest wait for every station's first second of audio.
_START_LIMIT_S = 180.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def serve(listener: socket.socket, body: bytes, cores: set[int]) -> None:
    """Child process: every connection is a live station, paced in 0.1 s packets."""
    os.sched_setaffinity(0, cores)
    while True:
        connection, _ = listener.accept()
        threading.Thread(
            target=answer_like_icecast,
            args=(connection, body),
            kwargs={"realtime": True, "packet_bytes": PACKET_BYTES},
            daemon=True,
        ).start()


class Receiver:
    """The worker's side of the input wire, counting each station's blocks and gaps.

    A ROUTER that acknowledges every block as soon as it arrives, as a worker that keeps
    up does (``docs/PROTOCOL.md``, "Ack"), where the protocol has acknowledgements; a
    PULL socket where it does not.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.acks = hasattr(protocol, "encode_ack")
        self.socket = context.socket(zmq.ROUTER if self.acks else zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.blocks: collections.Counter[str] = collections.Counter()
        self.gaps: collections.Counter[str] = collections.Counter()
        self._next: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.socket.poll(100):
                continue
            frames = self.socket.recv_multipart(copy=False)
            routing_id, frames = (frames[0], frames[1:]) if self.acks else (None, frames)
            message = protocol.decode_input(frames)
            if self.acks and isinstance(message, protocol.AudioFrame | protocol.EndOfStream):
                end = isinstance(message, protocol.EndOfStream)
                ack = protocol.Ack(message.stream, message.seq + (not end), end=end)
                assert routing_id is not None
                self.socket.send_multipart([routing_id, *protocol.encode_ack(ack)])
            if not isinstance(message, protocol.AudioFrame):
                continue
            expected = self._next.get(message.stream)
            if expected is not None and message.seq != expected:
                self.gaps[message.stream] += 1
            self._next[message.stream] = message.seq + 1
            self.blocks[message.stream] += 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        return dict(self.blocks), dict(self.gaps)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        parent = todo.pop()
        pids.append(parent)
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                todo.extend(int(kid) for kid in (task / "children").read_text().split())
            except OSError:
                continue
    return pids


def _cpu_s(pid: int) -> tuple[float, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, name


def tree_cpu(pid: int) -> dict[int, tuple[float, str]]:
    """CPU seconds (user + system) of ``pid`` and each descendant, by pid."""
    found = {}
    for child in _tree(pid):
        cpu = _cpu_s(child)
        if cpu is not None:
            found[child] = cpu
    return found


def run_count(
    count: int, url: str, receiver: Receiver, core: int, warmup_s: float, seconds: float
) -> dict[str, float]:
    """Follow ``count`` stations with one pinned streamer; its CPU and what arrived."""
    ids = [f"station-{count}-{i:03d}" for i in range(count)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stations.toml"
        path.write_text("".join(f'[[station]]\nid = "{i}"\nurl = "{url}/{i}.mp3"\n' for i in ids))
        log = Path(folder) / "streamer.log"
        with log.open("wb") as log_file:
            streamer = subprocess.Popen(
                [sys.executable, "-m", "streamer", "--stations", str(path),
                 "--endpoint", receiver.endpoint],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                preexec_fn=lambda: os.sched_setaffinity(0, {core}),
            )  # fmt: skip
        try:
            launched = time.monotonic()
            while min((receiver.blocks.get(i, 0) for i in ids), default=0) < 10:
                if streamer.poll() is not None or time.monotonic() - launched > _START_LIMIT_S:
                    break
                time.sleep(0.2)
            startup_s = time.monotonic() - launched
            time.sleep(warmup_s)
            before_cpu = tree_cpu(streamer.pid)
            before_blocks, before_gaps = receiver.snapshot()
            started = time.monotonic()
            time.sleep(seconds)
            after_cpu = tree_cpu(streamer.pid)
            after_blocks, after_gaps = receiver.snapshot()
            wall_s = time.monotonic() - started
        finally:
            streamer.terminate()
            try:
                streamer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                streamer.kill()
                streamer.wait()
        if streamer.returncode not in (0, -15):
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    total = decoders = 0.0
    for pid, (cpu, name) in after_cpu.items():
        if pid in before_cpu:
            used = cpu - before_cpu[pid][0]
            total += used
            decoders += used if name == "ffmpeg" else 0.0
    received = sum(after_blocks.get(i, 0) - before_blocks.get(i, 0) for i in ids)
    gaps = sum(after_gaps.get(i, 0) - before_gaps.get(i, 0) for i in ids)
    expected = count * wall_s / BLOCK_SECONDS
    return {
        "startup": startup_s,
        "core": total / wall_s,
        "decoders": decoders / wall_s,
        "received": received / expected,
        "gaps": gaps,
        "behind": sum(
            (after_blocks.get(i, 0) - before_blocks.get(i, 0)) < KEPT_UP * wall_s / BLOCK_SECONDS
            for i in ids
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stations")
    parser.add_argument("--counts", default="1,8,32,64", help="station counts to run")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per count")
    parser.add_argument(
        "--warmup", type=float, default=15.0, help="seconds after every station delivers audio"
    )
    parser.add_argument("--core", type=int, default=0, help="the core the streamer is pinned to")
    args = parser.parse_args(argv)
    counts = sorted({int(c) for c in args.counts.split(",")} | {1})
    allowed = os.sched_getaffinity(0)
    if args.core not in allowed:
        parser.error(f"--core {args.core} is not one of this process's cores {sorted(allowed)}")
    others = allowed - {args.core} or allowed
    print(f"CPU: {cpu_description()}")
    with tempfile.TemporaryDirectory() as folder:
        body = make_mp3(args.warmup + args.seconds + _START_LIMIT_S + 30.0, Path(folder))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = multiprocessing.get_context("fork").Process(
        target=serve, args=(listener, body, others), daemon=True
    )
    server.start()
    os.sched_setaffinity(0, others)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    receiver = Receiver(context)
    print(
        f"streamer pinned to core {args.core}; server and receiver on cores {sorted(others)}; "
        f"{args.seconds:g} s measured after {args.warmup:g} s; 128 kbit/s mp3, 0.1 s blocks"
    )
    print(
        f"{'stations':>8} {'start s':>8} {'% of core':>10} {'ffmpeg %':>9} {'% / station':>12} "
        f"{'ratio':>6} {'audio in':>9} {'gaps':>5} {'behind':>7}"
    )
    baseline = 0.0
    kept_up = 0
    per_station = kept_per_station = 0.0
    try:
        for count in counts:
            row = run_count(count, url, receiver, args.core, args.warmup, args.seconds)
            per_station = row["core"] / count
            baseline = baseline or per_station
            if row["behind"] == 0 and row["gaps"] == 0:
                kept_up, kept_per_station = count, per_station
            print(
                f"{count:>8} {row['startup']:>8.1f} {100 * row['core']:>9.1f}% "
                f"{100 * row['decoders']:>8.1f}% "
                f"{100 * per_station:>11.2f}% {per_station / baseline:>6.2f} "
                f"{100 * row['received']:>8.1f}% {row['gaps']:>5.0f} {row['behind']:>7.0f}"
            )
    finally:
        receiver.close()
        context.term()
        server.kill()
        server.join()
        listener.close()
    estimate = int(0.9 / kept_per_station) if kept_per_station > 0 else 0
    print(
        f"one core followed {kept_up} stations (the largest run with every block on time); "
        f"at its {100 * kept_per_station:.2f} % of the core per station, 90 % of the core "
        f"is about {estimate} stations"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
