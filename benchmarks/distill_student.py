"""Distillation proof: a small student of MSD_musicnn, its speed and its agreement.

Steps (each skipped when its output exists, unless --retrain):

1. train the student of ``training/configs/distill_student.toml`` (unlabelled
   Debian game music, ``apt-get install -y wesnoth-1.16-music``) into ``--run``;
2. export it to ``<run>/export`` (model.keras + contract.json + model.tflite);
3. time per window, student vs MSD_musicnn, same process, same windows,
   batch 1 (streaming) and batch 64 (file tagging): the ratio is the result;
4. agreement with the teacher on ``../shared/music`` (evaluation only): per-tag
   ROC-AUC of the student's song-level probabilities against the teacher's
   top-3 tags per file, and the mean Spearman rank correlation of the two
   song-level tag vectors;
5. render the run's TensorBoard scalars to ``<run>/tensorboard.png``.

Prints a table and writes ``<run>/benchmark.json``::

    python -m benchmarks.distill_student [--run runs/distill_student] [--music ../shared/music]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

from benchmarks.common import ROOT


def time_per_window(predict, windows: np.ndarray, batch: int, repeats: int) -> float:
    """Median seconds per window of ``predict`` over ``repeats`` passes in batches of ``batch``."""
    predict(windows[:batch])  # warm-up / trace
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(windows), batch):
            predict(windows[i : i + batch])
        timings.append((time.perf_counter() - start) / len(windows))
    return float(np.median(timings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", type=Path, default=ROOT / "training/configs/distill_student.toml"
    )
    parser.add_argument("--run", type=Path, default=ROOT / "runs/distill_student")
    parser.add_argument("--music", type=Path, default=ROOT.parent / "shared/music")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--windows", type=int, default=128, help="windows timed per pass")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from tagstream import cli

    cli.setup_logging("INFO")
    from model.tagger import load_tagger
    from training.config import load_train_config
    from training.datasets import Track, find_audio
    from training.evaluate import LoadedModel, evaluate_table, format_table, plot_metrics
    from training.export import TFLiteTagger, export_checkpoint
    from training.pipeline import FeatureCache, read_windows, teacher_windows
    from training.tensorboard_plot import render_scalars
    from training.train import train

    config = load_train_config(args.config)
    report: dict = {"config": str(args.config)}
    if args.retrain or not (args.run / "checkpoints" / "best").is_dir():
        start = time.perf_counter()
        result = train(
            config, args.run, resume=(args.run / "checkpoints" / "last").is_dir(), verbose=2
        )
        report["train_seconds"] = round(time.perf_counter() - start, 1)
        report["epochs"] = result.epochs_done
    export_dir = args.run / "export"
    export_checkpoint(args.run, export_dir, name="distilled_student")
    student = load_tagger(str(export_dir), device="cpu")
    teacher = load_tagger(
        config.data.teacher, cache_dir=config.data.teacher_cache_dir, device="cpu"
    )
    tflite = TFLiteTagger(export_dir / "model.tflite")

    # Real windows from the training audio (the teacher's cached features).
    cache = FeatureCache(config.resolve(config.data.cache_dir))
    files = find_audio(config.resolve(config.data.audio_dir))[:4]
    table = teacher_windows(
        [Track(f) for f in files],
        cache,
        teacher=config.data.teacher,
        window_frames=187,
        hop_frames=94,
        teacher_cache_dir=config.data.teacher_cache_dir,
    )
    windows = read_windows(table, window_frames=187)
    windows = np.resize(windows, (args.windows, *windows.shape[1:]))
    speed = {}
    for batch in (1, 64):
        t_teacher = time_per_window(teacher.predict, windows, batch, args.repeats)
        t_student = time_per_window(student.predict, windows, batch, args.repeats)
        t_tflite = time_per_window(tflite.predict, windows, batch, args.repeats)
        speed[f"batch_{batch}"] = {
            "teacher_ms_per_window": 1000 * t_teacher,
            "student_ms_per_window": 1000 * t_student,
            "student_tflite_ms_per_window": 1000 * t_tflite,
            "speedup": t_teacher / t_student,
            "speedup_tflite": t_teacher / t_tflite,
        }
    report["speed"] = speed
    report["params"] = {
        "teacher": int(teacher.network.count_params()),
        "student": int(student.network.count_params()),
    }

    print(
        f"\n{'batch':>5}  {'MSD_musicnn ms/w':>16}  {'student ms/w':>12}  "
        f"{'tflite ms/w':>11}  ratio"
    )
    for batch in (1, 64):
        s = speed[f"batch_{batch}"]
        print(
            f"{batch:>5}  {s['teacher_ms_per_window']:>16.3f}  "
            f"{s['student_ms_per_window']:>12.3f}  "
            f"{s['student_tflite_ms_per_window']:>11.3f}  {s['speedup']:.1f}x"
        )

    if args.music.is_dir():
        music = [Track(p) for p in find_audio(args.music)]
        shared_cache = FeatureCache(config.resolve(config.data.cache_dir))
        music_table = teacher_windows(
            music,
            shared_cache,
            teacher=config.data.teacher,
            window_frames=187,
            hop_frames=187,
            teacher_cache_dir=config.data.teacher_cache_dir,
        )
        loaded = LoadedModel(student.name, student.tags, 187, student.predict)
        agreement = evaluate_table(loaded, music_table, top_k=config.data.teacher_top_k)
        agreement["model"] = "student vs MSD_musicnn on shared/music"
        agreement["n_tracks"] = len(music)
        print("\nagreement with the teacher on shared/music (song level, teacher top-3 as truth):")
        print(
            format_table(
                {
                    **agreement,
                    "per_tag": {
                        t: e for t, e in agreement["per_tag"].items() if e["roc_auc"] is not None
                    },
                }
            )
        )
        plot_metrics(agreement, args.run / "shared_music_agreement.png")
        report["agreement"] = {
            k: agreement[k]
            for k in (
                "roc_auc_macro",
                "pr_auc_macro",
                "roc_auc_micro",
                "pr_auc_micro",
                "spearman_mean",
                "n_tags_scored",
                "n_items",
                "n_windows",
            )
        }
        report["agreement"]["per_tag_roc_auc"] = {
            t: e["roc_auc"] for t, e in agreement["per_tag"].items() if e["roc_auc"] is not None
        }
    else:
        print(f"\nskipped agreement: {args.music} not found (evaluation music is optional)")

    render_scalars(args.run / "tensorboard", args.run / "tensorboard.png", title="distill_student")
    (args.run / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.run / 'benchmark.json'}, {args.run / 'tensorboard.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
