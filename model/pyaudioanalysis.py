"""pyAudioAnalysis's pretrained speech/music SVM, without importing pyAudioAnalysis.

>>> svm = load_speech_music_svm()
>>> svm.speech_probability(samples)  # 3 s, 16 kHz mono float32
0.91

The ``pyAudioAnalysis`` package on PyPI (0.3.14, Apache-2.0, © Theodoros
Giannakopoulos) ships ``data/models/svm_rbf_sm``: an RBF support vector
machine that tells speech from music, trained by its author on recorded
speech and music, over pyAudioAnalysis's mid-term features (the mean and
standard deviation, over 1 s, of 34 short-term features of 50 ms frames and
their deltas: zero-crossing rate, energy and its entropy, spectral centroid,
spread, entropy, flux and roll-off, 13 MFCCs, 12 chroma bins and their
spread).  It hears a rapper over a beat as music far more often than the
features of :mod:`model.content` do, so that model takes its answer as one
more feature (``docs/CONTENT.md``).

Only the model files are used.  The features are computed here, vectorised
over the frames and equal (to float64 rounding) to pyAudioAnalysis's own
``MidTermFeatures.mid_feature_extraction``, whose module imports matplotlib,
eyed3 and pydub at start-up and loops over frames in Python
(``python -m benchmarks.content_cost`` times ours).  The pickled scikit-learn ``SVC`` is read by
a restricted unpickler that builds plain arrays (no scikit-learn, and no
other code than numpy's array constructors can run from the file), and its
decision function and Platt probability are computed here; tests check both
against pyAudioAnalysis and scikit-learn.

Install it with ``pip install --no-deps pyAudioAnalysis==0.3.14``
(``scripts/install.sh`` does): its requirements (hmmlearn, eyed3, pydub,
plotly, imbalanced-learn, ...) are not needed.  Nothing is downloaded at run
time.
"""

from __future__ import annotations

import functools
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from model.wheels import installed_files
from tagstream.errors import UnavailableError

__all__ = [
    "MID_STEP_SECONDS",
    "MID_WINDOW_SECONDS",
    "SpeechMusicSvm",
    "load_speech_music_svm",
    "mid_term_features",
    "short_term_features",
]

_DISTRIBUTION = "pyAudioAnalysis"
_VERSION = "0.3.14"
_MODEL = "svm_rbf_sm"
_EPS = float(np.finfo(np.float64).eps)  # pyAudioAnalysis's eps (sys.float_info.epsilon)
#: The model's short-term frame and step (its MEANS file says 0.05 s and 0.05 s).
SHORT_SECONDS = 0.05
#: Mid-term statistics over this many seconds of frames (the model's own setting) ...
MID_WINDOW_SECONDS = 1.0
#: ... every this many seconds (pyAudioAnalysis's segmenter uses the model's 1 s; a 3 s
#: window gets six overlapping views instead of three).
MID_STEP_SECONDS = 0.5


class SvmError(UnavailableError):
    """The pyAudioAnalysis model files are missing or unreadable."""


def _install_hint() -> str:
    return (
        f"install it with `pip install --no-deps {_DISTRIBUTION}=={_VERSION}` "
        "(scripts/install.sh does)"
    )


@functools.lru_cache(maxsize=4)
def _filterbank(sample_rate: int, num_fft: int) -> np.ndarray:
    """pyAudioAnalysis's MFCC filter bank (from scikits.talkbox), bin for bin.

    As there, bin ``k`` is taken to lie at ``k * sample_rate / num_fft`` although the
    spectrum has ``2 * num_fft`` points: the model was trained on these features.
    """
    lowfreq, linc, logsc, num_lin, num_log = 133.33, 200 / 3, 1.0711703, 13, 27
    total = num_lin + num_log
    freqs = np.zeros(total + 2)
    freqs[:num_lin] = lowfreq + np.arange(num_lin) * linc
    freqs[num_lin:] = freqs[num_lin - 1] * logsc ** np.arange(1, num_log + 3)
    heights = 2.0 / (freqs[2:] - freqs[:-2])
    bank = np.zeros((total, num_fft))
    nfreqs = np.arange(num_fft) / (1.0 * num_fft) * sample_rate
    for i in range(total):
        low, centre, high = freqs[i], freqs[i + 1], freqs[i + 2]
        lid = np.arange(
            np.floor(low * num_fft / sample_rate) + 1,
            np.floor(centre * num_fft / sample_rate) + 1,
            dtype=int,
        )
        rid = np.arange(
            np.floor(centre * num_fft / sample_rate) + 1,
            np.floor(high * num_fft / sample_rate) + 1,
            dtype=int,
        )
        bank[i][lid] = heights[i] / (centre - low) * (nfreqs[lid] - low)
        bank[i][rid] = heights[i] / (high - centre) * (high - nfreqs[rid])
    return bank


