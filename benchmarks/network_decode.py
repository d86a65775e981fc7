"""CPU per network stream: Debian's ffmpeg as a subprocess against PyAV, on 128 kbit/s mp3.

    .venv/bin/python -m benchmarks.network_decode [--seconds 60] [--repeats 3] [--realtime]

A child process serves seeded synthetic music (:func:`benchmarks.common.synthetic_music`)
encoded by ffmpeg as constant 128 kbit/s mp3, the way Icecast serves a mount: ``HTTP/1.0
200 OK`` without a length and, when asked with ``Icy-MetaData: 1``, a metadata block every
16000 bytes.  Each way of decoding reads it to the end, to mono float32 at 16 kHz:

* ``subprocess + ICY reader``: :class:`streamer.network.NetworkSource` as it follows a live
  station: Python reads the socket, cuts out the metadata, pipes the mp3 to ``ffmpeg``;
* ``subprocess reads URL``: the same source on its static/HLS path, ffmpeg doing the HTTP;
* ``PyAV in-process``: ``av.open(url)``, decode, ``av.AudioResampler`` to 16 kHz mono
  (skipped when PyAV is not installed: ``pip install av``).

The CPU time of this process and of its finished children (ffmpeg), not the server's, is
divided by the seconds of audio decoded: the fraction of one core a real-time stream costs.
By default the server sends as fast as it can (the decoding cost alone); ``--realtime``
paces it at 16000 bytes/s like a live station, so that waking up per packet is counted too
(each repeat then takes ``--seconds`` of wall time).  The table gives the median of the
repeats and each row's ratio to the first (the path ``streamer.network`` takes for a station).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import resource
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import (
    MP3_BYTES_PER_SECOND,
    answer_like_icecast,
    cpu_description,
    make_mp3,
)

BYTES_PER_SECOND = MP3_BYTES_PER_SECOND


def serve(listener: socket.socket, body: bytes, realtime: bool) -> None:
    """Child process: answer each connection like an Icecast mount, until killed."""
    while True:
        connection, _ = listener.accept()
        threading.Thread(
            target=answer_like_icecast,
            args=(connection, body),
            kwargs={"realtime": realtime},
            daemon=True,
        ).start()


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def with_network_source_static(url: str) -> float:
    """Decode with :class:`NetworkSource` on its static path (ffmpeg reads the URL)."""
    from streamer.network import NetworkSource

    source = NetworkSource(url, live=False, fast=True, max_attempts=1, stall_timeout_s=30)
    frames = 0
    try:
        for block in source.blocks(threading.Event()):
            frames += block.samples.size
    finally:
        source.close()
    return frames / source.sample_rate


def with_network_source_live(url: str) -> float:
    """The live path ends with a drop (the server closes); stop at the first one."""
    from streamer.network import NetworkSource

    stop = threading.Event()
    source = NetworkSource(url, live=True, max_attempts=1, stall_timeout_s=30)
    source.on_event = lambda event: stop.set() if event.kind == "source_down" else None
    frames = 0
    try:
        for block in source.blocks(stop):
            frames += block.samples.size
    finally:
        source.close()
    return frames / source.sample_rate


def with_pyav(url: str) -> float:
    import av

    frames = 0
    with av.open(url, timeout=30) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        try:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    frames += out.to_ndarray().shape[-1]
        except OSError:  # FFmpeg's http reports EIO when a length-less ICY stream closes
            pass
        for out in resampler.resample(None):
            frames += out.to_ndarray().shape[-1]
    return frames / 16000


def measure(run: Callable[[str], float], url: str, repeats: int) -> tuple[float, float]:
    """Median CPU seconds per audio second over ``repeats`` runs, and the audio seconds."""
    ratios = []
    audio_s = 0.0
    for _ in range(repeats):
        before = cpu_seconds()
        audio_s = run(url)
        ratios.append((cpu_seconds() - before) / audio_s)
    return float(np.median(ratios)), audio_s


def ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True)
    return out.stdout.split("\n", 1)[0].replace(" Copyright", ",").split(",")[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.network_decode")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row (median)")
    parser.add_argument(
        "--realtime", action="store_true", help="serve at 128 kbit/s like a live station"
    )
    args = parser.parse_args(argv)
    # The live path ends each run with a logged drop (the server closes): keep the table clean.
    logging.getLogger("streamer.network").setLevel(logging.ERROR)
    try:
        import av

        codec = ".".join(map(str, av.library_versions["libavcodec"]))
        pyav = f"PyAV {av.__version__} (its own libavcodec {codec})"
    except ImportError:
        pyav = ""
    with tempfile.TemporaryDirectory() as folder:
        body = make_mp3(args.seconds, Path(folder))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/live.mp3"
    server = multiprocessing.get_context("fork").Process(
        target=serve, args=(listener, body, args.realtime), daemon=True
    )
    server.start()
    rows: list[tuple[str, Callable[[str], float]]] = [
        ("subprocess + ICY reader", with_network_source_live),
        ("subprocess reads URL", with_network_source_static),
    ]
    if pyav:
        rows.append(("PyAV in-process", with_pyav))
    print(f"CPU: {cpu_description()}")
    print(f"decoders: {ffmpeg_version()} (Debian){'; ' + pyav if pyav else '; PyAV not installed'}")
    print(
        f"input: {len(body) / BYTES_PER_SECOND:.0f} s of 128 kbit/s mp3 over HTTP"
        f"{' at real time' if args.realtime else ' as fast as it goes'}; "
        f"median of {args.repeats}"
    )
    print(f"{'path':<26} {'audio s':>8} {'CPU s / audio s':>16} {'% of a core':>12} {'ratio':>6}")
    baseline = 0.0
    try:
        for name, run in rows:
            per_second, audio_s = measure(run, url, args.repeats)
            baseline = baseline or per_second
            print(
                f"{name:<26} {audio_s:>8.1f} {per_second:>16.5f} {100 * per_second:>11.2f}% "
                f"{per_second / baseline:>6.2f}"
            )
    finally:
        server.kill()
        server.join()
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
