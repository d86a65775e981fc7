"""Fit the content classifier's speech/music weights (``FITTED`` in model/content.py).

    python -m training.tune_content [--seed 0] [--dry-run] [--features FILE.npz]

Only audio that this project may tune on goes in (never ``../shared``):

- speech: Debian's ``espeak-ng`` reading licence texts from
  ``/usr/share/common-licenses`` in many voices, rates and pitches, with
  reverberation, band limiting and noise added;
- music: Debian's ``wesnoth-1.16-music`` (orchestral ogg files), the
  benchmarks' synthetic drums-bass-chords, and synthetic singing (formant
  vowels on held, vibrato notes) over both — singing is music;
- speech over a music bed, the speech 6-22 dB above the music: speech;
  ``espeak-ng`` rapped over a loud beat (-3 to +1 dB): music.

Each example is one 3 s window at 16 kHz.  The model is a logistic regression
on :data:`model.content.FEATURE_NAMES`; its mean, scale, weights and bias are
written into the ``FITTED`` block of ``model/content.py`` with the data counts
and a cross-validated accuracy (six folds by source, so no clip is both
fitted and scored); ``--dry-run`` only prints them.  The classifier adds the
log-odds of inaSpeechSegmenter's speech/music network to the fitted model's
(:data:`model.content.CNN_WEIGHT`, not fitted: this audio has no real song or rap
in it, and a fit gives the network little weight and no gain); the cross-validated accuracy of
that sum is written beside the fitted model's (``cv_accuracy_with_network``).

Needs ``apt-get install espeak-ng wesnoth-1.16-music`` and scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import soxr

import model.content
from model.content import CNN_WEIGHT, SAMPLE_RATE, SileroVad, cnn_logit, window_features
from model.inaspeech import load_speech_music_cnn
from model.pyaudioanalysis import load_speech_music_svm
from tagstream.errors import UnavailableError
from tools.demo_audio import synthetic_music

WINDOW = 3 * SAMPLE_RATE
WESNOTH = Path("/usr/share/games/wesnoth")
TEXTS = Path("/usr/share/common-licenses")
VOICES = (
    "en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en+f2", "en+f4", "en+m3",
    "en-us+f3", "en-us+m7", "de", "fr", "es", "it", "nl", "pt", "pl", "sv",
)  # fmt: skip


def _fit_level(y: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) + 1e-12
    return (y * (10 ** (dbfs / 20) / (rms * np.sqrt(2)))).astype(np.float32)


def _mix(voice: np.ndarray, bed: np.ndarray, voice_over_bed_db: float) -> np.ndarray:
    def rms(v: np.ndarray) -> float:
        return float(np.sqrt(np.mean(v.astype(np.float64) ** 2))) + 1e-12

    bed = np.resize(bed, len(voice))  # repeats a short bed
    bed = bed * (rms(voice) / rms(bed)) * 10 ** (-voice_over_bed_db / 20)
    return (voice + bed).astype(np.float32)


def _sentences(rng: np.random.Generator, count: int) -> list[str]:
    words: list[str] = []
    for name in ("GPL-3", "Apache-2.0", "MPL-2.0", "Artistic", "GFDL-1.3"):
        path = TEXTS / name
        if path.is_file():
            words += path.read_text(errors="replace").split()
    words = [w for w in words if w.isascii() and any(c.isalpha() for c in w)]
    out = []
    for _ in range(count):
        start = int(rng.integers(0, len(words) - 60))
        out.append(" ".join(words[start : start + int(rng.integers(25, 55))]))
    return out


def espeak(text: str, *, voice: str, rate: int, pitch: int, gap: int) -> np.ndarray:
    """``espeak-ng`` speaking ``text``, 16 kHz mono float32."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-g", str(gap)]
        subprocess.run([*cmd, "-w", str(wav), text], check=True, capture_output=True)
        y, sr = soundfile.read(wav, dtype="float32")
    return soxr.resample(y, sr, SAMPLE_RATE).astype(np.float32)


