"""Sanity on real music: tag every file of ../shared/music and print its top five tags.

    .venv/bin/python -m benchmarks.tag_shared_music [--model NAME] [--music DIR]

Evaluation only (the recordings are never used to train or tune anything).
Next to each file's label the table shows whether the label, where it is one of
the 50 tags, is among the top five, and a summary line gives that hit rate.
As a baseline, the same files go through musicnn's own pipeline (float16
log-mel, the original TF-1 graph) and the table reports how often its top tag
agrees with ours.  Exits 0 with a message when the folder is absent.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MUSIC = Path(__file__).resolve().parents[2] / "shared" / "music"


def _labels(music: Path) -> dict[str, str]:
    labels_file = music / "labels.csv"
    if not labels_file.is_file():
        return {}
    with labels_file.open(newline="") as fh:
        return {row["path"]: row["label"] for row in csv.DictReader(fh)}


def _musicnn_float16_windows(y: np.ndarray) -> np.ndarray:
    """musicnn 0.1.0's preprocessing, float16 cast included (its documented bug)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=16000, hop_length=256, n_fft=512, n_mels=96).T
    mel16 = mel.astype(np.float16)
    with np.errstate(over="ignore"):
        rep = np.log10(10000 * mel16 + 1).astype(np.float32)
    starts = range(0, len(rep) - 187 + 1, 187)
    return np.stack([rep[s : s + 187] for s in starts])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MSD_musicnn")
    parser.add_argument("--music", type=Path, default=MUSIC)
    args = parser.parse_args(argv)
    if not args.music.is_dir():
        print(f"skipped: {args.music} is absent (real-music checks need ../shared/music)")
        return 0

    from model import load_tagger
    from model.audio import load_audio
    from model.reference import OriginalGraph

    tagger = load_tagger(args.model)
    reference = OriginalGraph(args.model) if args.model in ("MSD_musicnn", "MSD_vgg") else None
    labels = _labels(args.music)
    files = sorted(
        p for p in args.music.rglob("*") if p.suffix in (".mp3", ".flac", ".ogg", ".wav")
    )
    rows, hits, labelled, agree, compared = [], 0, 0, 0, 0
    started = time.perf_counter()
    for path in files:
        rel = str(path.relative_to(args.music))
        y = load_audio(path)
        _, probabilities = tagger.tag_audio(y)
        if len(probabilities) == 0:
            rows.append((rel, labels.get(rel, ""), "(shorter than one window)", ""))
            continue
        mean = probabilities.mean(axis=0)
        top = [tagger.tags[i] for i in np.argsort(-mean)[:5]]
        label = labels.get(rel, "")
        tag_label = next((t for t in tagger.tags if t.lower() == label.lower()), None)
        mark = ""
        if tag_label:
            labelled += 1
            hits += tag_label in top
            mark = "yes" if tag_label in top else "no"
        if reference is not None:
            original_top = tagger.tags[
                int(np.argmax(reference.predict(_musicnn_float16_windows(y)).mean(axis=0)))
            ]
            compared += 1
            agree += original_top == top[0]
        text = ", ".join(f"{t} {mean[tagger.tags.index(t)]:.2f}" for t in top)
        rows.append((rel, label, text, mark))
    elapsed = time.perf_counter() - started

    width = max(len(r[0]) for r in rows)
    print(f"{'file':<{width}}  {'label':<10}  {'in top 5':<8}  top five tags ({tagger.name})")
    for rel, label, text, mark in rows:
        print(f"{rel:<{width}}  {label:<10}  {mark:<8}  {text}")
    print()
    if labelled:
        print(f"label among the top five tags: {hits}/{labelled} ({hits / labelled:.0%})")
    if compared:
        print(
            f"top tag agrees with musicnn's own float16 pipeline (baseline): "
            f"{agree}/{compared} ({agree / compared:.0%})"
        )
    print(f"{len(files)} files in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
