"""File tagging speed in audio seconds per wall-clock second, against musicnn's own pipeline.

    .venv/bin/python -m benchmarks.file_tagging [--folder DIR] [--files N] [--repeats N]

Without ``--folder``, ``--files`` synthetic music-like files of 30 s (44.1 kHz
stereo wav, so every pipeline decodes and resamples) are written to a temporary
folder.  Three pipelines tag every file, interleaved ``--repeats`` times after
one untimed pass:

* baseline, musicnn's way: ``librosa.load`` at 16 kHz, ``librosa``'s mel
  spectrogram, ``log10(1 + 10000 mel)``, then all of a file's windows through
  the original TF-1 graph in one batch;
* ours: :func:`model.tagging.tag_file` (``model.audio`` decoding, ``log_mel``,
  ``Tagger.predict`` in batches of 32);
* ours, overlapped: :func:`model.tagging.tag_files`, what ``python -m tools.tag``
  runs: decoding and log-mel of the next files in a thread pool while the model
  tags the current one.

Ours run once per ``--backends`` entry ("tensorflow": ``model.keras`` through
``Tagger``; "onnxruntime": ``model.onnx`` through ``OnnxTagger``), in the same
run.  The CPU (model, cores, instruction sets) is printed with the table,
which gives the median speed (x real time), the ratio to the baseline and the
ratio to the TensorFlow ``tools.tag`` pipeline measured in the same run, with
the load average at the start and the end.
``--precision bfloat16`` is TensorFlow's process-wide mixed-precision switch,
so it speeds up the baseline's TF-1 graph too: compare a bfloat16 run with a
float32 run, not with its own baseline.
A ``--folder`` that does not exist is skipped with a message (exit status 0).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from model.tagger import BaseTagger

Pipeline = Callable[[list[Path]], dict[Path, np.ndarray]]


def write_synthetic_folder(folder: Path, *, files: int, seconds: float, seed: int) -> list[Path]:
    """Write ``files`` music-like 44.1 kHz stereo wav files of ``seconds`` each."""
    import soundfile as sf

    from benchmarks.common import synthetic_music

    rng = np.random.default_rng(seed)
    paths = []
    for index in range(files):
        left = synthetic_music(seconds, rng=rng, sample_rate=44100)
        right = 0.8 * left + 0.2 * synthetic_music(seconds, rng=rng, sample_rate=44100)
        path = folder / f"synthetic_{index:02d}.wav"
        sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
        paths.append(path)
    return paths


def musicnn_pipeline(model: str) -> tuple[Pipeline, Callable[[], None]]:
    """musicnn 0.1.0's file tagging: librosa decoding and features, the original graph."""
    import librosa

    from model.reference import OriginalGraph

    graph = OriginalGraph(model)

    def run(paths: list[Path]) -> dict[Path, np.ndarray]:
        results = {}
        for path in paths:
            y, _ = librosa.load(path, sr=16000)
            mel = librosa.feature.melspectrogram(
                y=y, sr=16000, hop_length=256, n_fft=512, n_mels=96
            ).T
            rep = np.log10(10000 * mel + 1).astype(np.float32)
            windows = [rep[s : s + 187] for s in range(0, len(rep) - 187 + 1, 187)]
            results[path] = graph.predict(np.stack(windows)).mean(axis=0)
        return results

    return run, graph.close


def tag_file_pipeline(tagger: BaseTagger) -> Pipeline:
    """Ours, one file after another: :func:`model.tagging.tag_file`."""
    from model.tagging import tag_file

    def run(paths: list[Path]) -> dict[Path, np.ndarray]:
        return {
            path: np.array(list(tag_file(path, tagger).tags.values()), dtype=np.float32)
            for path in paths
        }

    return run


