"""Per-hop cost of streaming musicnn against recomputing the whole window, on both backends.

    .venv/bin/python -m benchmarks.streaming_hop [--model NAME] [--repeats N] [--no-onnx]

For hops of 0.5 s (31 frames) and 1 s (62 frames) and batches of 1 and 16
streams, each repetition pushes one hop through
:class:`model.streaming.StreamingMusicnn` on TensorFlow (the Keras network) and
on ONNX Runtime (its ``streaming.onnx`` step, :func:`model.onnx.load_streaming_step`),
and, interleaved with them, recomputes every stream's current window through
the TensorFlow tagger and the ONNX Runtime tagger of the same model (exact
mode on either ``model.backend``).  The baseline is exact mode on TensorFlow:
the table gives each path's median ms and the median of its paired ratios to
the baseline (how many times less time it takes), plus the largest and mean
absolute difference between the streamed probabilities (ONNX step) and the
exact ones of the same window, and between the two steps' probabilities.
Synthetic music-like signals through :func:`model.log_mel`.  Timings are
noisy on a shared machine: compare ratios, not milliseconds.  The FLOP ratio
column is the speed-up the arithmetic allows (window / hop frames: the front
and mid end are nearly all of it), and the GFLOP/s columns show how fast the
TensorFlow paths run it; a hop's convolutions are small, so they run slower
per FLOP.  The CPU and the load average are printed with the table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.common import cpu_description, load_description, synthetic_music

if TYPE_CHECKING:
    from model.tagger import BaseTagger

HOPS_SECONDS = (0.5, 1.0)
#: Forward FLOPs of MSD_musicnn per full 187-frame window (TensorFlow's profiler).
WINDOW_GFLOP = 2.81
BATCHES = (1, 16)
#: The timed paths; the first is the baseline.
PATHS = ("TF exact", "TF stream", "ONNX exact", "ONNX stream")
#: A timed path: (each stream's new frames, the streams' current windows) -> probabilities.
Path = Callable[[list[np.ndarray], np.ndarray], np.ndarray]


@dataclass(frozen=True)
class HopResult:
    hop_frames: int
    batch: int
    ms: dict[str, float]  # median ms per path
    speed_up: dict[str, float]  # median of baseline time / path time, paired
    max_abs_diff: float  # ONNX (or TF) stream against TF exact
    mean_abs_diff: float
    steps_abs_diff: float  # ONNX stream against TF stream


def measure(
    paths: dict[str, Path],
    mels: list[np.ndarray],
    *,
    window: int,
    lookahead: int,
    hop_frames: int,
    repeats: int,
) -> HopResult:
    """Interleave every path over ``len(mels)`` streams for ``repeats`` hops.

    A path takes the hop's new frames per stream and the streams' current
    windows and returns their probabilities (a streaming path pushes the hop,
    an exact one recomputes the windows).
    """
    position = window + lookahead
    for name, run in paths.items():
        if "stream" in name:  # fill the caches up to the first window and its look-ahead
            run([mel[:position] for mel in mels], np.zeros(0))
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    diffs, step_diffs = [], []
    for _ in range(repeats):
        hop = [mel[position : position + hop_frames] for mel in mels]
        position += hop_frames
        end = position - lookahead
        windows = np.stack([mel[end - window : end] for mel in mels])
        outputs = {}
        for name, run in paths.items():
            started = time.perf_counter()
            outputs[name] = run(hop, windows)
            seconds[name].append(time.perf_counter() - started)
        streamed = outputs.get("ONNX stream", outputs["TF stream"])
        diffs.append(np.abs(streamed - outputs["TF exact"]))
        if "ONNX stream" in outputs:
            step_diffs.append(np.abs(outputs["ONNX stream"] - outputs["TF stream"]))
    base = np.array(seconds[PATHS[0]])
    diff = np.stack(diffs)
    return HopResult(
        hop_frames=hop_frames,
        batch=len(mels),
        ms={name: 1e3 * float(np.median(values)) for name, values in seconds.items()},
        speed_up={name: float(np.median(base / np.array(v))) for name, v in seconds.items()},
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        steps_abs_diff=float(np.max(step_diffs)) if step_diffs else float("nan"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MSD_musicnn")
    parser.add_argument("--repeats", type=int, default=15, help="hops timed per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-onnx", dest="onnx", action="store_false", help="skip the ONNX Runtime paths"
    )
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_description()}")
    print(f"start: {load_description()}", flush=True)

    from model import load_tagger, log_mel
    from model.onnx import load_streaming_step
    from model.streaming import StreamingMusicnn

    tagger = load_tagger(args.model, backend="tensorflow")
    spec = tagger.contract.features
    steps = {"TF": StreamingMusicnn(tagger.network, window_frames=tagger.contract.window_frames)}
    taggers: dict[str, BaseTagger] = {"TF": tagger}
    if args.onnx:
        onnx = load_tagger(args.model, backend="onnxruntime")
        assert onnx.folder is not None
        taggers["ONNX"] = onnx
        steps["ONNX"] = load_streaming_step(onnx.folder, onnx.contract)
    streaming = steps["TF"]
    rng = np.random.default_rng(args.seed)
    hops = [spec.frames_for(seconds) for seconds in HOPS_SECONDS]
    needed = streaming.window_frames + streaming.lookahead_frames + (args.repeats + 2) * max(hops)
    seconds = needed * spec.frame_seconds + 1
    mels = [log_mel(synthetic_music(seconds, rng=rng), spec=spec) for _ in range(max(BATCHES))]

    def paths_for(batch: int) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        for backend in taggers:
            model, step = taggers[backend], steps[backend]
            caches = [step.new_cache() for _ in range(batch)]

            def exact(hop: list[np.ndarray], windows: np.ndarray, model=model) -> np.ndarray:
                return model.predict(windows)

            def push(
                hop: list[np.ndarray], windows: np.ndarray, step=step, caches=caches
            ) -> np.ndarray:
                return np.stack([p for p in step.push(caches, hop) if p is not None] or [[]])

            paths[f"{backend} exact"], paths[f"{backend} stream"] = exact, push
        return {name: paths[name] for name in PATHS if name in paths}

    rows = []
    for hop_seconds, hop in zip(HOPS_SECONDS, hops, strict=True):
        for batch in BATCHES:
            paths = paths_for(batch)
            measure(  # trace and warm every shape once, untimed
                paths_for(batch), mels[:batch], window=streaming.window_frames,
                lookahead=streaming.lookahead_frames, hop_frames=hop, repeats=2,
            )  # fmt: skip
            row = measure(
                paths, mels[:batch], window=streaming.window_frames,
                lookahead=streaming.lookahead_frames, hop_frames=hop, repeats=args.repeats,
            )  # fmt: skip
            rows.append((hop_seconds, hop, batch, row))
    latency_s = streaming.lookahead_frames * spec.frame_seconds
    print(f"end: {load_description()}")
    print(
        f"model={tagger.name} window={streaming.window_frames} frames, look-ahead "
        f"{streaming.lookahead_frames} frames = {latency_s:.3f} s added latency (streaming); "
        f"medians of {args.repeats} interleaved hops; x = {PATHS[0]} time / this path's"
    )
    names = [name for name in PATHS if name in rows[0][3].ms]
    print(
        f"{'hop':>10} {'streams':>7} "
        + " ".join(f"{name + ' ms':>15} {'x':>6}" for name in names)
        + f" {'FLOP ratio':>10} {'TF stream GFLOP/s':>17} {'TF exact GFLOP/s':>16} "
        f"{'max |dp|':>9} {'mean |dp|':>9} {'steps |dp|':>10}"
    )
    for hop_seconds, hop, batch, row in rows:
        # The front and mid end are nearly all the arithmetic, and a hop runs them
        # on hop / window of the frames: the speed-up the arithmetic allows.
        hop_gflop = batch * WINDOW_GFLOP * hop / streaming.window_frames
        print(
            f"{hop_seconds:4.1f} s/{hop:>3} {batch:>7} "
            + " ".join(f"{row.ms[name]:15.2f} {row.speed_up[name]:5.2f}x" for name in names)
            + f" {streaming.window_frames / hop:9.2f}x "
            f"{hop_gflop / row.ms['TF stream'] * 1e3:17.0f} "
            f"{batch * WINDOW_GFLOP / row.ms['TF exact'] * 1e3:16.0f} {row.max_abs_diff:9.4f} "
            f"{row.mean_abs_diff:9.5f} {row.steps_abs_diff:10.2e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
