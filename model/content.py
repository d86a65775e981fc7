"""What a window holds: music, speech or silence, with probabilities and its level.

>>> classifier = load_content_classifier()
>>> result = classifier.classify(samples)        # 3 s, 16 kHz mono float32
>>> result.content, result.probabilities["speech"], result.level_dbfs
('speech', 0.97, -23.4)

How it decides (docs/CONTENT.md has the evaluation):

1. **Silence**: the window's level (:func:`level_dbfs`, RMS in dBFS where a
   full-scale sine is 0 dBFS) below ``silence_dbfs`` (default -50).
2. **Speech or music**: a logistic model over a few numbers of the window:
   the Silero VAD's speech probabilities (a pretrained network shipped as ONNX
   inside the MIT-licensed ``silero-vad`` wheel, run by ONNX Runtime without
   torch), the answer of pyAudioAnalysis's pretrained speech/music SVM
   (:mod:`model.pyaudioanalysis`, which hears rap over a beat as music more
   often) and four signal measures that tell talk from songs: how far the
   quiet frames sit below the loud ones (a presenter's pauses fall to the
   music bed; a song's accompaniment keeps the floor up), the 2-8 Hz
   syllable-rate modulation of the loudness, how much the spectrum stays the
   same from one frame to the next (held notes) and the spectral flux.  The
   model's weights are fitted by ``python -m training.tune_content`` on
   synthesised audio, Debian's wesnoth music and ``espeak-ng`` speech only,
   and stored below as :data:`FITTED` (the script rewrites that block).

A presenter talking over a music bed is speech; singing is music.

Each window also says **where its sound changes** most (:func:`spectral_change`):
the point in its middle second where the mean log-mel spectrum of the second
before differs most from that of the second after (mostly in shape: a fade
counts little), together with the probability of talk (voice, by the VAD, that
the speech/music network calls speech), and how much each changes there.  At a
change from music to talk (or back) that point is the splice; the as-run log
(:mod:`monitor.asrun`) uses it to place such boundaries more finely than
windows a hop apart can.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from model.inaspeech import DEFAULT_CACHE_DIR, CnnError, SpeechMusicCnn, load_speech_music_cnn
from model.pyaudioanalysis import SpeechMusicSvm, SvmError, load_speech_music_svm
from model.wheels import installed_files
from tagstream.errors import UnavailableError, UsageError

__all__ = [
    "CNN_WEIGHT",
    "CONTENTS",
    "FEATURE_NAMES",
    "FITTED",
    "SAMPLE_RATE",
    "ContentClassifier",
    "ContentError",
    "ContentResult",
    "SpectralChange",
    "change_score",
    "cnn_logit",
    "level_dbfs",
    "load_content_classifier",
    "spectral_change",
    "window_features",
]

logger = logging.getLogger(__name__)

#: The classes, in the order of :attr:`ContentResult.probabilities`.
CONTENTS: tuple[str, ...] = ("music", "speech", "silence")
#: The sample rate the classifier takes (the worker's model rate; Silero VAD's rate).
SAMPLE_RATE = 16000
#: The numbers :func:`window_features` returns, in order.
FEATURE_NAMES: tuple[str, ...] = (
    "vad_mean",
    "vad_active",
    "floor_drop_db",
    "syllable_modulation",
    "spectral_persistence",
    "spectral_flux",
    "svm_speech_logit",
)
#: The SVM's p(speech) is clipped to [this, 1 - this] before its log-odds are taken.
SVM_PROBABILITY_FLOOR = 1e-4
#: inaSpeechSegmenter's broadcast speech/music network (:mod:`model.inaspeech`): its
#: log-odds (p(speech) clipped like the SVM's) are added to the logistic model's with
#: this weight, as two experts' evidence is: the sum of their log-odds.  Not fitted:
#: on the audio this project may tune on, which has no real song or rap in it, a fit
#: gives the network a weight of 0.09 and no gain (``docs/CONTENT.md``); 1 was chosen
#: before the evaluation on real recordings was run.
CNN_WEIGHT = 1.0
#: The level of an all-zero window (dBFS), so that digital silence has a finite level.
FLOOR_DBFS = -120.0

#: The speech/music model: p(speech) = sigmoid(bias + weights . (features - mean) / scale),
#: features in :data:`FEATURE_NAMES` order.  Written by ``python -m training.tune_content``
#: (see its docstring for the data); "cv_accuracy" is its cross-validated accuracy there.
# BEGIN FITTED (python -m training.tune_content rewrites this block)
FITTED: dict[str, Any] = {
    "mean": [0.470168, 0.467247, 16.539226, 0.560854, 0.649139, 0.439294, 0.245167],
    "scale": [0.435678, 0.452965, 10.398764, 0.223172, 0.161653, 0.077605, 2.973297],
    "weights": [1.58141, 0.705895, 1.581719, 0.015535, 0.648842, 1.31676, 3.239189],
    "bias": -1.499989,
    "windows": {"speech": 474, "music": 511},
    "cv_accuracy": 0.9716,
    "cv_accuracy_with_network": 0.9574,
    "produced_by": "python -m training.tune_content --seed 0",
}
# END FITTED

_VAD_DISTRIBUTION = "silero-vad"
_VAD_FILE = "silero_vad_16k_sequence.onnx"
_VAD_FRAME = 512  # samples per Silero frame at 16 kHz (32 ms)
_VAD_CONTEXT = 64  # samples of the previous frame each frame is prefixed with
_VAD_STATE = (1, 1, 128)
_N_FFT = 512
_HOP = 256
_SILENCE_SLOPE_DB = 2.0  # width of the silence probability's transition around the threshold
#: :func:`spectral_change` looks for the change in the window's middle this many seconds ...
CHANGE_SPAN_SECONDS = 1.0
#: ... comparing this many seconds before each point with as many after it.
CHANGE_CONTEXT_SECONDS = 1.0
#: ... and counting this share of the change of overall level (the rest is the shape's).
CHANGE_LEVEL_WEIGHT = 0.25
#: ... and, when the window's speech probabilities are given, choosing the point where
#: the spectral strength plus this much of the change of speech probability (the mean
#: probability of the second after minus the second before) is largest.  Chosen
#: offline for the VAD's probability, before the network, on the tuning programmes'
#: music <-> talk splices (``--tuning``, seeds 11 cut and with 2 s fade-outs, 5 with 3 s
#: fade-outs, ``--rap 0.5`` seed 21; windows a hop apart over each splice; ``python -m
#: benchmarks.splice_change``): the strongest change near the splice lay within half a
#: second of it at 160 of 177 splices with 0 (the spectrum alone), 166 with 1, 170 with
#: 2, 171 with 5; held out (seed 3, cut and with 2 s fade-outs) 63 -> 69 of 72 with 2.
#: The classifier now gives the probability of talk (:func:`talk_over_time`) and keeps
#: the weight: with it, 170 of 177 and 68 of 72 (median error 0.020 s against the
#: VAD's 0.016 s); tuning audio has no real singing, where the two differ.
CHANGE_SPEECH_WEIGHT = 2.0
_CHANGE_MELS = 40


class ContentError(UnavailableError):
    """The content classifier's model or weights cannot be had."""


