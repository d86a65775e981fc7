"""End-to-end latency of the inference worker under real-time load, on each model backend.

    python -m benchmarks.latency [--seconds 30] [--streams 1 16] [--hop-seconds 0.5]
                                 [--backends tensorflow onnxruntime]

For each backend (``python -m inference --backend B``, exact mode) and stream
count a worker subprocess is started
on private ipc endpoints; a load generator sends real-time paced 0.1 s blocks
of synthesized music for every stream (``capture_time`` = the block's first
sample, sent when its last sample is "captured"), and a subscriber records,
for every update, receipt time - ``capture_time`` of the window's last sample.
That latency includes the block buffering (up to one block), the queueing and
batching in the worker, the model call and the PUB/SUB hop.

Baselines, measured in the same run: one batch-1 ``Tagger.predict`` call of
the TensorFlow backend (the median of 50, after warm-up) in this process (the
p50/base and p99/base columns), and the TensorFlow worker's row at the same
stream count (the "TF p99 / p99" column: how many times lower each backend's
p99 latency is).  The CPU and the load average are printed with the table.
The first ``--warmup-seconds`` of each run are ignored,
and so is the final flush when the streams end (the drain column: seconds from
the streams' ends to the last update).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from benchmarks.common import ROOT, cpu_description, load_description
from protocol import AudioFrame, EndOfStream, encode_audio, encode_end
from protocol.subscriber import Subscriber
from tools.demo_audio import demo_signal

BLOCK_SECONDS = 0.1
#: ``model.backend`` values, TensorFlow (the baseline) first.
BACKENDS = ("tensorflow", "onnxruntime")
#: Worker modes: ``inference.mode``, then an optional ``-onnxruntime`` or ``-bfloat16``,
#: or ``-nonetwork`` (``[content] network = false``: the content classifier without
#: inaSpeechSegmenter's network).
MODES = (
    "exact", "exact-onnxruntime", "streaming", "streaming-onnxruntime", "exact-bfloat16",
    "streaming-bfloat16", "exact-nonetwork",
)  # fmt: skip


def worker_settings(mode: str) -> dict[str, Any]:
    """The worker's ``mode``, ``precision``, ``backend`` and content ``network`` for a
    :data:`MODES` entry."""
    worker_mode, _, suffix = mode.partition("-")
    return {
        "mode": worker_mode,
        "precision": "bfloat16" if suffix == "bfloat16" else "float32",
        "backend": "onnxruntime" if suffix == "onnxruntime" else "tensorflow",
        "network": suffix != "nonetwork",
    }


def worker_options(
    folder: Path, *, mode: str, precision: str, backend: str, network: bool
) -> list[str]:
    """``python -m inference`` options for :func:`worker_settings`; without the network, a
    settings file in ``folder`` that says so (the built-in defaults otherwise)."""
    options = ["--mode", mode, "--precision", precision, "--backend", backend]
    if not network:
        settings = folder / "content-without-network.toml"
        settings.write_text("[content]\nnetwork = false\n")
        options += ["--config", str(settings)]
    return options


SAMPLE_RATE = 16000


def baseline_predict_ms(repeats: int = 50) -> float:
    from model import load_tagger

    tagger = load_tagger("MSD_musicnn")
    tagger.warm_up()
    window = np.random.default_rng(0).random((1, 187, 96), dtype=np.float32)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tagger.predict(window)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000.0


def start_worker(
    folder: Path,
    hop_seconds: float,
    *,
    mode: str = "exact",
    precision: str = "float32",
    backend: str = "tensorflow",
    network: bool = True,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """``python -m inference`` on ipc endpoints in ``folder``, once its "ready" line is logged."""
    input_endpoint, publish_endpoint = f"ipc://{folder}/in", f"ipc://{folder}/out"
    log = (folder / "worker.log").open("ab")
    options = worker_options(
        folder, mode=mode, precision=precision, backend=backend, network=network
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "inference", "--input", input_endpoint, "--publish",
         publish_endpoint, "--hop-seconds", str(hop_seconds), *options],
        cwd=ROOT, stdout=log, stderr=log, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    log.close()
    deadline = time.monotonic() + 180
    while " ready " not in (folder / "worker.log").read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((folder / "worker.log").read_text()[-2000:])
        time.sleep(0.1)
    return worker, input_endpoint, publish_endpoint


def generate(
    endpoint: str,
    streams: int,
    seconds: float,
    stop: threading.Event,
    *,
    phases: int = 1,
    ended: list[float] | None = None,
) -> int:
    """Send real-time paced blocks for ``streams`` streams; return blocks sent.

    The time the streams' ends were sent is appended to ``ended`` when given.

    With ``phases`` > 1, stream ``s`` starts ``s % phases`` blocks late, so the
    streams' windows fall due spread over the hop, as independent feeds do;
    with 1 every stream's window is due at the same moment (the worst case).
    """
    audio = demo_signal(sample_rate=SAMPLE_RATE, seconds=20.0)
    block = int(BLOCK_SECONDS * SAMPLE_RATE)
    context: zmq.Context = zmq.Context.instance()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(endpoint)
    start = time.time()
    sent = 0
    n_blocks = int(seconds / BLOCK_SECONDS)
    try:
        for seq in range(n_blocks):
            due = start + (seq + 1) * BLOCK_SECONDS  # the block's last sample is captured
            delay = due - time.time()
            if delay > 0 and stop.wait(delay):
                break
            for s in range(streams):
                stream_seq = seq - s % phases
                if stream_seq < 0:
                    continue
                offset = (seq * block + s * 7919) % (len(audio) - block)
                frame = AudioFrame(
                    stream=f"bench:{s}", seq=stream_seq, capture_time=start + seq * BLOCK_SECONDS,
                    sample_rate=SAMPLE_RATE, channels=1, sample_format="f32",
                    samples=audio[offset : offset + block, None].copy(),
                )  # fmt: skip
                push.send_multipart(encode_audio(frame), copy=False)
                sent += 1
        if ended is not None:
            ended.append(time.time())
        for s in range(streams):
            end = EndOfStream(stream=f"bench:{s}", seq=n_blocks - s % phases)
            push.send_multipart(encode_end(end))
    finally:
        push.close(linger=1000)
    return sent


def run_config(
    streams: int,
    seconds: float,
    hop: float,
    warmup: float,
    *,
    mode: str = "exact",
    precision: str = "float32",
    backend: str = "tensorflow",
    network: bool = True,
    lookahead_s: float = 0.0,
    stagger: bool = False,
) -> dict[str, float | str]:
    """One worker, ``streams`` real-time streams for ``seconds``; latency percentiles.

    Latency is receipt time - ``capture_time`` - ``lookahead_s``: with the
    streaming mode's look-ahead given, it runs from the last sample the update
    needed rather than from the window's last sample.  Only the steady state
    counts: updates whose last needed sample was captured before the streams
    ended.  The windows still waiting at the end are the worker's final flush
    (in streaming mode they are recomputed exactly, all at once); ``drain_s``
    is how long after the ends were sent the last update arrived.
    """
    folder = Path(tempfile.mkdtemp(prefix="tagstream-bench-"))
    worker, input_endpoint, publish_endpoint = start_worker(
        folder, hop, mode=mode, precision=precision, backend=backend, network=network
    )
    received: list[tuple[float, float]] = []  # (needed sample's capture time, receipt)
    ended: list[float] = []
    stop = threading.Event()
    started = time.time()

    def receive() -> None:
        with Subscriber(publish_endpoint) as subscriber:
            while not stop.is_set():
                update = subscriber.receive(timeout_s=0.2)
                if update is not None and update.capture_time > started + warmup:
                    received.append((update.capture_time + lookahead_s, time.time()))

    receiver = threading.Thread(target=receive)
    receiver.start()
    time.sleep(0.5)  # let the subscription reach the worker
    try:
        phases = max(round(hop / BLOCK_SECONDS), 1) if stagger else 1
        generate(input_endpoint, streams, seconds, stop, phases=phases, ended=ended)
        time.sleep(1.0)
        while received and time.time() - received[-1][1] < 1.0:  # the final flush
            time.sleep(0.2)
    finally:
        stop.set()
        receiver.join()
        worker.terminate()
        try:
            worker.wait(timeout=60)  # TensorFlow's teardown is slow on a loaded machine
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        status = [
            line for line in (folder / "worker.log").read_text().splitlines() if " stopped " in line
        ]
        shutil.rmtree(folder, ignore_errors=True)
    end = ended[0] if ended else float("inf")
    steady = [(needed, receipt) for needed, receipt in received if needed < end]
    values = np.array([receipt - needed for needed, receipt in steady]) * 1000.0
    return {
        "streams": streams,
        "updates": len(values),
        "updates_per_s": len(values) / max(end - lookahead_s - (started + warmup), 1e-9),
        "p50_ms": float(np.percentile(values, 50)) if len(values) else float("nan"),
        "p99_ms": float(np.percentile(values, 99)) if len(values) else float("nan"),
        "drain_s": max(max((r for _, r in received), default=end) - end, 0.0),
        "worker": status[-1].split(" stopped ")[-1] if status else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per configuration")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--hop-seconds", type=float, default=0.5)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument(
        "--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS,
        help="model.backend of the workers (exact mode)",
    )  # fmt: skip
    parser.add_argument(
        "--stagger", action="store_true", help="spread the streams' starts over the hop"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(f"CPU: {cpu_description()}")
    print(f"start: {load_description()}", flush=True)
    baseline = baseline_predict_ms()
    rows = [
        {
            "backend": backend,
            **run_config(
                n,
                args.seconds,
                args.hop_seconds,
                args.warmup_seconds,
                backend=backend,
                stagger=args.stagger,
            ),
        }
        for n in args.streams
        for backend in args.backends  # interleaved: each stream count on every backend in turn
    ]
    print(f"end: {load_description()}")
    print(
        f"baseline: one batch-1 TensorFlow Tagger.predict = {baseline:.1f} ms (median of 50); "
        f"hop {args.hop_seconds:g} s, exact mode"
    )
    print(f"{'backend':<12} {'streams':>7} {'updates':>8} {'upd/s':>7} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'p50/base':>9} {'p99/base':>9} {'TF p99 / p99':>12} "
          f"{'drain s':>8}")  # fmt: skip
    tf_p99 = {row["streams"]: float(row["p99_ms"]) for row in rows if row["backend"] == BACKENDS[0]}
    for row in rows:
        vs_tf = tf_p99.get(int(row["streams"]), float("nan")) / float(row["p99_ms"])
        print(
            f"{row['backend']:<12} {row['streams']:>7} {row['updates']:>8} "
            f"{row['updates_per_s']:>7.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
            f"{float(row['p50_ms']) / baseline:>9.1f} {float(row['p99_ms']) / baseline:>9.1f} "
            f"{vs_tf:>11.2f}x {row['drain_s']:>8.2f}"
        )
    for row in rows:
        print(f"worker ({row['backend']}, {row['streams']} streams): {row['worker']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