@functools.lru_cache(maxsize=4)
def _dct_matrix(n: int, keep: int) -> np.ndarray:
    """Orthonormal DCT-II (scipy's ``dct(type=2, norm='ortho')``), first ``keep`` rows."""
    k = np.arange(keep)[:, None]
    basis = np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n))
    basis *= np.where(k == 0, np.sqrt(1.0 / n), np.sqrt(2.0 / n))
    return basis.T  # (n, keep): spectra @ matrix


@functools.lru_cache(maxsize=4)
def _chroma_map(sample_rate: int, num_fft: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pyAudioAnalysis's chroma binning: (target slots, source bins, divisor per slot).

    pyAudioAnalysis writes each bin's power to slot ``round(12 log2(f / 27.5))`` of a
    ``num_fft``-long vector (negative slots wrap to its end; of bins sharing a slot the
    last one wins) and divides the vector, position by position, by the bin counts
    listed in bin order.  The same arithmetic, as index arrays.
    """
    freqs = (np.arange(num_fft) + 1) * sample_rate / (2 * num_fft)
    slot = np.round(12.0 * np.log2(freqs / 27.5)).astype(int)
    if slot.max() >= num_fft:  # pragma: no cover - only for num_fft below ~100 bins
        raise ValueError("chroma binning needs a longer frame")
    per_slot = np.zeros(num_fft)
    for u in np.unique(slot):
        where = np.nonzero(slot == u)[0]
        per_slot[where] = len(where)
    wrapped = slot % num_fft
    last: dict[int, int] = {}
    for source, target in enumerate(wrapped):
        last[int(target)] = source
    targets = np.array(sorted(last), dtype=int)
    sources = np.array([last[t] for t in targets], dtype=int)
    return targets, sources, per_slot[slot]


def _block_entropy(values: np.ndarray, blocks: int = 10) -> np.ndarray:
    """Entropy of the energy shares of ``blocks`` equal consecutive blocks, per row."""
    total = np.sum(values**2, axis=1)
    size = values.shape[1] // blocks
    parts = values[:, : size * blocks].reshape(len(values), blocks, size)
    share = np.sum(parts**2, axis=2) / (total[:, None] + _EPS)
    return -np.sum(share * np.log2(share + _EPS), axis=1)


def short_term_features(samples: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """pyAudioAnalysis's 68 short-term features (34 and their deltas), one row per frame.

    Frames are 50 ms, back to back, after the whole signal is centred and scaled to
    a peak of 1 (as pyAudioAnalysis does for every signal it is given).

    Returns
    -------
    np.ndarray [shape=(frames, 68)], float64; no rows when ``samples`` is shorter than
    one frame
    """
    window = int(SHORT_SECONDS * sample_rate)
    num_fft = window // 2
    x = np.asarray(samples, dtype=np.float64) / 2.0**15
    x = x - x.mean() if x.size else x
    x = x / (np.abs(x).max() + 1e-10) if x.size else x
    count = (len(x) - window) // window + 1 if len(x) >= window else 0
    if count == 0:
        return np.zeros((0, 68))
    frames = x[: count * window].reshape(count, window)
    # The first half of the spectrum, as pyAudioAnalysis keeps it (rfft: without the mirror).
    mag = np.abs(np.fft.rfft(frames, axis=1)[:, :num_fft]) / num_fft
    feats = np.zeros((count, 34))
    feats[:, 0] = np.sum(np.abs(np.diff(np.sign(frames), axis=1)), axis=1) / 2 / (window - 1.0)
    feats[:, 1] = np.sum(frames**2, axis=1) / window
    feats[:, 2] = _block_entropy(frames)
    # Centroid and spread of the peak-normalised magnitude spectrum.
    ind = np.arange(1, num_fft + 1) * (sample_rate / (2.0 * num_fft))
    peak = mag.max(axis=1, keepdims=True)
    xt = mag / np.where(peak == 0, _EPS, peak)
    den = np.sum(xt, axis=1) + _EPS
    centroid = np.sum(ind * xt, axis=1) / den
    spread = np.sqrt(np.sum((ind[None, :] - centroid[:, None]) ** 2 * xt, axis=1) / den)
    feats[:, 3] = centroid / (sample_rate / 2.0)
    feats[:, 4] = spread / (sample_rate / 2.0)
    feats[:, 5] = _block_entropy(mag)
    # Flux against the previous frame (the first against itself: 0).
    norm = mag / np.sum(mag + _EPS, axis=1, keepdims=True)
    feats[1:, 6] = np.sum((norm[1:] - norm[:-1]) ** 2, axis=1)
    # Roll-off: the first bin where the cumulative power passes 90 % of the total.
    power = mag**2
    above = np.cumsum(power, axis=1) + _EPS > 0.90 * np.sum(power, axis=1, keepdims=True)
    feats[:, 7] = np.where(above.any(axis=1), np.argmax(above, axis=1) / float(num_fft), 0.0)
    mspec = np.log10(mag @ _filterbank(sample_rate, num_fft).T + _EPS)
    feats[:, 8:21] = mspec @ _dct_matrix(mspec.shape[1], 13)
    targets, sources, divisor = _chroma_map(sample_rate, num_fft)
    slots = np.zeros((count, num_fft))
    slots[:, targets] = power[:, sources]
    slots /= divisor
    padded = np.zeros((count, -(-num_fft // 12) * 12))
    padded[:, :num_fft] = slots
    chroma = padded.reshape(count, -1, 12).sum(axis=1)
    total = power.sum(axis=1, keepdims=True)
    chroma /= np.where(total == 0, _EPS, total)
    feats[:, 21:33] = chroma
    feats[:, 33] = chroma.std(axis=1)
    deltas = np.zeros_like(feats)
    deltas[1:] = feats[1:] - feats[:-1]
    return np.hstack([feats, deltas])


def mid_term_features(short: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Mean and standard deviation of each short-term feature per mid-term window.

    Windows of :data:`MID_WINDOW_SECONDS` start every :data:`MID_STEP_SECONDS`; the
    last ones are cut short at the end of the frames, as in pyAudioAnalysis.

    Returns
    -------
    np.ndarray [shape=(windows, 136)]
    """
    step = int(SHORT_SECONDS * sample_rate)
    span = round(MID_WINDOW_SECONDS * sample_rate / step)
    stride = round(MID_STEP_SECONDS * sample_rate / step)
    rows = []
    for start in range(0, len(short), stride):
        part = short[start : start + span]
        rows.append(np.concatenate([part.mean(axis=0), part.std(axis=0)]))
    if not rows:
        return np.zeros((0, 2 * short.shape[1]))
    return np.nan_to_num(np.array(rows))


class _Pickled:
    """Stands in for the pickled ``sklearn.svm.SVC``: its state, as a plain ``__dict__``."""


class _ModelUnpickler(pickle.Unpickler):
    """Unpickles the SVM file: numpy arrays and the SVC's state, nothing else."""

    _NUMPY: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("sklearn.svm._classes", "SVC"):
            return _Pickled
        if (module, name) in self._NUMPY:
            if module.startswith("numpy.core") and hasattr(np, "_core"):  # numpy 2 renamed it
                module = "numpy._core" + module[len("numpy.core") :]
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in the SVM model file")


@dataclass(frozen=True)
class SpeechMusicSvm:
    """The speech/music SVM: p(speech) of a window from its mid-term features.

    Attributes are the model's arrays: ``mean``, ``std`` (feature standardisation),
    ``support_vectors``, ``dual_coef`` (libsvm's signs), ``intercept`` (libsvm's
    ``-rho``), ``gamma``, ``prob_a`` and ``prob_b`` (Platt scaling), ``classes``.
    """

    mean: np.ndarray
    std: np.ndarray
    support_vectors: np.ndarray
    dual_coef: np.ndarray
    intercept: float
    gamma: float
    prob_a: float
    prob_b: float
    classes: tuple[str, ...]
    path: Path

    def window_probabilities(self, mid: np.ndarray) -> np.ndarray:
        """p(speech) of each row of mid-term features (libsvm's binary Platt estimate)."""
        x = (np.asarray(mid, dtype=np.float64) - self.mean) / self.std
        sv = self.support_vectors
        distance = np.sum(x**2, axis=1)[:, None] - 2.0 * x @ sv.T + np.sum(sv**2, axis=1)[None, :]
        decision = np.exp(-self.gamma * np.maximum(distance, 0.0)) @ self.dual_coef
        decision = decision + self.intercept
        f = decision * self.prob_a + self.prob_b
        first = 0.5 * (1.0 - np.tanh(0.5 * f))  # libsvm's sigmoid_predict: 1 / (1 + e^f)
        speech_first = self.classes[0] == "speech"
        return first if speech_first else 1.0 - first

    def speech_probability(self, samples: np.ndarray, sample_rate: int = 16000) -> float:
        """Mean p(speech) over the window's mid-term views; 0.5 when it is under 50 ms."""
        mid = mid_term_features(short_term_features(samples, sample_rate), sample_rate)
        if len(mid) == 0:
            return 0.5
        return float(np.mean(self.window_probabilities(mid)))


def _model_files() -> tuple[Path, Path]:
    """The SVM file and its MEANS file inside the installed pyAudioAnalysis package."""
    found = installed_files(_DISTRIBUTION)
    if found is None:
        raise SvmError(f"the speech/music SVM needs pyAudioAnalysis; {_install_hint()}")
    model, means = found.get(_MODEL), found.get(_MODEL + "MEANS")
    if model is None or means is None or not model.is_file() or not means.is_file():
        raise SvmError(
            f"the installed pyAudioAnalysis has no data/models/{_MODEL}; reinstall it with "
            f"`pip install --no-deps --force-reinstall {_DISTRIBUTION}=={_VERSION}`"
        )
    return model, means


def load_speech_music_svm(path: Path | None = None) -> SpeechMusicSvm:
    """Load ``svm_rbf_sm`` (and its ``MEANS`` file beside it) from pyAudioAnalysis.

    Raises
    ------
    SvmError
        The package is not installed, or a file is missing or not this model.
    """
    model, means = _model_files() if path is None else (path, path.with_name(path.name + "MEANS"))
    try:
        with open(means, "rb") as f:
            mean, std, classes = (pickle.load(f) for _ in range(3))  # lists only
            settings = [pickle.load(f) for _ in range(5)]
        state = _ModelUnpickler(io.BytesIO(model.read_bytes())).load().__dict__
        svm = SpeechMusicSvm(
            mean=np.asarray(mean, dtype=np.float64),
            std=np.asarray(std, dtype=np.float64),
            support_vectors=np.asarray(state["support_vectors_"], dtype=np.float64),
            dual_coef=np.asarray(state["_dual_coef_"], dtype=np.float64)[0],
            intercept=float(state["_intercept_"][0]),
            gamma=float(state["_gamma"]),
            prob_a=float(state["_probA"][0]),
            prob_b=float(state["_probB"][0]),
            classes=tuple(str(c) for c in classes),
            path=model,
        )
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, AttributeError, TypeError,
            ValueError, IndexError) as exc:  # fmt: skip
        raise SvmError(
            f"cannot read the speech/music SVM {model}: {exc}; {_install_hint()}"
        ) from exc
    # The frames and statistics above are those of the model's settings: check them.
    expected = [MID_WINDOW_SECONDS, 1.0, SHORT_SECONDS, SHORT_SECONDS, False]
    shapes_ok = svm.mean.shape == svm.std.shape == (136,) and bool(np.all(svm.std > 0))
    if settings != expected or set(svm.classes) != {"speech", "music"} or not shapes_ok:
        raise SvmError(
            f"{model} is not pyAudioAnalysis {_VERSION}'s speech/music SVM "
            f"(settings {settings}, classes {svm.classes}); {_install_hint()}"
        )
    return svm
