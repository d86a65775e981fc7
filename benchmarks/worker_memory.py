"""Resident memory of the inference worker: idle and with 1, 16 and 64 real-time streams.

    .venv/bin/python -m benchmarks.worker_memory [--streams 1 16 64] [--seconds 8]
        [--modes exact exact-onnxruntime streaming streaming-onnxruntime]

One worker subprocess per mode (``python -m inference --mode M --backend B``,
:data:`benchmarks.latency.MODES`: ``-onnxruntime`` modes run on ONNX Runtime,
the others on TensorFlow) on private ipc endpoints. After it is
ready, its ``VmRSS`` (``/proc/PID/status``) is read idle, then while
:mod:`benchmarks.latency`'s load generator sends each stream count in real
time for ``--seconds`` (read at the end of the load, when every stream holds a
full window and its model cache). ``VmHWM`` is the peak. Baselines in the same
run: the worker's idle RSS (the "x idle" column), the idle RSS of the first
mode's worker (exact mode on TensorFlow by default; the "x base" column), and
the RSS of ``python -c "import tensorflow"`` and of ``python -c "import
onnxruntime"``. The MiB/stream column is the growth from idle at each stream
count, divided by it. The CPU and the load average are printed with the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.common import cpu_description, load_description, proc_status_mib
from benchmarks.latency import MODES, generate, start_worker, worker_settings


def status_mib(pid: int, field: str) -> float:
    """``field`` of ``/proc/PID/status`` in MiB; the worker must be alive."""
    value = proc_status_mib(pid, field)
    if value is None:
        raise RuntimeError(f"/proc/{pid}/status has no {field}: did the worker exit?")
    return value


def import_rss_mib(module: str) -> float:
    """VmRSS of a fresh interpreter after ``import module``, MiB."""
    code = (
        f"import {module}, pathlib; print([l for l in pathlib.Path('/proc/self/status')"
        ".read_text().splitlines() if l.startswith('VmRSS:')][0].split()[1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout
    return int(out.split()[-1]) / 1024.0


def measure(mode: str, counts: list[int], seconds: float) -> list[tuple[str, float, float]]:
    """(label, VmRSS MiB, VmHWM MiB) idle and at the end of each stream count's load."""
    folder = Path(tempfile.mkdtemp(prefix="tagstream-mem-"))
    worker, input_endpoint, _ = start_worker(folder, 0.5, **worker_settings(mode))
    rows = [("idle", status_mib(worker.pid, "VmRSS"), status_mib(worker.pid, "VmHWM"))]
    try:
        for count in counts:
            stop = threading.Event()
            sample: list[tuple[float, float]] = []

            def read_at_end(
                stop: threading.Event = stop, sample: list[tuple[float, float]] = sample
            ) -> None:
                if not stop.wait(seconds - 0.3):
                    sample.append(
                        (status_mib(worker.pid, "VmRSS"), status_mib(worker.pid, "VmHWM"))
                    )

            reader = threading.Thread(target=read_at_end)
            reader.start()
            generate(input_endpoint, count, seconds, stop)
            reader.join()
            rows.append((f"{count} streams", *sample[0]))
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)  # TensorFlow's teardown is slow on a loaded machine
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of load per count")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["exact", "exact-onnxruntime", "streaming", "streaming-onnxruntime"],
        choices=MODES,
        help="worker modes (-onnxruntime: --backend onnxruntime); the first is the baseline",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(f"CPU: {cpu_description()}")
    print(f"start: {load_description()}", flush=True)
    imports = {module: import_rss_mib(module) for module in ("tensorflow", "onnxruntime")}
    results = {mode: measure(mode, args.streams, args.seconds) for mode in args.modes}
    print(f"end: {load_description()}")
    for module, rss in imports.items():
        print(f"python -c 'import {module}' VmRSS = {rss:.0f} MiB")
    base = results[args.modes[0]][0][1]
    print(f"x base: against the idle {args.modes[0]} worker ({base:.0f} MiB)")
    print(
        f"{'mode':>21} {'load':>11} {'VmRSS MiB':>9} {'VmHWM MiB':>9} {'x idle':>6} "
        f"{'x base':>6} {'MiB/stream':>10}"
    )
    for mode, rows in results.items():
        idle = rows[0][1]
        for label, rss, hwm in rows:
            streams = int(label.split()[0]) if label != "idle" else 0
            per_stream = f"{(rss - idle) / streams:10.2f}" if streams else f"{'':>10}"
            print(
                f"{mode:>21} {label:>11} {rss:>9.0f} {hwm:>9.0f} {rss / idle:>6.2f} "
                f"{rss / base:>6.2f} {per_stream}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