def _roughen(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Room reverberation, band limiting and background noise, each by chance."""
    if rng.random() < 0.6:
        seconds = rng.uniform(0.1, 0.6)
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        impulse = rng.standard_normal(t.size) * np.exp(-6.9 * t / seconds)
        impulse[0] = 1.0 / rng.uniform(0.2, 1.0)
        y = np.convolve(y, impulse / np.abs(impulse).sum() * 4, mode="full")[: len(y)]
    if rng.random() < 0.3:  # telephone-like band
        spec = np.fft.rfft(y)
        hz = np.fft.rfftfreq(len(y), 1 / SAMPLE_RATE)
        spec[(hz < 300) | (hz > 3400)] *= 0.05
        y = np.fft.irfft(spec, len(y))
    # A room's or a line's noise floor: synthetic speech has digital silence between words.
    y = _mix(y, rng.standard_normal(len(y)), rng.uniform(25, 60))
    return y.astype(np.float32)


def _windows(y: np.ndarray, rng: np.random.Generator, most: int) -> Iterator[np.ndarray]:
    starts = np.arange(0, len(y) - WINDOW + 1, WINDOW // 2)
    rng.shuffle(starts)
    for s in starts[:most]:
        yield y[s : s + WINDOW]


def wesnoth_tracks() -> list[Path]:
    tracks = sorted(WESNOTH.rglob("*.ogg"))
    if not tracks:
        raise UnavailableError(
            f"no ogg music under {WESNOTH}; install it with `apt-get install wesnoth-1.16-music`"
        )
    return tracks


def _read_excerpt(path: Path, seconds: float, rng: np.random.Generator) -> np.ndarray:
    info = soundfile.info(path)
    length = int(seconds * info.samplerate)
    start = int(rng.integers(0, max(1, info.frames - length)))
    y, sr = soundfile.read(path, start=start, frames=length, dtype="float32", always_2d=True)
    return soxr.resample(y.mean(axis=1), sr, SAMPLE_RATE).astype(np.float32)


def singing(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Sung vowels: held notes of a scale with vibrato, formant-shaped harmonics."""
    formants = {  # F1, F2, F3 (Hz) of a few vowels
        "a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
        "o": (570, 840, 2410), "u": (300, 870, 2240),
    }  # fmt: skip
    n = int(seconds * SAMPLE_RATE)
    y = np.zeros(n, dtype=np.float64)
    root = rng.uniform(110, 330)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.25, 1.2) * SAMPLE_RATE)
        t = np.arange(min(length, n - pos)) / SAMPLE_RATE
        f0 = root * 2 ** (rng.choice(scale) / 12)
        vibrato = 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t) * np.minimum(t / 0.3, 1)
        phase = 2 * np.pi * np.cumsum(f0 * vibrato) / SAMPLE_RATE
        f1, f2, f3 = formants[str(rng.choice(list(formants)))]
        note = np.zeros_like(t)
        for k in range(1, int(4000 // f0)):
            fk = k * f0
            gain = sum(1 / (1 + ((fk - f) / (0.12 * f)) ** 2) for f in (f1, f2, f3))
            note += gain * k**-1.0 * np.sin(k * phase)
        envelope = np.minimum(1, t / 0.05) * np.minimum(1, (t[-1] - t + 1e-3) / 0.08)
        y[pos : pos + len(t)] = note * envelope
        pos += len(t) + int(rng.uniform(0, 0.15) * SAMPLE_RATE)
    return (y / (np.abs(y).max() + 1e-9)).astype(np.float32)


def beat(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A loud drum loop with a bass line: what rap is performed over."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    period = 60 / rng.uniform(80, 110)
    ph = (t % period) / period
    kick = np.sin(2 * np.pi * 50 * t) * np.exp(-ph * 10)
    snare = rng.standard_normal(n) * np.exp(-(((t + period / 2) % period) / period) * 25) * 0.5
    hats = rng.standard_normal(n) * np.exp(-((t % (period / 4)) / period) * 80) * 0.15
    bass = 0.4 * np.sin(2 * np.pi * rng.uniform(40, 70) * t) * (ph < 0.6)
    return (kick + snare + hats + bass).astype(np.float32)


def dense_bed(track: np.ndarray, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Pop-like accompaniment: a beat, chords and a distorted copy of ``track``, all loud."""
    drums = beat(seconds, rng)
    chords = synthetic_music(seconds, rng=rng)
    guitar = np.tanh(np.resize(track, len(drums)) * rng.uniform(5, 30))
    parts = [drums, np.resize(chords, len(drums)), guitar]
    weights = rng.uniform(0.3, 1.0, size=3)
    y = sum(w * p / (np.abs(p).max() + 1e-9) for w, p in zip(weights, parts, strict=True))
    return np.asarray(y, dtype=np.float32)


def build_dataset(
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows as (features, labels 1 = speech, group of each window's source, kind, the
    speech/music network's log-odds)."""
    rng = np.random.default_rng(seed)
    vad = SileroVad()
    svm = load_speech_music_svm()
    cnn = load_speech_music_cnn()
    rows: list[np.ndarray] = []
    network: list[float] = []
    labels: list[int] = []
    groups: list[int] = []
    kinds: list[str] = []

    def add(window: np.ndarray, label: int, group: int, kind: str) -> None:
        window = _fit_level(window, rng.uniform(-32, -8))
        rows.append(
            window_features(window, vad.frame_probabilities(window), svm.speech_probability(window))
        )
        network.append(cnn_logit(cnn.speech_probability(window)))
        labels.append(label)
        groups.append(group)
        kinds.append(kind)

    tracks = wesnoth_tracks()
    texts = _sentences(rng, 48)
    for i, text in enumerate(texts):
        group = i % 6
        voice = VOICES[i % len(VOICES)]
        speech = espeak(
            text,
            voice=voice,
            rate=int(rng.integers(120, 210)),
            pitch=int(rng.integers(25, 75)),
            gap=int(rng.integers(0, 8)),
        )
        speech = _roughen(speech, rng)
        for window in _windows(speech, rng, 4):  # plain speech
            add(window, 1, group, "speech")
        seconds = len(speech) / SAMPLE_RATE
        bed_track = _read_excerpt(tracks[i % len(tracks)], seconds, rng)
        bed_synth = synthetic_music(seconds, rng=rng)
        beds = (bed_track, bed_synth, dense_bed(bed_track, seconds, rng))
        for k, _window in enumerate(_windows(speech, rng, 6)):  # presenter over a music bed
            bed = beds[k % 3]
            mixed = _mix(speech, bed[: len(speech)], rng.uniform(6, 22))
            start = int(rng.integers(0, len(mixed) - WINDOW + 1))
            add(mixed[start : start + WINDOW], 1, group, "speech over bed")
        if i % 2 == 0:  # rap over a loud beat: music
            rap = _mix(speech, dense_bed(bed_track, seconds, rng), rng.uniform(-3, 1))
            for window in _windows(rap, rng, 2):
                add(window, 0, group, "rap over beat")
    for j, track in enumerate(tracks):
        group = j % 6
        excerpt = _read_excerpt(track, 20, rng)
        for window in _windows(excerpt, rng, 5):
            add(window, 0, group, "wesnoth")
        sung = singing(9, rng)  # sung over the track: music
        add(_mix(sung, excerpt[: len(sung)], rng.uniform(-3, 4))[:WINDOW], 0, group, "singing")
        add(_mix(sung, excerpt[: len(sung)], rng.uniform(-3, 4))[WINDOW * 2 :], 0, group, "singing")
    for k in range(60):
        group = k % 6
        music = synthetic_music(9, rng=rng)
        add(music[:WINDOW], 0, group, "synthetic music")
        sung = singing(9, rng)
        add(_mix(sung, music, rng.uniform(-3, 4))[WINDOW:], 0, group, "singing")
        add(_fit_level(singing(3, rng), -20), 0, group, "a cappella")
    return np.array(rows), np.array(labels), np.array(groups), np.array(kinds), np.array(network)


def fit(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, kinds: np.ndarray, network: np.ndarray
) -> dict[str, object]:
    """Standardise, fit a logistic regression, cross-validate by source group (alone and
    with the network's log-odds added)."""
    from sklearn.linear_model import LogisticRegression

    def train(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, object]:
        mean, scale = xs.mean(axis=0), xs.std(axis=0) + 1e-9
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
        model.fit((xs - mean) / scale, ys)
        return mean, scale, model

    logits = np.zeros(len(y))
    for g in np.unique(groups):
        held = groups == g
        mean, scale, model = train(x[~held], y[~held])
        logits[held] = model.decision_function((x[held] - mean) / scale)  # type: ignore[attr-defined]
    right = (logits >= 0) == (y == 1)
    combined = (logits + CNN_WEIGHT * network >= 0) == (y == 1)
    mean, scale, model = train(x, y)

    def by_kind(hits: np.ndarray) -> dict[str, float]:
        return {str(k): round(float(hits[kinds == k].mean()), 4) for k in np.unique(kinds)}

    return {
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "weights": [round(float(v), 6) for v in model.coef_[0]],  # type: ignore[attr-defined]
        "bias": round(float(model.intercept_[0]), 6),  # type: ignore[attr-defined]
        "windows": {"speech": int(y.sum()), "music": int((1 - y).sum())},
        "cv_accuracy": round(float(right.mean()), 4),
        "cv_accuracy_with_network": round(float(combined.mean()), 4),
        "cv_accuracy_by_kind": by_kind(right),
        "cv_accuracy_by_kind_with_network": by_kind(combined),
    }


def write_fitted(params: dict[str, object], module: Path) -> None:
    """Replace the ``FITTED`` block of ``module`` with ``params``."""
    lines = ["FITTED: dict[str, Any] = {"]
    lines += [f"    {json.dumps(k)}: {json.dumps(v)}," for k, v in params.items()]
    lines.append("}")
    text = module.read_text()
    pattern = re.compile(r"(# BEGIN FITTED[^\n]*\n).*?(# END FITTED)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: {module} has no BEGIN/END FITTED block")
    module.write_text(pattern.sub(lambda m: m[1] + "\n".join(lines) + "\n" + m[2], text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.tune_content", description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print the weights, write nothing")
    parser.add_argument("--features", type=Path, help="also save the windows' features (.npz)")
    args = parser.parse_args(argv)
    x, y, groups, kinds, network = build_dataset(args.seed)
    if args.features:
        np.savez(args.features, x=x, y=y, groups=groups, kinds=kinds, network=network)
    params = fit(x, y, groups, kinds, network)
    params["produced_by"] = f"python -m training.tune_content --seed {args.seed}"
    print(json.dumps(params, indent=2))
    if not args.dry_run:
        params.pop("cv_accuracy_by_kind")
        params.pop("cv_accuracy_by_kind_with_network")
        write_fitted(params, Path(model.content.__file__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
