"""The one feature extractor: whole-signal and incremental frames agree, and match librosa."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

from model.features import MUSICNN_FEATURES, FeatureSpec, MelExtractor, log_mel, mel_filterbank

# Incremental and whole-signal frames run the same float32 arithmetic on the
# same samples; they differ only by FFT round-off.
INCREMENTAL_ATOL = 1e-5


def _music_like(rng: np.random.Generator, seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    tones = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 330.0, 1760.0)) / 4
    noise = rng.standard_normal(len(t)) * 0.05
    return (tones * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)) + noise).astype(np.float32)


def test_matches_librosa_melspectrogram(rng: np.random.Generator) -> None:
    librosa = pytest.importorskip("librosa")
    y = _music_like(rng, 4.0)
    reference = librosa.feature.melspectrogram(
        y=y, sr=16000, n_fft=512, hop_length=256, n_mels=96
    ).T
    reference = np.log10(1 + 10000 * reference)
    ours = log_mel(y)
    assert ours.dtype == np.float32
    assert ours.shape == reference.shape == (1 + len(y) // 256, 96)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "n_mels"),
    [(16000, 512, 96), (16000, 512, 128), (22050, 2048, 128), (16000, 400, 40), (8000, 256, 64)],
)
def test_mel_filterbank_equals_librosa(sample_rate: int, n_fft: int, n_mels: int) -> None:
    """The numpy filterbank is librosa's (musicnn's settings first) without importing it."""
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels)
    reference = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
    assert ours.dtype == reference.dtype == np.float32
    assert ours.shape == reference.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, reference, atol=1e-6, rtol=0)


def test_features_never_import_librosa_or_scipy() -> None:
    """librosa's import pulls in scipy and numba (seconds): a process that tags must not pay it."""
    code = (
        "import sys, numpy as np\n"
        "from model.features import MelExtractor, log_mel\n"
        "log_mel(np.zeros(16000, np.float32)); MelExtractor().push(np.ones(4096, np.float32))\n"
        "print(sorted({m.partition('.')[0] for m in sys.modules} & {'librosa', 'scipy', 'numba'}))"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "[]"


def test_mel_filterbank_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="n_mels=0"):
        mel_filterbank(sample_rate=16000, n_fft=512, n_mels=0)


@pytest.mark.parametrize("chunking", ["one-sample", "random", "hop", "odd", "whole"])
@pytest.mark.parametrize("n_samples", [0, 1, 255, 256, 257, 511, 16000 * 3 + 17])
def test_incremental_equals_whole_signal(
    rng: np.random.Generator, chunking: str, n_samples: int
) -> None:
    if chunking == "one-sample" and n_samples > 5000:
        n_samples = 5000
    y = _music_like(rng, n_samples / 16000)[:n_samples]
    sizes = {
        "one-sample": [1] * n_samples,
        "random": list(rng.integers(1, 4000, size=n_samples + 1)),
        "hop": [256] * (n_samples // 256 + 1),
        "odd": [1023] * (n_samples // 1023 + 1),
        "whole": [n_samples],
    }[chunking]
    extractor = MelExtractor()
    pieces, start = [], 0
    for size in sizes:
        if start >= n_samples:
            break
        pieces.append(extractor.push(y[start : start + size]))
        start += size
    pieces.append(extractor.flush())
    incremental = np.concatenate(pieces) if pieces else np.zeros((0, 96))
    whole = log_mel(y)
    assert incremental.shape == whole.shape
    np.testing.assert_allclose(incremental, whole, atol=INCREMENTAL_ATOL)


def test_frames_are_emitted_as_soon_as_complete() -> None:
    extractor = MelExtractor()
    # Frame t is centred on sample 256 t and needs samples up to 256 t + 255.
    assert len(extractor.push(np.zeros(255, np.float32))) == 0
    assert len(extractor.push(np.zeros(1, np.float32))) == 1
    assert len(extractor.push(np.zeros(256, np.float32))) == 1
    assert extractor.frames_emitted == 2


def test_loud_audio_stays_finite_and_distinct(rng: np.random.Generator) -> None:
    # musicnn computed 10000 * mel in float16, which overflows to inf once the
    # mel power passes 6.55 (common in loud music); float32 must not.
    loud = np.clip(_music_like(rng, 3.0) * 2, -1, 1)
    other = np.clip(rng.standard_normal(48000).astype(np.float32), -1, 1)
    a, b = log_mel(loud), log_mel(other)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    assert a.max() > np.log10(1 + 65504.0)  # where musicnn's float16 arithmetic gave inf
    mel_power = (10 ** a.astype(np.float64) - 1) / 10000
    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(10000) * mel_power.astype(np.float16)).any()
    assert not np.allclose(a, b)


def test_nan_and_inf_are_replaced() -> None:
    y = np.zeros(4096, np.float32)
    y[100] = np.nan
    y[200] = np.inf
    frames = log_mel(y)
    assert np.all(np.isfinite(frames))


def test_silence_is_zero() -> None:
    assert np.all(log_mel(np.zeros(16000, np.float32)) == 0)


def test_rejects_multichannel_input() -> None:
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((100, 2), np.float32))


def test_frames_for_window() -> None:
    assert MUSICNN_FEATURES.frames_for(3.0) == 187
    assert FeatureSpec(hop_length=512).frames_for(3.0) == 93
