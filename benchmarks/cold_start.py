"""Cold start: imports, tagging one file from a cold process, and the inference worker.

    .venv/bin/python -m benchmarks.cold_start [--repeats 3] [--backends ...] [--modes ...]
        [--no-load-breakdown]

Per backend (``model.backend``), in the same run: the import of its runtime
(``import tensorflow`` against ``import onnxruntime``: seconds and the peak
resident memory of a process that does nothing else), and a cold process that
loads ``MSD_musicnn`` with :func:`model.load_tagger` and tags one 30 s file
with :func:`model.tagging.tag_file`, as ``python -m tools.tag`` does: wall
seconds from ``Popen`` to the result, the load and tagging seconds inside it,
its peak memory, and whether TensorFlow was imported (never, on the ONNX
path).  Beside it, ``python -m tools.tag --backend B --json FILE`` as a user
runs it: wall seconds from ``Popen`` to its exit (issue 15's target on the
ONNX path: 2.5 s).  The ONNX file is built before the timed runs (once per
model, where TensorFlow is allowed).

Then the worker (``--modes``, :data:`benchmarks.latency.MODES`:
the ``-onnxruntime`` modes run ``python -m inference --backend onnxruntime``, the others
TensorFlow): each repetition starts it on private ipc endpoints with a
subscriber and a load generator already connected (ZeroMQ queues until the
worker binds): 3.5 s of audio wait in the PUSH queue, so the first update
comes as soon as the worker can compute one.  Measured from ``Popen``: the
"ready" log line and the first update at the subscriber (target on the ONNX
path: ready within 1.5 s).  Baselines, in the same run: ``python -c "import
tensorflow"``, and the first mode's worker (exact mode on TensorFlow by
default).  A breakdown of the model's load in this process follows:
``keras.saving.load_model`` of the cached ``model.keras`` against building the
architecture in code and loading only its weights (``model.weights.h5``).
Medians of ``--repeats``, interleaved.  The CPU and the load average are
printed with the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from benchmarks.common import ROOT, cpu_description, load_description
from benchmarks.latency import MODES, worker_options, worker_settings
from protocol import AudioFrame, encode_audio
from protocol.subscriber import Subscriber
from tools.demo_audio import demo_signal

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
BACKENDS = ("tensorflow", "onnxruntime")
RUNTIMES = {"tensorflow": "tensorflow", "onnxruntime": "onnxruntime"}

# Peak memory from VmHWM: ru_maxrss would carry the parent's peak across fork and exec.
_PEAK_MIB = """
def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

_IMPORT = (
    _PEAK_MIB
    + """
import sys, time
started = time.perf_counter()
__import__(sys.argv[1])
seconds = time.perf_counter() - started
print(seconds, peak_mib(), flush=True)
"""
)

_FIRST_TAG = (
    _PEAK_MIB
    + """
import json, os, sys, time
started = time.perf_counter()
from model import load_tagger
from model.tagging import tag_file
tagger = load_tagger("MSD_musicnn", backend=sys.argv[1])
loaded = time.perf_counter()
result = tag_file(sys.argv[2], tagger)
tagged = time.perf_counter()
print(json.dumps({
    "load_s": loaded - started, "tag_s": tagged - loaded,
    "peak_mib": peak_mib(),
    "tensorflow": "tensorflow" in sys.modules, "top": max(result.tags, key=result.tags.get),
}), flush=True)
os._exit(0)  # as tools.tag leaves: without TensorFlow's interpreter teardown
"""
)


def import_cost(module: str) -> tuple[float, float]:
    """Seconds of ``import module`` in a fresh interpreter, and that process's peak MiB."""
    child = subprocess.run(
        [sys.executable, "-c", _IMPORT, module], check=True, env=ENV, cwd=ROOT,
        capture_output=True, text=True,
    )  # fmt: skip
    seconds, peak = child.stdout.split()
    return float(seconds), float(peak)


def first_tag(backend: str, path: Path) -> dict[str, float]:
    """A cold process loading MSD_musicnn and tagging ``path``: wall to the result, and more."""
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", _FIRST_TAG, backend, str(path)], check=True, env=ENV, cwd=ROOT,
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    result = json.loads(child.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, **{k: float(v) for k, v in result.items() if k != "top"}}


