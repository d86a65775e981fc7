"""Archive tagging throughput: tools.tag, the local engine and the Ray engine on the same files.

    .venv/bin/python -m benchmarks.archive [--files N] [--seconds S] [--backend B] [--no-ray]
                                           [--folder DIR] [--actors N]

Without ``--folder``, ``--files`` synthetic music-like 44.1 kHz stereo wav files
of ``--seconds`` each are written to a temporary folder (every run decodes and
resamples).  In one run, on the same files:

* ``decode only``: :func:`model.tagging.decode_file` in one thread (decoding,
  resampling, log-mel windows, no model): what one core feeds the model, the
  number that sizes CPUs per GPU actor;
* ``tools.tag``: its real ``main`` (``--json``), whose lines are timestamped;
* ``archive local``: :class:`archive.local.LocalEngine` into an
  :class:`archive.store.ArchiveStore` (what ``python -m tools.archive`` does),
  once per backend named by ``--backend`` (TensorFlow too, to compare with
  ``tools.tag`` on the same backend);
* ``archive ray``: :class:`archive.ray_engine.RayEngine` on a local Ray started
  here with every core (``ray.init``), the same store.

For each: ``start s`` from the command's or engine's start (model load, Ray's
actors) to the first result; ``files/s`` and ``audio-h/s`` in the steady state
(the results after the first batch of results over the time from the first
result to the last) and over the whole run (all results over the time from the
start);
``ms/file`` the steady time per file.  Ray's overhead per file is its steady
ms/file minus the local engine's on the same backend; memory per actor is the
peak resident size of each tagging actor's process (``ru_maxrss``, with the
model loaded); the driver's is this process's peak.  The CPU is named with the
table.  With ``--repeats N`` the whole sequence runs N times and each row shows its best
pass (on a shared machine, the least disturbed).  Numbers from one machine:
docs/SCALE.md keeps them.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Run:
    """One pipeline's timestamps."""

    name: str
    backend: str
    started: float
    stamps: list[float] = field(default_factory=list)
    extra: str = ""

    def steady_files_per_s(self) -> float:
        """Results after the first burst over the time from the first result to the last.

        Engines hand results over in batches (the Ray engine's actor calls): the results
        that come with the first one are not counted, so a bursty engine is not flattered.
        """
        first, last = self.stamps[0], self.stamps[-1]
        with_first = sum(1 for stamp in self.stamps if stamp - first < 0.005)
        later = len(self.stamps) - with_first
        return later / (last - first) if later and last > first else float("nan")

    def row(self, audio_s: float, n_files: int) -> str:
        steady = self.steady_files_per_s()
        whole = len(self.stamps) / (self.stamps[-1] - self.started)
        per_file_audio_h = audio_s / n_files / 3600
        return (
            f"{self.name:<28} {self.backend:<12} {self.stamps[0] - self.started:7.1f} "
            f"{steady:8.2f} {steady * per_file_audio_h:10.3f} {whole:8.2f} "
            f"{whole * per_file_audio_h:10.3f} {1e3 / steady:8.1f}  {self.extra}"
        )

    def ms_per_file(self) -> float:
        return 1e3 / self.steady_files_per_s()


class _StampedLines(io.StringIO):
    """A stdout that notes when each line is written (and keeps nothing)."""

    def __init__(self, stamps: list[float]) -> None:
        super().__init__()
        self.stamps = stamps

    def write(self, text: str) -> int:
        self.stamps.extend(time.monotonic() for _ in range(text.count("\n")))
        return len(text)


def write_files(folder: Path, *, files: int, seconds: float, seed: int) -> list[Path]:
    """``files`` synthetic 44.1 kHz stereo wav files of ``seconds`` each."""
    import soundfile as sf

    from benchmarks.common import synthetic_music

    rng = np.random.default_rng(seed)
    paths = []
    for index in range(files):
        left = synthetic_music(seconds, rng=rng, sample_rate=44100)
        right = 0.8 * left + 0.2 * synthetic_music(seconds, rng=rng, sample_rate=44100)
        path = folder / f"clip_{index:04d}.wav"
        sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
        paths.append(path)
    return paths


def run_tools_tag(paths: Sequence[Path], backend: str) -> Run:
    import tools.tag

    argv = [str(p) for p in paths] + ["--json", "--no-progress"]
    flags = tools.tag.build_parser()._option_string_actions
    if "--backend" in flags:
        argv += ["--backend", backend]
    else:
        backend = "tensorflow"  # tools.tag without --backend runs TensorFlow
    run = Run("tools.tag", backend, time.monotonic())
    status = tools.tag.main(argv, stdout=_StampedLines(run.stamps), stderr=io.StringIO())
    if status != 0:
        raise SystemExit(f"tools.tag failed with exit status {status}")
    return run


def run_decode_only(paths: Sequence[Path]) -> Run:
    """Decoding and log-mel windows only, one thread: what one CPU feeds a tagger per second."""
    from model.contract import ModelContract
    from model.tagger import resolve_model_folder
    from model.tagging import decode_file

    contract = ModelContract.load(
        resolve_model_folder("MSD_musicnn", cache_dir="~/.cache/tagstream")
    )
    run = Run("decode only (1 thread)", "-", time.monotonic())
    for path in paths:
        decode_file(path, contract)
        run.stamps.append(time.monotonic())
    return run


