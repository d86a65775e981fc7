"""Soak test: the whole pipeline on real music for an hour; memory, latency drift, drops.

    python -m benchmarks.soak --music /usr/share/games/wesnoth/1.16/data/core/music \\
        [--minutes 60] [--streams 2] [--bucket-minutes 5] [--warmup-minutes 2]

Starts a worker (``python -m inference``) on private ipc endpoints and
``--streams`` streamers (``python -m streamer --file F``, paced in real time),
each looping over the music files (a new streamer process per file, so streamer
restarts are part of the soak), and subscribes to every update in this process.
Music: Debian's ``wesnoth-1.16-music`` (``apt-get install wesnoth-1.16-music``),
Ogg Vorbis, 44.1 kHz stereo; any folder of wav/flac/ogg/mp3 works.

Reported (a table, and ``--json PATH``):

* worker resident memory (``VmRSS`` from ``/proc/PID/status``) at the end of
  the warm-up, at the end, its maximum, the growth after warm-up and the
  growth rate from a least-squares line through the samples after warm-up;
* latency (publication - capture of the window's last sample) p50/p99 and
  update count per ``--bucket-minutes`` bucket, and the ratio of the last
  bucket's p50 to the first's (the baseline measured in the same run): drift;
* dropped frames: the worker's drops, gaps and windows shed for being behind
  (from its final log line), the streamers' ``dropped_send``, and sequence
  gaps seen in the updates.

The documented run is ``--minutes 60``; shorter runs give the same table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, cpu_description, load_description, proc_status_mib
from protocol.subscriber import Subscriber

AUDIO_SUFFIXES = (".ogg", ".wav", ".flac", ".mp3")
RSS_INTERVAL_S = 5.0
READY_TIMEOUT_S = 180.0


class Pipeline:
    """The worker and the looping streamers, with logs in ``folder``."""

    def __init__(self, folder: Path, files: list[Path], *, streams: int, hop_seconds: float):
        self.folder = folder
        self.files = files
        self.streams = streams
        self.hop_seconds = hop_seconds
        self.input = f"ipc://{folder}/in"
        self.publish = f"ipc://{folder}/out"
        self.stop = threading.Event()
        self.worker: subprocess.Popen[bytes] | None = None
        self.streamer_runs = 0
        self.streamer_failures = 0
        self.dropped_send = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _popen(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()

    def start_worker(self) -> int:
        self.worker = self._popen(
            "worker",
            ["inference", "--input", self.input, "--publish", self.publish,
             "--hop-seconds", str(self.hop_seconds)],
        )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        log = self.folder / "worker.log"
        while " ready " not in log.read_text(errors="replace"):
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        return self.worker.pid

    def start_streamers(self) -> None:
        for index in range(self.streams):
            thread = threading.Thread(target=self._loop, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self, index: int) -> None:
        position = index * max(1, len(self.files) // max(1, self.streams))
        name = f"streamer{index}"
        while not self.stop.is_set():
            path = self.files[position % len(self.files)]
            position += 1
            process = self._popen(
                name,
                ["streamer", "--file", str(path), "--endpoint", self.input,
                 "--stream-id", f"soak:{index}"],
            )  # fmt: skip
            while process.poll() is None and not self.stop.wait(0.5):
                pass
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            code = process.wait()
            with self._lock:
                self.streamer_runs += 1
                self.streamer_failures += code != 0

    def close(self) -> dict[str, int]:
        """Stop everything; return the worker's final counters (from its last log line)."""
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        summary: dict[str, int] = {}
        if self.worker is not None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
            text = (self.folder / "worker.log").read_text(errors="replace")
            stopped = [line for line in text.splitlines() if " stopped " in line]
            if stopped:
                summary = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", stopped[-1])}
        for index in range(self.streams):
            log = self.folder / f"streamer{index}.log"
            if log.exists():
                for found in re.findall(r"dropped_send=(\d+)", log.read_text(errors="replace")):
                    self.dropped_send = max(self.dropped_send, int(found))
        return summary


def least_squares_slope(times_s: list[float], values: list[float]) -> float:
    if len(times_s) < 2:
        return float("nan")
    slope, _ = np.polyfit(np.asarray(times_s), np.asarray(values), 1)
    return float(slope)


