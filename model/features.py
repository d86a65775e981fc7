"""The one feature extractor: 16 kHz mono audio -> log-compressed mel frames.

File tagging, the streaming worker and training all call this module, so a
model sees the same numbers whichever way its audio arrived.  Their audio
reaches it through :mod:`model.audio` (decode, downmix, resample).

The representation is musicnn's (Pons & Serra, 2019): a 512-point STFT with a
periodic Hann window and a 256-sample hop, centred frames (the signal is padded
with ``n_fft // 2`` zeros at both ends, like ``librosa.stft(center=True,
pad_mode="constant")``), power spectrum, librosa's Slaney mel filterbank with
96 bands (:func:`mel_filterbank`: the same numbers, without importing librosa),
then ``log10(1 + 10000 * mel_power)``.  Everything is float32.
musicnn itself cast the mel power to float16 before the log, which overflows
to ``inf`` on loud music; we do not.

:class:`MelExtractor` computes the same frames incrementally as samples
arrive: a frame is emitted as soon as its last sample is known, and
:meth:`MelExtractor.flush` emits the frames that need the end padding.  Pushing
a signal in any chunking and flushing equals :func:`log_mel` on the whole
signal (``tests/test_features.py`` shows it within 1e-5 absolute).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["MUSICNN_FEATURES", "FeatureSpec", "MelExtractor", "log_mel", "mel_filterbank"]


@dataclass(frozen=True)
class FeatureSpec:
    """Settings of the log-mel representation; part of every model's contract."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    log_scale: float = 10000.0

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sample_rate

    def frames_for(self, seconds: float) -> int:
        """Number of whole frames in ``seconds`` of audio (3 s -> 187)."""
        return round(seconds * self.sample_rate) // self.hop_length

    def to_dict(self) -> dict[str, float | int]:
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "log_scale": self.log_scale,
        }


MUSICNN_FEATURES = FeatureSpec()


