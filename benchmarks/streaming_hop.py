"""Per-hop cost of streaming musicnn against recomputing the whole window.

    .venv/bin/python -m benchmarks.streaming_hop [--model NAME] [--repeats N] [--seconds S]

For hops of 0.5 s (31 frames) and 1 s (62 frames) and batches of 1 and 16
streams, each repetition pushes one hop through :class:`model.streaming.StreamingMusicnn`
and, interleaved with it, recomputes every stream's current window through the
same :class:`model.Tagger` (the exact mode).  The table gives the medians and
the median of the paired ratios, plus the absolute difference between the
streaming probabilities and the exact ones of the same window over every push
(synthetic music-like signals through :func:`model.log_mel`).  Timings are
noisy on a shared machine: compare ratios, not milliseconds.  The FLOP ratio
column is the speed-up the arithmetic allows (window / hop frames: the front
and mid end are nearly all of it), and the GFLOP/s columns show how fast each
path runs it; a hop's convolutions are small, so they run slower per FLOP.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.common import synthetic_music

if TYPE_CHECKING:
    from model.streaming import StreamingMusicnn
    from model.tagger import Tagger

HOPS_SECONDS = (0.5, 1.0)
#: Forward FLOPs of MSD_musicnn per full 187-frame window (TensorFlow's profiler).
WINDOW_GFLOP = 2.81
BATCHES = (1, 16)


@dataclass(frozen=True)
class HopResult:
    hop_frames: int
    batch: int
    streaming_ms: float
    full_ms: float
    ratio: float
    max_abs_diff: float
    mean_abs_diff: float


def measure(
    tagger: Tagger,
    streaming: StreamingMusicnn,
    mels: list[np.ndarray],
    *,
    hop_frames: int,
    repeats: int,
) -> HopResult:
    """Interleave streaming hops and full recomputations over ``len(mels)`` streams."""
    window = streaming.window_frames
    lookahead = streaming.lookahead_frames
    states = [streaming.new_cache() for _ in mels]
    position = window + lookahead
    streaming.push(states, [mel[:position] for mel in mels])
    stream_s, full_s, diffs = [], [], []
    for _ in range(repeats):
        hop = [mel[position : position + hop_frames] for mel in mels]
        position += hop_frames
        end = position - lookahead
        windows = np.stack([mel[end - window : end] for mel in mels])
        started = time.perf_counter()
        outputs = streaming.push(states, hop)
        stream_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        exact = tagger.predict(windows)
        full_s.append(time.perf_counter() - started)
        diffs += [np.abs(p - e) for p, e in zip(outputs, exact, strict=True) if p is not None]
    diff = np.stack(diffs)
    return HopResult(
        hop_frames=hop_frames,
        batch=len(mels),
        streaming_ms=1e3 * float(np.median(stream_s)),
        full_ms=1e3 * float(np.median(full_s)),
        ratio=float(np.median(np.array(full_s) / np.array(stream_s))),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MSD_musicnn")
    parser.add_argument("--repeats", type=int, default=15, help="hops timed per row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from model import load_tagger, log_mel
    from model.streaming import StreamingMusicnn

    tagger = load_tagger(args.model)
    spec = tagger.contract.features
    streaming = StreamingMusicnn(tagger.network, window_frames=tagger.contract.window_frames)
    rng = np.random.default_rng(args.seed)
    hops = [spec.frames_for(seconds) for seconds in HOPS_SECONDS]
    needed = streaming.window_frames + streaming.lookahead_frames + args.repeats * max(hops)
    seconds = needed * spec.frame_seconds + 1
    mels = [log_mel(synthetic_music(seconds, rng=rng), spec=spec) for _ in range(max(BATCHES))]
    # Trace every shape once before timing.
    for batch in BATCHES:
        tagger.predict(np.stack([mel[: streaming.window_frames] for mel in mels[:batch]]))
        states = [streaming.new_cache() for _ in range(batch)]
        for hop in hops:
            streaming.push(states, [mel[:hop] for mel in mels[:batch]])

    latency_s = streaming.lookahead_frames * spec.frame_seconds
    print(
        f"model={tagger.name} window={streaming.window_frames} frames, look-ahead "
        f"{streaming.lookahead_frames} frames = {latency_s:.3f} s added latency; "
        f"medians of {args.repeats} interleaved hops"
    )
    print(
        f"{'hop':>10} {'streams':>7} {'stream ms':>10} {'full ms':>9} {'speed-up':>8} "
        f"{'FLOP ratio':>10} {'stream GFLOP/s':>14} {'full GFLOP/s':>12} "
        f"{'max |dp|':>9} {'mean |dp|':>9}"
    )
    for hop_seconds, hop in zip(HOPS_SECONDS, hops, strict=True):
        for batch in BATCHES:
            row = measure(tagger, streaming, mels[:batch], hop_frames=hop, repeats=args.repeats)
            # The front and mid end are nearly all the arithmetic, and a hop runs them
            # on hop / window of the frames: the speed-up the arithmetic allows.
            hop_gflop = batch * WINDOW_GFLOP * hop / streaming.window_frames
            print(
                f"{hop_seconds:4.1f} s/{hop:>3} {batch:>7} {row.streaming_ms:10.2f} "
                f"{row.full_ms:9.2f} {row.ratio:7.2f}x {streaming.window_frames / hop:9.2f}x "
                f"{hop_gflop / row.streaming_ms * 1e3:14.0f} "
                f"{batch * WINDOW_GFLOP / row.full_ms * 1e3:12.0f} {row.max_abs_diff:9.4f} "
                f"{row.mean_abs_diff:9.5f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
