"""bfloat16 against float32: model time per window and per streaming hop, and how far tags move.

    .venv/bin/python -m benchmarks.precision [--repeats 20] [--seconds 60]

``model.precision = "bfloat16"`` turns on TensorFlow's oneDNN automatic mixed
precision (convolutions and matrix products in bfloat16, accumulated in
float32).  The switch is process-wide, so each precision runs in its own
subprocess of this script over the same seeded synthetic music
(:func:`benchmarks.common.synthetic_music`, 16 streams): ``Tagger.predict``
per window at batch 1 and 16, and the streaming model per 0.5 s hop for 1 and
16 streams (:func:`benchmarks.streaming_hop.measure`).  The parent prints the
medians, the speed-up against float32 (the baseline, run in the same
invocation) and how far bfloat16's probabilities are from float32's over every
whole window of the music: max and mean absolute difference and how often the
top tag is the same.  bfloat16 pays only on CPUs with bfloat16 instructions
(AVX512_BF16 or AMX); the first line says whether this one has them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, cpu_description

STREAMS = 16
HOP_SECONDS = 0.5
PRECISIONS = ("float32", "bfloat16")


def child(precision: str, out: Path, *, repeats: int, seconds: float) -> None:
    """Measure one precision in this process and save the results to ``out`` (.npz)."""
    from benchmarks.common import median_ms, synthetic_music
    from model import load_tagger, log_mel
    from model.streaming import StreamingMusicnn

    tagger = load_tagger("MSD_musicnn", precision=precision)
    spec = tagger.contract.features
    rng = np.random.default_rng(0)
    mels = [log_mel(synthetic_music(seconds, rng=rng), spec=spec) for _ in range(STREAMS)]
    frames = tagger.contract.window_frames
    windows = np.stack([mel[:frames] for mel in mels])
    results = {
        "predict_1": median_ms(lambda: tagger.predict(windows[:1]), repeats),
        "predict_16": median_ms(lambda: tagger.predict(windows), repeats) / STREAMS,
    }
    streaming = StreamingMusicnn(tagger.network, window_frames=frames)
    hop = spec.frames_for(HOP_SECONDS)
    for batch in (1, STREAMS):
        results[f"hop_{batch}"] = streaming_hop_ms(streaming, mels[:batch], hop, repeats)
    probabilities = np.concatenate([tagger.tag_mel(mel)[1] for mel in mels])
    arrays = {key: np.array(value) for key, value in results.items()}
    np.savez(out, probabilities=probabilities, **arrays)  # type: ignore[arg-type]


def streaming_hop_ms(streaming: Any, mels: list[np.ndarray], hop: int, repeats: int) -> float:
    """Median milliseconds of one streaming step of ``hop`` frames over ``len(mels)`` streams."""
    states = [streaming.new_cache() for _ in mels]
    position = streaming.window_frames + streaming.lookahead_frames
    streaming.push(states, [mel[:position] for mel in mels])  # fill the caches, trace shapes
    seconds = []
    for _ in range(min(repeats, (min(len(mel) for mel in mels) - position) // hop)):
        step = [mel[position : position + hop] for mel in mels]
        position += hop
        started = time.perf_counter()
        streaming.push(states, step)
        seconds.append(time.perf_counter() - started)
    return 1e3 * float(np.median(seconds))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per row")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of music per stream")
    parser.add_argument("--child", choices=PRECISIONS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.out, repeats=args.repeats, seconds=args.seconds)
        return 0

    runs = {}
    with tempfile.TemporaryDirectory(prefix="tagstream-precision-") as folder:
        for precision in PRECISIONS:
            out = Path(folder) / f"{precision}.npz"
            subprocess.run(
                [sys.executable, "-m", "benchmarks.precision", "--child", precision,
                 "--out", str(out), "--repeats", str(args.repeats), "--seconds", str(args.seconds)],
                cwd=ROOT, check=True,
            )  # fmt: skip
            with np.load(out) as data:
                runs[precision] = {key: data[key] for key in data.files}
    base, fast = runs["float32"], runs["bfloat16"]
    print(f"CPU: {cpu_description()}")
    print(f"{'MSD_musicnn, median ms':<40} {'float32':>8} {'bfloat16':>9} {'speed-up':>8}")
    rows = (
        ("Tagger.predict, batch 1, per window", "predict_1"),
        (f"Tagger.predict, batch {STREAMS}, per window", "predict_16"),
        (f"streaming {HOP_SECONDS:g} s hop, 1 stream", "hop_1"),
        (f"streaming {HOP_SECONDS:g} s hop, {STREAMS} streams", f"hop_{STREAMS}"),
    )
    for label, key in rows:
        ratio = float(base[key]) / float(fast[key])
        print(f"{label:<40} {float(base[key]):8.2f} {float(fast[key]):9.2f} {ratio:7.2f}x")
    diff = np.abs(base["probabilities"] - fast["probabilities"])
    same_top = np.mean(base["probabilities"].argmax(1) == fast["probabilities"].argmax(1))
    print(
        f"probabilities over {len(diff)} windows: max |dp| {diff.max():.4f}, "
        f"mean |dp| {diff.mean():.5f}, same top tag {100 * same_top:.1f} %"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
