"""Cold start of the inference worker: process start to "ready" and to the first tag update.

    .venv/bin/python -m benchmarks.cold_start [--repeats 3]

Each repetition starts ``python -m inference`` on private ipc endpoints with a
subscriber and a load generator already connected (ZeroMQ queues until the
worker binds): 3.5 s of audio wait in the PUSH queue, so the first update
comes as soon as the worker can compute one.  Measured from ``Popen``: the
"ready" log line and the first update at the subscriber.  Baseline, in the
same run: ``python -c "import tensorflow"``.  A breakdown of the model's
load in this process follows: ``keras.saving.load_model`` of the cached
``model.keras`` against building the architecture in code and loading only
its weights (``model.weights.h5``).  Medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from benchmarks.common import ROOT
from protocol import AudioFrame, encode_audio
from protocol.subscriber import Subscriber
from tools.demo_audio import demo_signal

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def import_tensorflow_s() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tensorflow"], check=True, env=ENV, cwd=ROOT)
    return time.perf_counter() - started


def worker_start(mode: str) -> tuple[float, float]:
    """Seconds from Popen to the "ready" log line and to the first update."""
    with tempfile.TemporaryDirectory(prefix="tagstream-cold-") as folder:
        input_endpoint, publish_endpoint = f"ipc://{folder}/in", f"ipc://{folder}/out"
        context: zmq.Context = zmq.Context.instance()
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(input_endpoint)
        audio = demo_signal(sample_rate=16000, seconds=20.0)
        now = time.time()

        def send(seq: int) -> None:
            offset = (seq * 1600) % (len(audio) - 1600)
            frame = AudioFrame(
                stream="cold:0", seq=seq, capture_time=now + seq * 0.1, sample_rate=16000,
                channels=1, sample_format="f32", samples=audio[offset : offset + 1600, None].copy(),
            )  # fmt: skip
            push.send_multipart(encode_audio(frame))

        for seq in range(35):  # 3.5 s queued before the worker starts
            send(seq)
        stop = threading.Event()

        def feed() -> None:  # then real time, in case the first update beat the subscription
            seq = 35
            while not stop.wait(0.1):
                send(seq)
                seq += 1

        with Subscriber(publish_endpoint) as subscriber:
            started = time.perf_counter()
            worker = subprocess.Popen(
                [sys.executable, "-m", "inference", "--input", input_endpoint,
                 "--publish", publish_endpoint, "--mode", mode],
                cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            ready: list[float] = []

            def watch() -> None:
                assert worker.stderr is not None
                for line in worker.stderr:
                    if " ready " in line and not ready:
                        ready.append(time.perf_counter() - started)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            update = subscriber.receive(timeout_s=180.0)
            first = time.perf_counter() - started
            stop.set()
            feeder.join()
            worker.terminate()
            worker.wait(timeout=30)
            watcher.join(timeout=5)
        push.close(linger=0)
    if update is None or not ready:
        raise RuntimeError(f"the {mode} worker never became ready or published")
    return ready[0], first


def load_breakdown(repeats: int) -> dict[str, float]:
    """Median seconds: full ``.keras`` load vs architecture in code + ``.weights.h5``."""
    import keras

    from config import load_config
    from model.architectures import build_musicnn
    from model.contract import MODEL_FILE
    from model.tagger import resolve_model_folder

    folder = resolve_model_folder("MSD_musicnn", cache_dir=load_config().model.cache_dir)
    network = keras.saving.load_model(folder / MODEL_FILE, compile=False)
    times: dict[str, list[float]] = {"load_model(.keras)": [], "build + load_weights(.h5)": []}
    with tempfile.TemporaryDirectory() as scratch:
        weights = Path(scratch) / "model.weights.h5"
        network.save_weights(weights)
        for _ in range(repeats):
            started = time.perf_counter()
            keras.saving.load_model(folder / MODEL_FILE, compile=False)
            times["load_model(.keras)"].append(time.perf_counter() - started)
            started = time.perf_counter()
            built = build_musicnn()
            built.load_weights(weights)
            times["build + load_weights(.h5)"].append(time.perf_counter() - started)
    return {name: float(np.median(values)) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["exact", "streaming"])
    args = parser.parse_args(argv)
    baseline = float(np.median([import_tensorflow_s() for _ in range(args.repeats)]))
    rows = []
    for mode in args.modes:
        runs = [worker_start(mode) for _ in range(args.repeats)]
        rows.append((mode, *(float(np.median(values)) for values in zip(*runs, strict=True))))
    breakdown = load_breakdown(args.repeats)
    print(f"baseline: python -c 'import tensorflow' = {baseline:.2f} s (median of {args.repeats})")
    print(
        f"{'mode':>9} {'ready s':>8} {'first update s':>14} {'ready/base':>10} {'first/base':>10}"
    )
    for mode, ready, first in rows:
        print(
            f"{mode:>9} {ready:>8.2f} {first:>14.2f} {ready / baseline:>10.2f} "
            f"{first / baseline:>10.2f}"
        )
    print("model load in this process (TensorFlow already imported):")
    for name, seconds in breakdown.items():
        print(f"  {name:<28} {seconds:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