def _hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's ``hz_to_mel(htk=False)``): linear to 1 kHz, then log."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mels = frequencies / f_sp
    log_t = frequencies >= min_log_hz
    mels[log_t] = min_log_mel + np.log(frequencies[log_t] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_hz_to_mel` (librosa's ``mel_to_hz(htk=False)``)."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    freqs = f_sp * mels
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney mel filterbank from 0 Hz to ``sample_rate / 2``, shape (n_mels, n_fft // 2 + 1).

    The same numbers as ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft,
    n_mels=n_mels)`` (Slaney mel scale, area normalisation, float32), computed
    the same way in numpy: librosa's import pulls in scipy and numba, seconds
    of start-up that a worker or ``tools.tag`` on ONNX Runtime would otherwise
    spend on one matrix (``tests/test_features.py`` compares the two).

    Parameters
    ----------
    sample_rate : int > 0
    n_fft : int > 0
    n_mels : int > 0

    Returns
    -------
    np.ndarray [shape=(n_mels, n_fft // 2 + 1)], float32 >= 0
    """
    if sample_rate <= 0 or n_fft <= 0 or n_mels <= 0:
        raise ValueError(
            f"sample_rate={sample_rate}, n_fft={n_fft} and n_mels={n_mels} must be positive"
        )
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    edges = np.array([0.0, float(sample_rate) / 2])
    low_mel, high_mel = _hz_to_mel(edges)
    mel_hz = _mel_to_hz(np.linspace(low_mel, high_mel, n_mels + 2))
    widths = np.diff(mel_hz)
    ramps = np.subtract.outer(mel_hz, fft_hz)
    weights = np.zeros((n_mels, len(fft_hz)), dtype=np.float32)
    for i in range(n_mels):  # in librosa's order, so the float32 roundings are the same
        lower = -ramps[i] / widths[i]
        upper = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2 : n_mels + 2] - mel_hz[:n_mels]))[:, np.newaxis]
    return weights


@functools.lru_cache(maxsize=8)
def _mel_basis(spec: FeatureSpec) -> np.ndarray:
    """:func:`mel_filterbank` of ``spec``, transposed: shape (n_fft // 2 + 1, n_mels), float32."""
    basis = mel_filterbank(sample_rate=spec.sample_rate, n_fft=spec.n_fft, n_mels=spec.n_mels)
    return np.ascontiguousarray(basis.T)


@functools.lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (scipy's ``get_window('hann', n, fftbins=True)``)."""
    n = np.arange(n_fft, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)


def _frames_to_log_mel(padded: np.ndarray, n_frames: int, spec: FeatureSpec) -> np.ndarray:
    """Log-mel of the first ``n_frames`` frames of an already padded signal."""
    if n_frames <= 0:
        return np.zeros((0, spec.n_mels), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(padded, spec.n_fft)[:: spec.hop_length]
    frames = frames[:n_frames] * _window(spec.n_fft)
    spectrum = np.fft.rfft(frames, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel = power @ _mel_basis(spec)
    return np.log10(np.float32(1.0) + np.float32(spec.log_scale) * mel, dtype=np.float32)


def _check_audio(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"audio must be mono with shape (n,), got shape {y.shape}")
    y = y.astype(np.float32, copy=False)
    if not np.all(np.isfinite(y)):
        y = np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=-1.0)
    return y


def log_mel(y: np.ndarray, *, spec: FeatureSpec = MUSICNN_FEATURES) -> np.ndarray:
    """Log-mel frames of a whole signal.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float
        Mono audio at ``spec.sample_rate``, nominally in [-1, 1].  NaN becomes
        0 and +-inf becomes +-1.
    spec : FeatureSpec

    Returns
    -------
    np.ndarray [shape=(1 + n // hop_length, n_mels)], float32, >= 0
    """
    y = _check_audio(y)
    pad = spec.n_fft // 2
    padded = np.pad(y, (pad, pad))
    return _frames_to_log_mel(padded, 1 + len(y) // spec.hop_length, spec)


class MelExtractor:
    """Incremental :func:`log_mel`: push audio chunks, get the frames they complete.

    >>> ex = MelExtractor()
    >>> frames = ex.push(chunk)        # (k, 96), k >= 0
    >>> tail = ex.flush()              # frames that need the end padding

    Frame ``t`` is centred on sample ``t * hop_length``; it is emitted once
    sample ``t * hop_length + n_fft // 2 - 1`` has arrived.
    """

    def __init__(self, *, spec: FeatureSpec = MUSICNN_FEATURES) -> None:
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        """Forget all audio: the next sample starts a new signal."""
        self._buffer = np.zeros(self.spec.n_fft // 2, dtype=np.float32)  # centre padding
        self.samples_seen = 0
        self.frames_emitted = 0

    def push(self, y: np.ndarray) -> np.ndarray:
        """Add mono samples; return the newly complete frames, shape (k, n_mels)."""
        y = _check_audio(y)
        self.samples_seen += len(y)
        self._buffer = np.concatenate([self._buffer, y]) if len(y) else self._buffer
        return self._emit()

    def flush(self) -> np.ndarray:
        """Pad the end like :func:`log_mel` and return the remaining frames; then reset."""
        total = 1 + self.samples_seen // self.spec.hop_length
        self._buffer = np.concatenate(
            [self._buffer, np.zeros(self.spec.n_fft // 2, dtype=np.float32)]
        )
        frames = self._emit(limit=total - self.frames_emitted)
        self.reset()
        return frames

    def _emit(self, limit: int | None = None) -> np.ndarray:
        spec = self.spec
        available = 0
        if len(self._buffer) >= spec.n_fft:
            available = 1 + (len(self._buffer) - spec.n_fft) // spec.hop_length
        if limit is not None:
            available = min(available, limit)
        frames = _frames_to_log_mel(self._buffer, available, spec)
        self.frames_emitted += available
        self._buffer = self._buffer[available * spec.hop_length :]
        return frames
