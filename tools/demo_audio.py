"""A short deterministic demo tune, synthesized in code (no audio file ships with tagstream).

>>> y = demo_signal(sample_rate=16000, seconds=20.0)   # doctest: +SKIP

Four-on-the-floor kick, off-beat hi-hats and a backbeat snare at 120 bpm over a
bass line and a four-chord progression (C, G, Am, F) of detuned saw-like
tones: enough musical structure for the taggers to say "electronic", "dance"
and the like.

:func:`synthetic_music` draws a different music-like signal for each seed: the
benchmarks' test signal, and the music the content classifier was tuned and is
tested on.
"""

from __future__ import annotations

import numpy as np

__all__ = ["demo_signal", "synthetic_music", "write_demo_wav"]

_BPM = 120.0
#: (bass root, chord tones) in Hz for C, G, Am, F; one chord per bar.
_PROGRESSION = (
    (65.41, (261.63, 329.63, 392.00)),
    (49.00, (196.00, 246.94, 293.66)),
    (55.00, (220.00, 261.63, 329.63)),
    (43.65, (174.61, 220.00, 261.63)),
)


def _envelope(n: int, sample_rate: int, decay_s: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (decay_s * sample_rate))


def demo_signal(*, sample_rate: int = 16000, seconds: float = 20.0) -> np.ndarray:
    """Synthesize the demo tune.

    Parameters
    ----------
    sample_rate : int > 0
    seconds : float > 0

    Returns
    -------
    np.ndarray [shape=(round(seconds * sample_rate),)], float32 in [-1, 1]
        The same samples on every call (the noise is seeded).
    """
    if sample_rate <= 0 or not seconds > 0:
        raise ValueError(f"sample_rate={sample_rate} and seconds={seconds} must be positive")
    n = round(seconds * sample_rate)
    rng = np.random.default_rng(1234)
    t = np.arange(n) / sample_rate
    beat = round(60.0 / _BPM * sample_rate)
    y = np.zeros(n, dtype=np.float64)

    def add(start: int, sound: np.ndarray) -> None:
        end = min(n, start + len(sound))
        if start < n:
            y[start:end] += sound[: end - start]

    kick_n = int(0.25 * sample_rate)
    kt = np.arange(kick_n) / sample_rate
    kick = np.sin(2 * np.pi * (50 * kt + 60 * (1 - np.exp(-kt * 30)) / 30)) * _envelope(
        kick_n, sample_rate, 0.08
    )
    hat_n = int(0.05 * sample_rate)
    snare_n = int(0.2 * sample_rate)
    for k, start in enumerate(range(0, n, beat)):
        add(start, 0.9 * kick)
        add(
            start + beat // 2,
            0.15 * rng.standard_normal(hat_n) * _envelope(hat_n, sample_rate, 0.01),
        )
        if k % 2 == 1:
            snare = rng.standard_normal(snare_n) * _envelope(snare_n, sample_rate, 0.05)
            add(start, 0.35 * snare)
    bar = 4 * beat
    for b, start in enumerate(range(0, n, bar)):
        root, chord = _PROGRESSION[b % len(_PROGRESSION)]
        length = min(bar, n - start)
        bt = t[:length]
        for step in range(8):  # eighth-note bass
            s0 = step * beat // 2
            seg = np.arange(beat // 2) / sample_rate
            tone = np.sign(np.sin(2 * np.pi * root * seg)) * _envelope(len(seg), sample_rate, 0.12)
            add(start + s0, 0.18 * tone)
        pad = sum(
            np.sin(2 * np.pi * f * bt) + 0.5 * np.sin(2 * np.pi * 2.003 * f * bt) for f in chord
        )
        fade = np.minimum(1.0, np.minimum(bt / 0.05, (length / sample_rate - bt) / 0.05))
        y[start : start + length] += 0.06 * pad * fade
    y /= max(1.0, float(np.abs(y).max()) / 0.9)
    return y.astype(np.float32)


def write_demo_wav(path: str, *, sample_rate: int = 16000, seconds: float = 20.0) -> str:
    """Write :func:`demo_signal` as a 16-bit wav file; return ``path``."""
    import soundfile

    soundfile.write(
        path, demo_signal(sample_rate=sample_rate, seconds=seconds), sample_rate, subtype="PCM_16"
    )
    return path


def synthetic_music(
    seconds: float, *, rng: np.random.Generator, sample_rate: int = 16000
) -> np.ndarray:
    """A music-like mono signal: drums, a bass line and chords that change every bar.

    Parameters
    ----------
    seconds : float > 0
    rng : np.random.Generator
    sample_rate : int > 0

    Returns
    -------
    np.ndarray [shape=(round(seconds * sample_rate),)], float32 in [-1, 1]
    """
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    beat = 60.0 / rng.uniform(70, 160)
    phase = (t % beat) / beat
    kick = np.sin(2 * np.pi * 55 * t) * np.exp(-phase * 12)
    hat = rng.standard_normal(n) * np.exp(-((t % (beat / 2)) / beat) * 60) * 0.3
    y = kick * rng.uniform(0.3, 1.0) + hat * rng.uniform(0.0, 1.0)
    bar = 4 * beat
    for start in np.arange(0, seconds, bar):
        part = (t >= start) & (t < start + bar)
        root = 110 * 2 ** (rng.integers(-5, 7) / 12)
        for ratio, level in ((1.0, 0.4), (1.26, 0.2), (1.5, 0.2), (4.0, 0.1)):
            f = root * ratio
            harmonics = sum(np.sin(2 * np.pi * f * k * t[part]) / k for k in (1, 2, 3))
            y[part] += level * harmonics * (0.6 + 0.4 * np.sin(2 * np.pi * t[part] / beat))
    y += rng.standard_normal(n) * rng.uniform(0.001, 0.02)
    return (0.9 * y / np.abs(y).max()).astype(np.float32)