def tools_tag_s(backend: str, path: Path) -> float:
    """Wall seconds of ``python -m tools.tag --backend backend --json path``, start to exit."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tools.tag", "--backend", backend, "--json", "--no-progress",
         str(path)],
        check=True, env=ENV, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - started


def import_tensorflow_s() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tensorflow"], check=True, env=ENV, cwd=ROOT)
    return time.perf_counter() - started


def worker_start(mode: str) -> tuple[float, float]:
    """Seconds from Popen to the "ready" log line and to the first update (``mode``: MODES)."""
    settings = worker_settings(mode)
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
                 "--publish", publish_endpoint, *worker_options(Path(folder), **settings)],
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


def first_tag_table(backends: list[str], repeats: int) -> None:
    """Print the import and one-file rows of every backend, medians of ``repeats``."""
    from benchmarks.file_tagging import write_synthetic_folder
    from model import load_tagger

    for backend in backends:
        load_tagger("MSD_musicnn", backend=backend)  # converted and cached before timing
    with tempfile.TemporaryDirectory(prefix="tagstream-cold-") as folder:
        (path,) = write_synthetic_folder(Path(folder), files=1, seconds=30.0, seed=0)
        imports: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
        tags: dict[str, list[dict[str, float]]] = {b: [] for b in backends}
        commands: dict[str, list[float]] = {b: [] for b in backends}
        for _ in range(repeats):  # interleaved
            for backend in backends:
                imports[backend].append(import_cost(RUNTIMES[backend]))
                tags[backend].append(first_tag(backend, path))
                commands[backend].append(tools_tag_s(backend, path))
    print(f"one 30 s file from a cold process (MSD_musicnn, tag_file), medians of {repeats}")
    print("wall s: tag_file in a cold process; tools.tag s: python -m tools.tag --json FILE")
    print(
        f"{'backend':<12} {'import s':>8} {'import MiB':>10} {'wall s':>7} {'load s':>7} "
        f"{'tag s':>6} {'peak MiB':>8} {'TF imported':>11} {'tools.tag s':>11} {'TF / this':>9}"
    )
    tools_tag = {backend: float(np.median(commands[backend])) for backend in backends}
    for backend in backends:
        import_s, import_mib = (float(np.median(v)) for v in zip(*imports[backend], strict=True))
        row = {k: float(np.median([t[k] for t in tags[backend]])) for k in tags[backend][0]}
        vs_tf = tools_tag.get("tensorflow", float("nan")) / tools_tag[backend]
        print(
            f"{backend:<12} {import_s:8.2f} {import_mib:10.0f} {row['wall_s']:7.2f} "
            f"{row['load_s']:7.2f} {row['tag_s']:6.2f} {row['peak_mib']:8.0f} "
            f"{'yes' if row['tensorflow'] else 'no':>11} {tools_tag[backend]:11.2f} "
            f"{vs_tf:8.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["exact", "exact-onnxruntime", "streaming", "streaming-onnxruntime"],
        choices=MODES,
        help="worker modes (-onnxruntime: --backend onnxruntime); the first is the baseline",
    )
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--no-load-breakdown",
        dest="load_breakdown",
        action="store_false",
        help="skip the .keras against .weights.h5 load breakdown",
    )
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_description()}")
    print(f"start: {load_description()}", flush=True)
    first_tag_table(args.backends, args.repeats)
    baseline = float(np.median([import_tensorflow_s() for _ in range(args.repeats)]))
    runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in args.modes}
    for _ in range(args.repeats):  # interleaved
        for mode in args.modes:
            runs[mode].append(worker_start(mode))
    rows = [
        (mode, *(float(np.median(values)) for values in zip(*runs[mode], strict=True)))
        for mode in args.modes
    ]
    breakdown = load_breakdown(args.repeats) if args.load_breakdown else {}
    print(f"end: {load_description()}")
    print(f"baseline: python -c 'import tensorflow' = {baseline:.2f} s (median of {args.repeats})")
    first_mode = rows[0][2]
    print(
        f"{'mode':>21} {'ready s':>8} {'first update s':>14} {'ready/base':>10} "
        f"{'first/base':>10} {args.modes[0] + ' / this':>18}"
    )
    for mode, ready, first in rows:
        print(
            f"{mode:>21} {ready:>8.2f} {first:>14.2f} {ready / baseline:>10.2f} "
            f"{first / baseline:>10.2f} {first_mode / first:>17.2f}x"
        )
    if breakdown:
        print("model load in this process (TensorFlow already imported):")
        for name, seconds in breakdown.items():
            print(f"  {name:<28} {seconds:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