def run_engine(name: str, make_engine: Any, paths: Sequence[Path], out: Path, backend: str) -> Run:
    """Construct the engine (timed: model load or Ray actors) and tag into a fresh store."""
    from archive.inputs import expand_inputs
    from archive.store import ArchiveSettings, ArchiveStore, FileFailure
    from model.contract import MSD_TAGS

    files = list(expand_inputs([str(p) for p in paths]))
    settings = ArchiveSettings("MSD_musicnn", tuple(MSD_TAGS), 0.0, False, False)
    run = Run(name, backend, time.monotonic())
    engine = make_engine()
    try:
        with ArchiveStore(out, settings) as store:
            for file, result in engine.results(files, threading.Event()):
                if isinstance(result, FileFailure):
                    raise SystemExit(f"{file.path}: {result.reason}")
                store.add(file, result, backend=backend)
                run.stamps.append(time.monotonic())
        peaks = getattr(engine, "actor_peak_rss", {})
        if peaks:
            mib = ", ".join(f"{v / 2**20:.0f}" for v in peaks.values())
            run.extra = f"{len(peaks)} actor(s), peak MiB per actor: {mib}"
    finally:
        engine.close()
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="tag the audio files under DIR instead")
    parser.add_argument("--files", type=int, default=40, help="synthetic files to write")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each")
    parser.add_argument(
        "--backend",
        nargs="+",
        default=["onnxruntime", "tensorflow"],
        choices=("tensorflow", "onnxruntime"),
        help="backends of the archive engines (the first is Ray's)",
    )
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray engine")
    parser.add_argument("--actors", type=int, help="Ray tagging actors (default: the engine's)")
    parser.add_argument(
        "--files-per-batch",
        type=int,
        default=8,
        help="Ray: files per actor call (results come in bursts of this many; the steady "
        "speed needs several bursts)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="interleaved passes (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from benchmarks.common import cpu_description, proc_status_mib
    from model.audio import AUDIO_EXTENSIONS
    from tagstream import cli

    cli.setup_logging(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="tagstream-bench-") as scratch_name:
        scratch = Path(scratch_name)
        if args.folder is not None:
            if not args.folder.is_dir():
                print(f"skipped: {args.folder} is absent")
                return 0
            paths = sorted(
                p for p in args.folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS
            )
        else:
            (scratch / "in").mkdir()
            paths = write_files(
                scratch / "in", files=args.files, seconds=args.seconds, seed=args.seed
            )
        import soundfile as sf

        audio_s = float(sum(sf.info(str(p)).duration for p in paths))

        from archive.local import LocalEngine
        from model.tagger import load_tagger

        ray_started = float("nan")
        make_ray = None
        if not args.no_ray:
            import ray

            from archive.ray_engine import RayEngine
            from model.contract import ModelContract
            from model.tagger import resolve_model_folder

            began = time.monotonic()
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            ray_started = time.monotonic() - began
            from ray.data import DataContext

            DataContext.get_current().enable_progress_bars = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            contract = ModelContract.load(
                resolve_model_folder("MSD_musicnn", cache_dir="~/.cache/tagstream")
            )

            def make_ray() -> RayEngine:
                return RayEngine(
                    contract,
                    model="MSD_musicnn",
                    cache_dir="~/.cache/tagstream",
                    backend=args.backend[0],
                    actors=args.actors,
                    files_per_batch=args.files_per_batch,
                )

        passes: list[list[Run]] = []
        try:
            for index in range(args.repeats):
                runs = [run_decode_only(paths), run_tools_tag(paths, args.backend[0])]
                for backend in args.backend:
                    runs.append(
                        run_engine(
                            "archive --engine local",
                            lambda backend=backend: LocalEngine(
                                load_tagger("MSD_musicnn", backend=backend)
                            ),
                            paths,
                            scratch / f"local-{backend}-{index}",
                            backend,
                        )
                    )
                if make_ray is not None:
                    runs.append(
                        run_engine(
                            "archive --engine ray",
                            make_ray,
                            paths,
                            scratch / f"ray-{index}",
                            args.backend[0],
                        )
                    )
                passes.append(runs)
        finally:
            if make_ray is not None:
                ray.shutdown()
    # Each row: the pass with the best steady speed (the machine may be shared).
    runs = [
        max(candidates, key=lambda run: run.steady_files_per_s())
        for candidates in zip(*passes, strict=True)
    ]

    print(f"CPU: {cpu_description()}")
    print(
        f"{len(paths)} files, {audio_s / 3600:.3f} h of audio "
        f"({audio_s / len(paths):.1f} s each), model MSD_musicnn; same files; "
        f"best of {args.repeats} interleaved pass(es) per row"
    )
    print(
        f"{'run':<28} {'backend':<12} {'start s':>7} {'files/s':>8} {'audio-h/s':>10} "
        f"{'files/s':>8} {'audio-h/s':>10} {'ms/file':>8}"
    )
    print(f"{'':<28} {'':<12} {'':>7} {'(steady)':>8} {'(steady)':>10} {'(whole)':>8} "
          f"{'(whole)':>10} {'(steady)':>8}")  # fmt: skip
    for run in runs:
        print(run.row(audio_s, len(paths)))
    ray_runs = [r for r in runs if r.name.endswith("ray")]
    if ray_runs:
        ray_run = ray_runs[0]
        local = next(r for r in runs if r.name.endswith("local") and r.backend == ray_run.backend)
        print(
            f"Ray: ray.init {ray_started:.1f} s (not in the table); overhead per file "
            f"{ray_run.ms_per_file() - local.ms_per_file():+.1f} ms (steady ms/file, ray - local, "
            f"{ray_run.backend})"
        )
    peak = proc_status_mib(os.getpid(), "VmHWM") or float("nan")
    print(f"this process (tools.tag, the local engines, Ray's driver): peak {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
