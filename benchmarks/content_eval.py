"""Per-window accuracy of the music / speech / silence classifier on real recordings.

    .venv/bin/python -m benchmarks.content_eval [--shared DIR] [--hop SECONDS]

Evaluation only: ``../shared/speech`` (LibriSpeech read speech, every window
should be speech), ``../shared/music`` (music, many with vocals: every window
should be music) and mixes made here of each speech file over ten music clips
(one per GTZAN genre) with the music 6, 12 and 18 dB below the speech (every
window should be speech: a presenter over a music bed).  Nothing here feeds
back into the classifier's weights (``python -m training.tune_content`` fits
them on synthesised audio, wesnoth music and espeak-ng speech only).

Windows are 3 s long (the worker's window) every ``--hop`` seconds; a window
counts as correct when its ``content`` is the expected one.  The table names
the CPU and the classifier's median time per window.  Exits 0 with a message
when the shared folder is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import cpu_description, median_ms
from model.audio import load_audio
from model.content import SAMPLE_RATE, ContentClassifier, load_content_classifier

SHARED = Path(__file__).resolve().parents[2] / "shared"
WINDOW = 3 * SAMPLE_RATE
MIX_DB = (6, 12, 18)
TARGETS = {"music": 0.95, "speech": 0.95, "speech, music -12 dB": 0.85}
MUSIC_EXTENSIONS = (".flac", ".mp3", ".ogg", ".wav")


def windows(y: np.ndarray, hop: int) -> list[np.ndarray]:
    """Every whole 3 s window of ``y`` starting every ``hop`` samples."""
    return [y[s : s + WINDOW] for s in range(0, len(y) - WINDOW + 1, hop)]


def mix(speech: np.ndarray, music: np.ndarray, music_below_db: float) -> np.ndarray:
    """``speech`` with ``music`` (repeated or cut to its length) ``music_below_db`` dB under it."""
    bed = np.resize(music, len(speech)).astype(np.float64)

    def rms(v: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.square(v, dtype=np.float64)))) + 1e-12

    bed *= rms(speech) / rms(bed) * 10 ** (-music_below_db / 20)
    out = speech + bed
    return (out / max(1.0, float(np.abs(out).max()))).astype(np.float32)


def _score(
    classifier: ContentClassifier, clips: dict[str, np.ndarray], expected: str, hop: int
) -> tuple[int, int, Counter[str], list[str]]:
    """(correct windows, windows, predictions, names of clips with a wrong window)."""
    correct = total = 0
    seen: Counter[str] = Counter()
    wrong: list[str] = []
    for name, y in clips.items():
        hits = 0
        chunks = windows(y, hop)
        for w in chunks:
            content = classifier.classify(w).content
            seen[content] += 1
            hits += content == expected
        correct += hits
        total += len(chunks)
        if hits < len(chunks):
            wrong.append(f"{name} {len(chunks) - hits}/{len(chunks)}")
    return correct, total, seen, wrong


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.content_eval", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--shared", type=Path, default=SHARED, help="folder with speech/ and music/"
    )
    parser.add_argument("--hop", type=float, default=1.5, help="seconds between windows (1.5)")
    parser.add_argument("--verbose", action="store_true", help="name the clips with wrong windows")
    args = parser.parse_args(argv)
    speech_dir, music_dir = args.shared / "speech", args.shared / "music"
    if not speech_dir.is_dir() or not music_dir.is_dir():
        print(f"skipped: {speech_dir} or {music_dir} is absent (this evaluation needs ../shared)")
        return 0
    hop = max(1, round(args.hop * SAMPLE_RATE))
    classifier = load_content_classifier()
    speech = {p.name: load_audio(p) for p in sorted(speech_dir.glob("*.ogg"))}
    music_files = sorted(p for p in music_dir.rglob("*") if p.suffix in MUSIC_EXTENSIONS)
    music = {str(p.relative_to(music_dir)): load_audio(p) for p in music_files}
    # Beds: the first clip of each GTZAN genre (or the first ten files without GTZAN).
    beds = [m for name, m in music.items() if name.endswith(".00001.flac")] or list(music.values())
    beds = beds[:10]
    rows: list[tuple[str, dict[str, np.ndarray], str]] = [
        ("speech", speech, "speech"),
        ("music", music, "music"),
    ]
    for db in MIX_DB:
        mixes = {
            f"{s_name}+bed{i}": mix(s, bed, db)
            for s_name, s in speech.items()
            for i, bed in enumerate(beds)
        }
        rows.append((f"speech, music -{db} dB", mixes, "speech"))

    print(f"CPU: {cpu_description()}")
    print(f"windows: 3 s every {args.hop} s; silence below {classifier.silence_dbfs} dBFS")
    print(f"{'set':<22} {'clips':>5} {'windows':>7} {'correct':>8} {'target':>7}  predicted")
    started = time.perf_counter()
    for label, clips, expected in rows:
        correct, total, seen, wrong = _score(classifier, clips, expected, hop)
        target = TARGETS.get(label)
        mark = f"{target:.0%}" if target else "-"
        share = correct / total if total else float("nan")
        predicted = ", ".join(f"{k} {v}" for k, v in seen.most_common())
        print(f"{label:<22} {len(clips):>5} {total:>7} {share:>8.1%} {mark:>7}  {predicted}")
        if args.verbose and wrong:
            print("    wrong: " + "; ".join(wrong))
    elapsed = time.perf_counter() - started
    sample = next(iter(music.values()))[:WINDOW]
    ms = median_ms(lambda: classifier.classify(sample), 30)
    print(f"classifier: {ms:.1f} ms per 3 s window (median of 30, one thread); run {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