@dataclass(frozen=True)
class ContentResult:
    """One window's content.

    Attributes
    ----------
    content : {"music", "speech", "silence"}
    probabilities : dict[str, float]
        One probability per class of :data:`CONTENTS`, summing to 1.
    level_dbfs : float
        RMS level in dBFS (full-scale sine = 0 dBFS), at least ``FLOOR_DBFS``.
    speech_ratio : float
        Fraction of the window's 32 ms frames that the VAD calls speech (0 for silence).
    change_s, change_strength, change_speech : float or None
        :func:`spectral_change` of the window: seconds from its start, how much the
        sound changes there and how much the speech probability changes there;
        ``None`` for silence and windows too short to say.
    """

    content: str
    probabilities: dict[str, float]
    level_dbfs: float
    speech_ratio: float = 0.0
    features: dict[str, float] = field(default_factory=dict, repr=False)
    change_s: float | None = None
    change_strength: float | None = None
    change_speech: float | None = None

    def as_dict(self, *, start_s: float = 0.0) -> dict[str, Any]:
        """The fields an update carries: content, probabilities, level_dbfs, change.

        ``start_s`` is the window's start on the stream's audio timeline, which
        ``change_at_s`` is given on.
        """
        fields: dict[str, Any] = {
            "content": self.content,
            "content_probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
            "level_dbfs": round(self.level_dbfs, 2),
        }
        if self.change_s is not None and self.change_strength is not None:
            fields["change_at_s"] = round(start_s + self.change_s, 4)
            fields["change_strength"] = round(self.change_strength, 4)
            if self.change_speech is not None:
                fields["change_speech"] = round(self.change_speech, 4)
        return fields


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of ``samples`` in dBFS, where a full-scale sine reads 0 dBFS (AES17).

    A sine of amplitude 0.25 reads -12.04; a full-scale square wave +3.01; an
    empty or all-zero signal ``FLOOR_DBFS`` (-120).
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return FLOOR_DBFS
    rms = float(np.sqrt(np.mean(x * x)))
    if rms <= 0.0:
        return FLOOR_DBFS
    return max(FLOOR_DBFS, 20.0 * np.log10(rms * np.sqrt(2.0)))


