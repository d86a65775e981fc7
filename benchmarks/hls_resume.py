"""Where a resumed VOD HLS stream starts again: the source's seek against a plain ``-ss``.

    .venv/bin/python -m benchmarks.hls_resume [--seconds 12] [--segment-seconds 2]
                                              [--positions 10]

A static stream that drops is resumed where its audio stopped.  FFmpeg 5.1's HLS
demuxer seeks to the start of the segment that holds a position, so a plain ``-ss``
sends up to one segment again (the baseline); :func:`streamer.network.resume_options`
seeks just inside the segment before the position and cuts the decoded audio up to it.

A programme of seeded noise under a slow, irregular envelope (no two stretches alike,
so each resumed start has one place in it) is encoded by Debian's ffmpeg as a VOD HLS
playlist of MPEG-TS segments (AAC, ``--segment-seconds``), as ``tests/test_hls_titles.py``
makes them.  It is decoded once from its start, then resumed at ``--positions`` evenly
spread positions plus three just after segment starts, both ways, with the source's
own output options (mono float32, 16 kHz).  Each resumed decode is placed in the full one
by cross-correlation of its first half second (after 50 ms, where the decoder settles):
the error is that place minus the position (negative: audio sent twice; positive: lost).
The table lists each position; the summary gives the largest error of each way and
their ratio.  The CPU is printed with it (ffmpeg's speed does not change the figures).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from benchmarks.common import cpu_description
from streamer.network import decoded_audio_options, resume_options, segment_starts

RATE = 16000
#: The resumed decode's first samples, skipped before the part that is placed.
SETTLE = RATE // 20
PROBE = RATE // 2


def make_programme(folder: Path, seconds: float, segment_s: float) -> Path:
    """A VOD playlist of ``seconds`` of programme in ``segment_s`` MPEG-TS segments."""
    rng = np.random.default_rng(7)
    rate = 44100
    t = np.arange(round(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.37 * t + np.sin(2 * np.pi * 0.11 * t)) ** 2
    audio = (0.2 * rng.standard_normal(t.size) * envelope).astype(np.float32)
    wav = folder / "programme.wav"
    soundfile.write(wav, np.stack([audio, audio], axis=1), rate)
    playlist = folder / "index.m3u8"
    subprocess.run(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(wav)),
            *("-c:a", "aac", "-b:a", "64k", "-f", "hls", "-hls_time", f"{segment_s:g}"),
            *("-hls_playlist_type", "vod", "-hls_segment_filename", str(folder / "seg%03d.ts")),
            str(playlist),
        ],
        check=True,
        timeout=300,
    )
    return playlist


def decode(playlist: Path, before: list[str], cut_s: float = 0.0) -> np.ndarray:
    """The playlist decoded as the source decodes it, with ``before`` ahead of the input."""
    cut = ["-af", f"atrim=start={cut_s:.6f}"] if cut_s > 0 else []
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *before]
    command += ["-i", str(playlist), *cut, *decoded_audio_options(RATE), "pipe:1"]
    result = subprocess.run(command, capture_output=True, check=True, timeout=300)
    return np.frombuffer(result.stdout, dtype="<f4")


def start_in(full: np.ndarray, resumed: np.ndarray) -> float:
    """Seconds into ``full`` where ``resumed`` starts (cross-correlation of its probe)."""
    probe = resumed[SETTLE : SETTLE + PROBE].astype(np.float64)
    n = 1 << int(np.ceil(np.log2(full.size + probe.size)))
    correlation = np.fft.irfft(np.fft.rfft(full, n) * np.conj(np.fft.rfft(probe, n)), n)
    lag = int(np.argmax(correlation[: full.size - probe.size]))
    return (lag - SETTLE) / RATE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hls_resume", description=__doc__)
    parser.add_argument("--seconds", type=float, default=12.0, help="length of the programme")
    parser.add_argument("--segment-seconds", type=float, default=2.0)
    parser.add_argument("--positions", type=int, default=10, help="evenly spread positions")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        parser.error("ffmpeg is not installed: apt-get install ffmpeg")

    print(cpu_description())
    with tempfile.TemporaryDirectory(prefix="tagstream-hls-resume-") as tmp:
        playlist = make_programme(Path(tmp), args.seconds, args.segment_seconds)
        starts = segment_starts(playlist.read_text())
        full = decode(playlist, [])
        last = args.seconds - 1.0
        positions = list(np.linspace(0.3, last, args.positions))
        positions += [starts[k] + 0.02 for k in (1, 2, 3) if k < len(starts)]
        rows = []
        for position in sorted(positions):
            before, cut_s = resume_options(starts, position)
            source = start_in(full, decode(playlist, before, cut_s)) - position
            plain = start_in(full, decode(playlist, ["-ss", f"{position:.6f}"])) - position
            rows.append((position, source, plain))
    print(
        f"\n{args.seconds:g} s programme, {len(starts)} segments of {args.segment_seconds:g} s "
        "(AAC in MPEG-TS); error = where the resumed audio starts - the position "
        "(< 0: sent twice, > 0: lost)\n"
    )
    header = f"{'position s':>10} {'source ms':>10} {'plain -ss ms':>13}"
    print(header)
    print("-" * len(header))
    for position, source, plain in rows:
        print(f"{position:10.3f} {source * 1000:10.1f} {plain * 1000:13.1f}")
    worst_source = max(abs(source) for _, source, _ in rows)
    worst_plain = max(abs(plain) for _, _, plain in rows)
    lost = sum(source > 0.001 for _, source, _ in rows)
    ratio = worst_plain / max(worst_source, 1e-4)
    print(
        f"\nlargest |error|: source {worst_source * 1000:.1f} ms, plain -ss "
        f"{worst_plain * 1000:.1f} ms; ratio plain / source = {ratio:.0f}x; "
        f"positions where the source lost audio: {lost} of {len(rows)}"
    )
    print(cpu_description())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