def overlapped_pipeline(tagger: BaseTagger, *, workers: int) -> Pipeline:
    """Ours with decoding overlapped: :func:`model.tagging.tag_files` (what the CLI runs)."""
    from model.tagging import FileTags, tag_files

    def run(paths: list[Path]) -> dict[Path, np.ndarray]:
        results = {}
        for path, result in tag_files(paths, tagger, decode_threads=workers):
            assert isinstance(result, FileTags), result
            results[Path(path)] = np.array(list(result.tags.values()), dtype=np.float32)
        return results

    return run


def audio_seconds(paths: Sequence[Path]) -> float:
    import soundfile as sf

    return float(sum(sf.info(str(path)).duration for path in paths))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="tag the audio files under DIR instead")
    parser.add_argument("--files", type=int, default=20, help="synthetic files to write")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each")
    parser.add_argument("--model", default="MSD_musicnn", choices=("MSD_musicnn", "MSD_vgg"))
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per pipeline")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (overlapped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="model.precision of our TensorFlow pipelines (bfloat16 needs AVX512_BF16 or AMX)",
    )
    parser.add_argument(
        "--backends", nargs="+", default=["tensorflow", "onnxruntime"],
        choices=("tensorflow", "onnxruntime"), help="model.backend of our pipelines",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.folder is not None and not args.folder.is_dir():
        print(f"skipped: {args.folder} is absent")
        return 0

    from benchmarks.common import cpu_description, load_description
    from model import load_tagger
    from model.audio import AUDIO_EXTENSIONS

    start_load = load_description()
    with tempfile.TemporaryDirectory(prefix="tagstream-bench-") as scratch:
        if args.folder is None:
            paths = write_synthetic_folder(
                Path(scratch), files=args.files, seconds=args.seconds, seed=args.seed
            )
        else:
            paths = sorted(
                p for p in args.folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS
            )
            paths = [p for p in paths if audio_seconds([p]) >= 3.0]  # whole windows only
        if not paths:
            print(f"skipped: no audio files of 3 s or more under {args.folder}")
            return 0
        baseline, close = musicnn_pipeline(args.model)
        pipelines: dict[str, Pipeline] = {"musicnn (librosa + TF-1 graph)": baseline}
        for backend in args.backends:
            precision = args.precision if backend == "tensorflow" else "float32"
            tagger = load_tagger(args.model, precision=precision, backend=backend)
            pipelines[f"{backend}: tag_file"] = tag_file_pipeline(tagger)
            pipelines[f"{backend}: tools.tag ({args.workers} threads)"] = overlapped_pipeline(
                tagger, workers=args.workers
            )
        try:
            outputs = {name: run(paths) for name, run in pipelines.items()}  # untimed pass
            seconds: dict[str, list[float]] = {name: [] for name in pipelines}
            for _ in range(args.repeats):
                for name, run in pipelines.items():
                    started = time.perf_counter()
                    run(paths)
                    seconds[name].append(time.perf_counter() - started)
        finally:
            close()

    total = audio_seconds(paths) if args.folder is not None else args.files * args.seconds
    reference = np.stack(list(outputs[next(iter(pipelines))].values()))
    print(f"CPU: {cpu_description()}")
    print(f"start: {start_load}; end: {load_description()}")
    print(
        f"{len(paths)} files, {total:.0f} s of audio, model {args.model} ({args.precision}); "
        f"median of {args.repeats} interleaved passes; vs TF = against tensorflow: tools.tag"
    )
    print(
        f"{'pipeline':<42} {'wall s':>7} {'x real time':>12} {'vs baseline':>11} {'vs TF':>6} "
        f"{'max |dp|':>9}"
    )
    baseline_s = float(np.median(seconds[next(iter(pipelines))]))
    tf_name = f"tensorflow: tools.tag ({args.workers} threads)"
    tf_s = float(np.median(seconds[tf_name])) if tf_name in seconds else float("nan")
    for name, times in seconds.items():
        wall = float(np.median(times))
        diff = np.abs(np.stack(list(outputs[name].values())) - reference).max()
        print(
            f"{name:<42} {wall:7.2f} {total / wall:11.1f}x {baseline_s / wall:10.2f}x "
            f"{tf_s / wall:5.2f}x {diff:9.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