def _vad_model_path() -> Path:
    """The Silero sequence model file inside the installed ``silero-vad`` wheel.

    Found through the wheel's file list (:mod:`model.wheels`), so ``silero_vad``
    (which imports torch) is never imported.
    """
    files = installed_files(_VAD_DISTRIBUTION)
    if files is None:
        raise ContentError(
            "the speech detector needs the silero-vad wheel; install it with "
            "`pip install --no-deps silero-vad==6.2.3` (scripts/install.sh does)"
        )
    path = files.get(_VAD_FILE)
    if path is not None and path.is_file():
        return path
    raise ContentError(
        f"the installed silero-vad wheel has no {_VAD_FILE}; "
        "reinstall it with `pip install --no-deps --force-reinstall silero-vad==6.2.3`"
    )


class SileroVad:
    """Silero VAD (v6, 16 kHz sequence export) through ONNX Runtime on one CPU thread.

    Each call starts from a zero LSTM state, so windows are independent.
    """

    def __init__(self, path: Path | None = None) -> None:
        from model.onnx import single_thread_session

        self.path = path or _vad_model_path()
        self._session = single_thread_session(
            self.path, what="the speech detector", error=ContentError
        )
        self._lock = threading.Lock()

    def frame_probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability of every whole 32 ms frame of a 16 kHz signal.

        Returns
        -------
        np.ndarray [shape=(len(samples) // 512,)], float32 in [0, 1]
        """
        x = np.ascontiguousarray(samples, dtype=np.float32)
        n = len(x) // _VAD_FRAME
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = x[: n * _VAD_FRAME].reshape(n, _VAD_FRAME)
        context = np.zeros((n, _VAD_CONTEXT), dtype=np.float32)
        context[1:] = frames[:-1, -_VAD_CONTEXT:]
        state = np.zeros(_VAD_STATE, dtype=np.float32)
        feed = {"input": np.concatenate([context, frames], axis=1), "h": state, "c": state}
        with self._lock:
            (probabilities,) = self._session.run(["speech_probs"], feed)
        return np.asarray(probabilities, dtype=np.float32).reshape(-1)


def _power(x: np.ndarray) -> np.ndarray:
    """Power spectra of ``x``'s frames (:data:`_N_FFT` long, every :data:`_HOP` samples)."""
    frames = np.lib.stride_tricks.sliding_window_view(x, _N_FFT)[::_HOP]
    return np.abs(np.fft.rfft(frames * np.hanning(_N_FFT).astype(np.float32), axis=1)) ** 2


def window_features(
    samples: np.ndarray,
    vad_probabilities: np.ndarray,
    svm_speech: float,
    *,
    power: np.ndarray | None = None,
) -> np.ndarray:
    """The numbers the speech/music model weighs (:data:`FEATURE_NAMES`), for one window.

    Parameters
    ----------
    samples : np.ndarray [shape=(n,)], 16 kHz mono float32
    vad_probabilities : np.ndarray
        :meth:`SileroVad.frame_probabilities` of ``samples``.
    svm_speech : float
        :meth:`model.pyaudioanalysis.SpeechMusicSvm.speech_probability` of ``samples``;
        its log-odds (clipped at :data:`SVM_PROBABILITY_FLOOR`) are the last feature.
    power : np.ndarray, optional
        The window's frame spectra, if already computed (:func:`_power`).

    Returns
    -------
    np.ndarray [shape=(len(FEATURE_NAMES),)], float64
    """
    x = np.asarray(samples, dtype=np.float32)
    p = np.asarray(vad_probabilities, dtype=np.float64)
    vad_mean = float(p.mean()) if p.size else 0.0
    vad_active = float((p > 0.5).mean()) if p.size else 0.0
    svm = float(np.clip(svm_speech, SVM_PROBABILITY_FLOOR, 1.0 - SVM_PROBABILITY_FLOOR))
    svm_logit = float(np.log(svm / (1.0 - svm)))
    if len(x) < _N_FFT * 2:
        return np.array([vad_mean, vad_active, 0.0, 0.0, 1.0, 0.0, svm_logit])
    if power is None:
        power = _power(x)
    # Loudness per frame (dB) over the band that carries both voice and music.
    band = power[:, 2:128]  # 62.5 Hz - 4 kHz
    energy_db = 10.0 * np.log10(band.sum(axis=1) + 1e-10)
    # A presenter's pauses drop to the bed; a song's floor stays up.
    floor_drop = float(np.clip(np.percentile(energy_db, 90) - np.percentile(energy_db, 10), 0, 40))
    # Syllable-rate (2-8 Hz) share of the loudness envelope's modulation (0.5-16 Hz).
    envelope = energy_db - energy_db.mean()
    spectrum = np.abs(np.fft.rfft(envelope * np.hanning(len(envelope)))) ** 2
    hz = np.fft.rfftfreq(len(envelope), d=_HOP / SAMPLE_RATE)
    total = spectrum[(hz >= 0.5) & (hz <= 16.0)].sum() + 1e-12
    syllable = float(spectrum[(hz >= 2.0) & (hz <= 8.0)].sum() / total)
    # Held notes: the log spectrum 64 ms later still looks the same.
    log_spec = np.log(band + 1e-8)
    log_spec = log_spec - log_spec.mean(axis=1, keepdims=True)
    a, b = log_spec[:-4], log_spec[4:]
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    persistence = float(np.median(cos))
    # Spectral flux of the normalised magnitude spectrum.
    mag = np.sqrt(band)
    mag = mag / (mag.sum(axis=1, keepdims=True) + 1e-12)
    flux = float(np.mean(np.abs(np.diff(mag, axis=0)).sum(axis=1)))
    return np.array([vad_mean, vad_active, floor_drop, syllable, persistence, flux, svm_logit])


@functools.lru_cache(maxsize=1)
def _change_bands() -> np.ndarray:
    """The mel filterbank of :func:`spectral_change`, shape (n_fft // 2 + 1, 40)."""
    from model.features import mel_filterbank

    bands = mel_filterbank(sample_rate=SAMPLE_RATE, n_fft=_N_FFT, n_mels=_CHANGE_MELS)
    return np.ascontiguousarray(bands.T, dtype=np.float32)


#: One change point's numbers, or an array of them (:func:`change_score`).
_Scores = TypeVar("_Scores", float, np.ndarray)


class SpectralChange(NamedTuple):
    """Where a window's sound changes most (:func:`spectral_change`)."""

    #: Seconds from the window's start.
    at_s: float
    #: How much the spectrum changes there (RMS over 40 mel bands, in nepers).
    strength: float
    #: How much the speech probability changes there, in [-1, 1]: its mean over the
    #: second after minus that over the second before (> 0: talk begins); 0.0 when no
    #: speech probabilities were given.  The classifier's: the probability of talk
    #: (:func:`talk_over_time`).
    speech: float


def spectral_change(
    samples: np.ndarray,
    *,
    power: np.ndarray | None = None,
    vad_probabilities: np.ndarray | None = None,
    speech_over_time: tuple[np.ndarray, np.ndarray] | None = None,
    speech_weight: float = CHANGE_SPEECH_WEIGHT,
) -> SpectralChange | None:
    """Where in the window the sound changes most: (seconds from its start, strength, speech).

    For each point in the window's middle :data:`CHANGE_SPAN_SECONDS`, the mean
    log-mel spectrum (40 bands) of the :data:`CHANGE_CONTEXT_SECONDS` before it
    is compared with that of as many seconds after it (a two-block novelty, as
    in Foote's checkerboard kernel).
    Mostly the spectrum's shape counts: all but :data:`CHANGE_LEVEL_WEIGHT` of
    the change of overall level (the mean over bands of the difference) is
    taken out, so a song fading out is a weaker change than the splice to the
    talk after the fade.  The strength is the RMS over bands of what is left,
    in natural-log power (1.0: the bands moved by a factor of e on average).

    With speech probabilities over the window, their mean over the seconds
    before and after each point is compared too, and the point where
    ``strength + speech_weight * |speech|`` is largest wins
    (:data:`CHANGE_SPEECH_WEIGHT` by default): a splice from music to talk changes both,
    where a song's own last bars (a break, a final chord) often change the
    spectrum as much but not whether someone speaks.  Without them, the point
    of the largest strength wins and ``speech`` is 0.  The classifier gives
    the probability of talk (:func:`talk_over_time`), not the VAD's alone: the
    VAD hears a singer as a voice, so a voice entering in a song's last bars
    would win over the splice to the talk after it.

    Parameters
    ----------
    samples : np.ndarray [shape=(n,)], 16 kHz mono float32
    power : np.ndarray, optional
        The window's frame spectra, if already computed.
    vad_probabilities : np.ndarray, optional
        :meth:`SileroVad.frame_probabilities` of ``samples``: the speech probabilities
        unless ``speech_over_time`` is given.
    speech_over_time : (np.ndarray, np.ndarray), optional
        Speech probabilities and the seconds from the window's start at the middle of
        each (in order), e.g. :func:`talk_over_time`.
    speech_weight : float
        How much the change of speech probability counts in choosing the point
        (``python -m benchmarks.splice_change`` compares weights).

    Returns
    -------
    SpectralChange or None
        ``None`` when the window is too short for both contexts (about 2 s).  A
        window shorter than the span and both contexts (the worker's is 2.992 s)
        looks at the part of its middle second that has both.
    """
    x = np.asarray(samples, dtype=np.float32)
    seconds = len(x) / SAMPLE_RATE
    if seconds < 2 * CHANGE_CONTEXT_SECONDS + _HOP / SAMPLE_RATE:  # also >= one frame
        return None
    if power is None:
        power = _power(x)
    log_mel = np.log(power @ _change_bands() + 1e-8).astype(np.float64)
    context = round(CHANGE_CONTEXT_SECONDS * SAMPLE_RATE / _HOP)
    cumulative = np.vstack([np.zeros((1, log_mel.shape[1])), np.cumsum(log_mel, axis=0)])
    # A boundary before frame i lies between frames i-1 and i: at (i*hop + n_fft/2 - hop/2).
    i = np.arange(context, len(log_mel) - context + 1)
    at_s = (i * _HOP + (_N_FFT - _HOP) / 2) / SAMPLE_RATE
    middle = np.abs(at_s - seconds / 2) <= CHANGE_SPAN_SECONDS / 2 + 1e-9
    i, at_s = i[middle], at_s[middle]
    if not i.size:
        return None
    before = (cumulative[i] - cumulative[i - context]) / context
    after = (cumulative[i + context] - cumulative[i]) / context
    difference = after - before
    level = difference.mean(axis=1, keepdims=True)
    strength = np.sqrt(np.mean((difference - (1.0 - CHANGE_LEVEL_WEIGHT) * level) ** 2, axis=1))
    speech = np.zeros_like(strength)
    if speech_over_time is None and vad_probabilities is not None:
        vad = np.asarray(vad_probabilities, dtype=np.float64)
        speech_over_time = (_vad_middles(len(vad)), vad)
    if speech_over_time is not None and len(speech_over_time[1]):
        speech = _speech_change(*speech_over_time, at_s)
    best = int(np.argmax(change_score(strength, speech, speech_weight)))
    return SpectralChange(float(at_s[best]), float(strength[best]), float(speech[best]))


def change_score(
    strength: _Scores, speech: _Scores, speech_weight: float = CHANGE_SPEECH_WEIGHT
) -> _Scores:
    """How strongly a change point marks a change of item: ``strength + speech_weight *
    |speech|`` (:class:`SpectralChange`'s fields), the score :func:`spectral_change`
    chooses its point by and the as-run log ranks the windows' points by."""
    return strength + speech_weight * np.abs(speech)


def _vad_middles(frames: int) -> np.ndarray:
    """Seconds from the window's start to the middle of each of its first ``frames``
    Silero VAD frames (:meth:`SileroVad.frame_probabilities`)."""
    return (np.arange(frames) + 0.5) * _VAD_FRAME / SAMPLE_RATE


def talk_over_time(
    vad_probabilities: np.ndarray, network: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Per VAD frame, the probability of talk: voice (the VAD's probability) that the
    speech/music network calls speech (its p(speech) of the patches around the frame,
    interpolated between their middles).  ``network``: (middles, p) of
    :meth:`model.inaspeech.SpeechMusicCnn.speech_over_time`.

    Returns (frame middles, probabilities), seconds from the window's start.  The VAD
    says where a voice begins or ends to a frame (32 ms), but hears singing as voice;
    the network tells talk from singing, but calls a 0.68 s patch speech once about
    0.15 s of it is, so alone it puts talk's start about 0.2 s early.
    """
    vad = np.asarray(vad_probabilities, dtype=np.float64)
    middles = _vad_middles(len(vad))
    at, speech = network
    if not len(speech):
        return middles, vad
    return middles, vad * np.interp(middles, at, speech)


def _speech_change(middles: np.ndarray, probabilities: np.ndarray, at_s: np.ndarray) -> np.ndarray:
    """Mean speech probability of the :data:`CHANGE_CONTEXT_SECONDS` after each of ``at_s``
    minus that of as many seconds before it (frames or patches by their ``middles``,
    seconds from the window's start, in order)."""
    cumulative = np.concatenate([[0.0], np.cumsum(np.asarray(probabilities, dtype=np.float64))])

    def mean(start: np.ndarray, end: np.ndarray) -> np.ndarray:
        lo, hi = np.searchsorted(middles, start), np.searchsorted(middles, end)
        return (cumulative[hi] - cumulative[lo]) / np.maximum(hi - lo, 1)

    return mean(at_s, at_s + CHANGE_CONTEXT_SECONDS) - mean(at_s - CHANGE_CONTEXT_SECONDS, at_s)


@dataclass(frozen=True)
class _Logistic:
    """p(speech) = sigmoid(bias + weights . (features - mean) / scale)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def speech_probability(self, features: np.ndarray, *, offset: float = 0.0) -> float:
        """sigmoid of the model's log-odds plus ``offset`` (another model's log-odds)."""
        z = self.bias + float(np.dot(self.weights, (features - self.mean) / self.scale)) + offset
        return float(1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0))))


def cnn_logit(speech_probability: float) -> float:
    """The network's p(speech), clipped like the SVM's (:data:`SVM_PROBABILITY_FLOOR`),
    as log-odds."""
    p = float(np.clip(speech_probability, SVM_PROBABILITY_FLOOR, 1.0 - SVM_PROBABILITY_FLOOR))
    return float(np.log(p / (1.0 - p)))


def _logistic(params: dict[str, Any]) -> _Logistic:
    """The model of ``params`` (the form of :data:`FITTED`)."""
    try:
        model = _Logistic(
            mean=np.asarray(params["mean"], dtype=np.float64),
            scale=np.asarray(params["scale"], dtype=np.float64),
            weights=np.asarray(params["weights"], dtype=np.float64),
            bias=float(params["bias"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ContentError(
            f"content weights are malformed ({exc!r}); "
            "rewrite them with `python -m training.tune_content`"
        ) from exc
    shape = (len(FEATURE_NAMES),)
    if not model.mean.shape == model.scale.shape == model.weights.shape == shape:
        raise ContentError(
            f"content weights need {len(FEATURE_NAMES)} values each for mean, scale and "
            "weights; rewrite them with `python -m training.tune_content`"
        )
    return model


class ContentClassifier:
    """Music, speech or silence per window.

    Parameters
    ----------
    silence_dbfs : float
        Windows whose level is below this are silence (default -50 dBFS).
    params : dict, optional
        Speech/music weights in the form of :data:`FITTED` (the default).
    vad : SileroVad, optional
        A loaded VAD to share; one is loaded otherwise.
    svm : SpeechMusicSvm, optional
        A loaded speech/music SVM to share; one is loaded otherwise.
    cnn : SpeechMusicCnn, optional
        A loaded speech/music network to share; one is loaded otherwise.
    network : bool
        Whether the network's log-odds are added (default), and its patches tell talk
        from singing in the change point (:func:`talk_over_time`); False decides with
        the logistic model alone, and weighs the VAD's voice in the change point, at
        about a third of the cost (``docs/CONTENT.md``).
    cache_dir : str or Path
        Where the network's built graph is kept (``model.cache_dir``).
    """

    def __init__(
        self,
        *,
        silence_dbfs: float = -50.0,
        params: dict[str, Any] | None = None,
        vad: SileroVad | None = None,
        svm: SpeechMusicSvm | None = None,
        cnn: SpeechMusicCnn | None = None,
        network: bool = True,
        cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
    ) -> None:
        if not -120.0 < silence_dbfs < 0.0:
            raise UsageError(
                f"silence_dbfs={silence_dbfs} must lie between -120 and 0 dBFS; "
                "-50 suits broadcast dead air"
            )
        self.silence_dbfs = float(silence_dbfs)
        self._model = _logistic(FITTED if params is None else params)
        self.vad = vad or SileroVad()
        try:
            self.svm = svm or load_speech_music_svm()
            self.cnn = (cnn or load_speech_music_cnn(cache_dir=cache_dir)) if network else None
        except (SvmError, CnnError) as exc:
            raise ContentError(str(exc)) from None

    def speech_probability(
        self,
        samples: np.ndarray,
        *,
        power: np.ndarray | None = None,
        vad_probabilities: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray, float]:
        """p(speech | not silence), the logistic model's features (:data:`FEATURE_NAMES`)
        and the network's log-odds (:func:`cnn_logit`; 0 without it) it came from."""
        return self._speech(samples, power=power, vad_probabilities=vad_probabilities)[:3]

    def _speech(
        self,
        samples: np.ndarray,
        *,
        power: np.ndarray | None = None,
        vad_probabilities: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray, float, tuple[np.ndarray, np.ndarray] | None]:
        """:meth:`speech_probability` and the network's p(speech) over the window
        (:meth:`~model.inaspeech.SpeechMusicCnn.speech_over_time`; None without it)."""
        x = np.asarray(samples, dtype=np.float32)
        if vad_probabilities is None:
            vad_probabilities = self.vad.frame_probabilities(x)
        features = window_features(
            x, vad_probabilities, self.svm.speech_probability(x), power=power
        )
        network, over_time = 0.0, None
        if self.cnn is not None:
            mean, middles, patches = self.cnn.speech_over_time(x)
            network, over_time = cnn_logit(mean), (middles, patches)
        speech = self._model.speech_probability(features, offset=CNN_WEIGHT * network)
        return speech, features, network, over_time

    def classify(self, samples: np.ndarray) -> ContentResult:
        """Classify one window.

        Parameters
        ----------
        samples : np.ndarray [shape=(n,)]
            Mono float32 at 16 kHz; the worker's 3 s window (any length of at
            least 64 ms works; the weights were fitted on 3 s).

        Raises
        ------
        ValueError
            ``samples`` is not one-dimensional.
        """
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"samples must be mono (one dimension), got shape {x.shape}")
        level = level_dbfs(x)
        # Silence is the level alone; its probability only softens the threshold's edge.
        silence = float(1.0 / (1.0 + np.exp((level - self.silence_dbfs) / _SILENCE_SLOPE_DB)))
        if level < self.silence_dbfs:
            rest = 0.5 * (1.0 - silence)
            return ContentResult(
                "silence", {"music": rest, "speech": rest, "silence": silence}, level
            )
        power = _power(x) if len(x) >= _N_FFT else None
        vad = self.vad.frame_probabilities(x)
        speech, features, network, over_time = self._speech(x, power=power, vad_probabilities=vad)
        talk = None if over_time is None else talk_over_time(vad, over_time)
        change = spectral_change(x, power=power, vad_probabilities=vad, speech_over_time=talk)
        probabilities = {
            "music": (1.0 - silence) * (1.0 - speech),
            "speech": (1.0 - silence) * speech,
            "silence": silence,
        }
        content = "speech" if speech >= 0.5 else "music"
        return ContentResult(
            content,
            probabilities,
            level,
            speech_ratio=float(features[1]),
            features={
                **dict(zip(FEATURE_NAMES, features.tolist(), strict=True)),
                **({} if self.cnn is None else {"cnn_speech_logit": network}),
            },
            change_s=None if change is None else change.at_s,
            change_strength=None if change is None else change.strength,
            change_speech=None if change is None else change.speech,
        )


def load_content_classifier(
    *,
    silence_dbfs: float = -50.0,
    network: bool = True,
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
) -> ContentClassifier:
    """A :class:`ContentClassifier` with the shipped weights and the wheels' models
    (without the speech/music network when ``network`` is False).

    Raises
    ------
    ContentError
        onnxruntime, silero-vad, pyAudioAnalysis or (with ``network``) inaSpeechSegmenter
        is not installed, or the weights are unreadable
        (an :class:`~tagstream.errors.UnavailableError`, exit status 3).
    """
    return ContentClassifier(silence_dbfs=silence_dbfs, network=network, cache_dir=cache_dir)
