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

__all__ = ["ROOT", "cpu_description", "median_ms", "proc_status_mib", "synthetic_music"]

#: The checkout: the working folder of the worker and streamer processes benchmarks start.
ROOT = Path(__file__).resolve().parent.parent


def cpu_description() -> str:
    """One line: the CPU model, the cores this process may use, and bfloat16 support.

    >>> cpu_description()  # doctest: +SKIP
    'Intel(R) Xeon(R) Platinum 8488C, 2 cores, bfloat16 instructions: yes (AVX512_BF16 or AMX)'
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if ":" in line
             and line.split(":", 1)[0].strip() == "model name"]  # fmt: skip
    name = names[0] if names else (platform.processor() or platform.machine())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cpuinfo:
        bf16 = "unknown (no /proc/cpuinfo)"
    elif "avx512_bf16" in cpuinfo or "amx_bf16" in cpuinfo:
        bf16 = "yes (AVX512_BF16 or AMX)"
    else:
        bf16 = "no: bfloat16 is emulated and slower here"
    return f"{name}, {cores} cores, bfloat16 instructions: {bf16}"


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
