"""What several benchmarks share: the checkout, the CPU, a process's memory, a test signal, a timer.

Benchmarks run from the checkout as modules (``python -m benchmarks.NAME``);
the processes they start (``python -m inference``, ``python -m streamer``) run
there too (:data:`ROOT`).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = [
    "CPU_FEATURES",
    "ROOT",
    "cpu_description",
    "cpu_features",
    "median_ms",
    "proc_status_mib",
    "synthetic_music",
]

#: The checkout: the working folder of the worker and streamer processes benchmarks start.
ROOT = Path(__file__).resolve().parent.parent


#: Instruction sets a benchmark names (what decides TensorFlow's and ONNX Runtime's kernels):
#: the name printed -> the ``/proc/cpuinfo`` flags that show it (any of them).
CPU_FEATURES: dict[str, tuple[str, ...]] = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "AVX512_BF16": ("avx512_bf16",),
    "AMX": ("amx_tile", "amx_bf16", "amx_int8"),
    "VNNI": ("avx512_vnni", "avx_vnni"),
}


def cpu_features(flags: set[str]) -> dict[str, bool]:
    """Which of :data:`CPU_FEATURES` a CPU with these ``/proc/cpuinfo`` flags has."""
    return {name: any(flag in flags for flag in names) for name, names in CPU_FEATURES.items()}


def cpu_description() -> str:
    """One line: the CPU model, the cores this process may use, and its instruction sets.

    >>> cpu_description()  # doctest: +SKIP
    'AMD EPYC, 2 cores; AVX2 yes, AVX-512 no, AVX512_BF16 no, AMX no, VNNI no'
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's
    name = fields.get("model name") or platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cpuinfo:
        return f"{name}, {cores} cores; instruction sets unknown (no /proc/cpuinfo)"
    features = cpu_features(set(fields.get("flags", "").split()))
    listed = ", ".join(f"{feature} {'yes' if has else 'no'}" for feature, has in features.items())
    return f"{name}, {cores} cores; {listed}"


def proc_status_mib(pid: int, field: str = "VmRSS") -> float | None:
    """``field`` of ``/proc/PID/status`` ("VmRSS" resident, "VmHWM" peak) in MiB.

    Returns ``None`` when the process is gone or the field is absent.
    """
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return None


def median_ms(call: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``call()`` in ms over ``repeats`` calls, after two untimed calls."""
    call()
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


def synthetic_music(
    seconds: float, *, rng: np.random.Generator, sample_rate: int = 16000
) -> np.ndarray:
    """A music-like mono signal: drums, a bass line and chords that change every bar.

    Parameters
    ----------
    seconds : float > 0
    rng : np.random.Generator
    sample_rate : int > 0

    Returns
    -------
    np.ndarray [shape=(round(seconds * sample_rate),)], float32 in [-1, 1]
    """
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    beat = 60.0 / rng.uniform(70, 160)
    phase = (t % beat) / beat
    kick = np.sin(2 * np.pi * 55 * t) * np.exp(-phase * 12)
    hat = rng.standard_normal(n) * np.exp(-((t % (beat / 2)) / beat) * 60) * 0.3
    y = kick * rng.uniform(0.3, 1.0) + hat * rng.uniform(0.0, 1.0)
    bar = 4 * beat
    for start in np.arange(0, seconds, bar):
        part = (t >= start) & (t < start + bar)
        root = 110 * 2 ** (rng.integers(-5, 7) / 12)
        for ratio, level in ((1.0, 0.4), (1.26, 0.2), (1.5, 0.2), (4.0, 0.1)):
            f = root * ratio
            harmonics = sum(np.sin(2 * np.pi * f * k * t[part]) / k for k in (1, 2, 3))
            y[part] += level * harmonics * (0.6 + 0.4 * np.sin(2 * np.pi * t[part] / beat))
    y += rng.standard_normal(n) * rng.uniform(0.001, 0.02)
    return (0.9 * y / np.abs(y).max()).astype(np.float32)
