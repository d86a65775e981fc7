"""A synthetic labelled set where the right answer is known.

Each file is quiet background noise plus, independently with probability
one half each, the events its tags name:

``low_tone``      a steady sine between 150 and 400 Hz
``high_tone``     a steady sine between 2 and 4 kHz
``noise_bursts``  0.1 s bursts of white noise, about 4 per second
``chirps``        rising sine sweeps (500 Hz -> 1.5 kHz), 0.3 s, twice a second

A tagger that hears these must reach a macro ROC-AUC near 1.  Used by the
tests (tiny) and by ``training/configs/synthetic.toml`` (end-to-end run).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["SYNTHETIC_TAGS", "synthesize", "write_synthetic_set"]

SYNTHETIC_TAGS = ("low_tone", "high_tone", "noise_bursts", "chirps")


def synthesize(
    tags: set[str], *, seconds: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """One clip with the events of ``tags`` (mono float32, peak below 1)."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    y = 0.01 * rng.standard_normal(n)
    if "low_tone" in tags:
        y += 0.2 * np.sin(2 * np.pi * rng.uniform(150, 400) * t + rng.uniform(0, 6.3))
    if "high_tone" in tags:
        y += 0.1 * np.sin(2 * np.pi * rng.uniform(2000, 4000) * t + rng.uniform(0, 6.3))
    if "noise_bursts" in tags:
        burst = int(0.1 * sample_rate)
        for start in rng.integers(0, max(n - burst, 1), size=max(1, int(4 * seconds))):
            y[start : start + burst] += 0.3 * rng.standard_normal(len(y[start : start + burst]))
    if "chirps" in tags:
        length = int(0.3 * sample_rate)
        tc = np.arange(length) / sample_rate
        sweep = 0.2 * np.sin(2 * np.pi * (500 * tc + 0.5 * (1000 / 0.3) * tc**2))
        for start in np.arange(rng.integers(0, sample_rate // 2), n - length, sample_rate // 2):
            y[start : start + length] += sweep
    return (y / max(1.0, float(np.abs(y).max()) / 0.9)).astype(np.float32)


def write_synthetic_set(
    folder: Path,
    *,
    n_files: int,
    seconds: float = 4.0,
    sample_rate: int = 22050,
    seed: int = 0,
    name: str = "manifest.csv",
) -> Path:
    """Write ``n_files`` WAV clips and a ``path,tags`` manifest into ``folder``; return the CSV."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_files):
        tags = {tag for tag in SYNTHETIC_TAGS if rng.random() < 0.5}
        y = synthesize(tags, seconds=seconds, sample_rate=sample_rate, rng=rng)
        path = folder / f"clip_{i:04d}.wav"
        sf.write(path, y, sample_rate, subtype="PCM_16")
        rows.append((path.name, ";".join(t for t in SYNTHETIC_TAGS if t in tags)))
    manifest = folder / name
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "tags"])
        writer.writerows(rows)
    return manifest


if __name__ == "__main__":  # python -m training.synthetic FOLDER [N_FILES]
    import sys

    target = write_synthetic_set(
        Path(sys.argv[1]), n_files=int(sys.argv[2]) if len(sys.argv) > 2 else 200
    )
    print(target)