def run(args: argparse.Namespace) -> dict[str, Any]:
    files = sorted(p for p in Path(args.music).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise SystemExit(f"error: no audio files under --music {args.music}")
    folder = Path(tempfile.mkdtemp(prefix="tagstream-soak-"))
    pipeline = Pipeline(folder, files, streams=args.streams, hop_seconds=args.hop_seconds)
    rss: list[tuple[float, float]] = []
    latencies: dict[int, list[float]] = {}
    seq_gaps = 0
    updates = 0
    last_seq: dict[str, int] = {}
    summary: dict[str, int] = {}
    try:
        pid = pipeline.start_worker()
        with Subscriber(pipeline.publish) as subscriber:
            pipeline.start_streamers()
            started = time.monotonic()
            end = started + args.minutes * 60.0
            next_rss = started
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_rss:
                    value = proc_status_mib(pid)
                    if value is None:
                        raise RuntimeError("the worker died; see " + str(folder / "worker.log"))
                    rss.append((now - started, value))
                    next_rss = now + RSS_INTERVAL_S
                update = subscriber.receive(timeout_s=0.5)
                if update is None:
                    continue
                updates += 1
                bucket = int((time.monotonic() - started) // (args.bucket_minutes * 60.0))
                latencies.setdefault(bucket, []).append(update.latency_s)
                previous = last_seq.get(update.stream)
                if previous is not None and update.seq > previous + 1:
                    seq_gaps += update.seq - previous - 1
                last_seq[update.stream] = update.seq
        summary = pipeline.close()
    finally:
        pipeline.stop.set()
        if pipeline.worker is not None and pipeline.worker.poll() is None:
            pipeline.worker.kill()
        if not args.keep_logs:
            shutil.rmtree(folder, ignore_errors=True)
    warm = [(t, v) for t, v in rss if t >= args.warmup_minutes * 60.0] or rss
    result = {
        "minutes": args.minutes,
        "streams": args.streams,
        "files": len(files),
        "updates": updates,
        "streamer_runs": pipeline.streamer_runs,
        "streamer_failures": pipeline.streamer_failures,
        "rss_mib": {
            "start": rss[0][1] if rss else None,
            "after_warmup": warm[0][1] if warm else None,
            "end": rss[-1][1] if rss else None,
            "max": max(v for _, v in rss) if rss else None,
            "growth_after_warmup": (warm[-1][1] - warm[0][1]) if warm else None,
            "growth_mib_per_hour": least_squares_slope([t for t, _ in warm], [v for _, v in warm])
            * 3600.0,
        },
        "latency_ms": {
            str(bucket): {
                "from_min": bucket * args.bucket_minutes,
                "updates": len(values),
                "p50": float(np.percentile(values, 50)) * 1000.0,
                "p99": float(np.percentile(values, 99)) * 1000.0,
            }
            for bucket, values in sorted(latencies.items())
        },
        "dropped": {
            "worker_drops": summary.get("drops"),
            "worker_gaps": summary.get("gaps"),
            "worker_shed": summary.get("shed"),
            "worker_rejected": summary.get("rejected"),
            "streamer_dropped_send": pipeline.dropped_send,
            "update_seq_gaps": seq_gaps,
        },
        "logs": str(folder) if args.keep_logs else None,
        "cpu": cpu_description(),
        "load": load_description(),
    }
    return result


def print_table(result: dict[str, Any]) -> None:
    rss = result["rss_mib"]
    print(
        f"soak: {result['minutes']:g} min, {result['streams']} streams, {result['files']} files, "
        f"{result['updates']} updates, {result['streamer_runs']} streamer runs "
        f"({result['streamer_failures']} failed)"
    )
    print(f"cpu: {result.get('cpu', '')}")
    print(f"load at the end: {result.get('load', '')}")
    print("\nworker resident memory (VmRSS, MiB)")
    print(f"  {'start':>8} {'warm':>8} {'end':>8} {'max':>8} {'growth':>8} {'MiB/h':>8}")
    print(
        f"  {rss['start']:8.1f} {rss['after_warmup']:8.1f} {rss['end']:8.1f} {rss['max']:8.1f} "
        f"{rss['growth_after_warmup']:8.1f} {rss['growth_mib_per_hour']:8.1f}"
    )
    print("\nlatency per bucket (ms)")
    print(f"  {'from min':>8} {'updates':>8} {'p50':>8} {'p99':>8} {'p50/first':>10}")
    buckets = list(result["latency_ms"].values())
    first = buckets[0]["p50"] if buckets else float("nan")
    for bucket in buckets:
        print(
            f"  {bucket['from_min']:8g} {bucket['updates']:8d} {bucket['p50']:8.0f} "
            f"{bucket['p99']:8.0f} {bucket['p50'] / first:10.2f}"
        )
    print("\ndropped")
    for key, value in result["dropped"].items():
        print(f"  {key:<24} {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music", required=True, help="folder of music files (wav/flac/ogg/mp3)")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--bucket-minutes", type=float, default=5.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--hop-seconds", type=float, default=0.5)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = run(args)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
