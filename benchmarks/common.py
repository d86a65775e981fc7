"""What several benchmarks share: the checkout, the CPU, a process's memory, a test signal, a timer.

Benchmarks run from the checkout as modules (``python -m benchmarks.NAME``);
the processes they start (``python -m inference``, ``python -m streamer``) run
there too (:data:`ROOT`).
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tools.demo_audio import synthetic_music

__all__ = [
    "CPU_FEATURES",
    "ROOT",
    "cpu_description",
    "cpu_features",
    "load_description",
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


def load_description() -> str:
    """The machine's load average (1, 5 and 15 minutes) against its cores, as one line.

    A benchmark prints it beside :func:`cpu_description` at its start and end:
    on a shared machine it says how far the absolute times are inflated.

    >>> load_description()  # doctest: +SKIP
    'load average 3.10 2.75 2.40 (1, 5, 15 min) on 2 cores'
    """
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return (
        f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} cores"
    )


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


#: A 128 kbit/s mp3 station: its bytes per second, and ICY metadata every this many bytes.
MP3_BYTES_PER_SECOND = 16_000
ICY_METAINT = 16_000


def make_mp3(seconds: float, folder: Path) -> bytes:
    """``seconds`` of synthetic music as CBR 128 kbit/s mp3, 44.1 kHz stereo, no tags."""
    import subprocess

    import soundfile

    music = synthetic_music(seconds, rng=np.random.default_rng(0), sample_rate=44100)
    wav = folder / "music.wav"
    soundfile.write(wav, np.stack([music, music], axis=1), 44100)
    mp3 = folder / "music.mp3"
    decode = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(wav)]
    encode = ["-c:a", "libmp3lame", "-b:a", "128k", "-write_xing", "0", "-id3v2_version", "0"]
    subprocess.run([*decode, *encode, str(mp3)], check=True)
    return mp3.read_bytes()


def answer_like_icecast(
    connection: socket.socket, body: bytes, *, realtime: bool, packet_bytes: int = ICY_METAINT
) -> None:
    """Answer one HTTP request: ``body`` once, then close.

    With ``realtime``, like an Icecast mount: paced to 128 kbit/s in ``packet_bytes``,
    no length, ICY titles (``StreamTitle='Song N'``) every :data:`ICY_METAINT` bytes
    when the client asks for them. Without, like a web server with a static file.
    """
    with connection:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = connection.recv(4096)
            if not chunk:
                return
            request += chunk
        icy = realtime and b"icy-metadata: 1" in request.lower()
        header = b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\n"
        if not realtime:
            header += f"Content-Length: {len(body)}\r\n".encode()
        elif icy:
            header += f"icy-br: 128\r\nicy-metaint: {ICY_METAINT}\r\n".encode()
        connection.sendall(header + b"\r\n")
        started = time.monotonic()
        sent = 0
        try:
            while sent < len(body):
                if realtime:
                    delay = started + sent / MP3_BYTES_PER_SECOND - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                end = min(sent + packet_bytes, len(body), (sent // ICY_METAINT + 1) * ICY_METAINT)
                connection.sendall(body[sent:end])
                sent = end
                if icy and sent % ICY_METAINT == 0:
                    text = f"StreamTitle='Song {sent // ICY_METAINT}';".encode()
                    text += b"\0" * (-len(text) % 16)
                    connection.sendall(bytes([len(text) // 16]) + text)
        except OSError:
            return
