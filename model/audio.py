"""Decode audio files to the model's input: mono float32 at the model's rate.

wav, flac, ogg and mp3 at any sample rate and channel count are decoded by
libsndfile (through soundfile), downmixed by averaging channels and resampled
with soxr, as ``librosa.load(path, sr=16000)`` would.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from model.features import resample, to_mono

__all__ = ["AUDIO_EXTENSIONS", "AudioError", "load_audio"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")


class AudioError(ValueError):
    """A file is missing, unreadable, corrupt or empty; the message names it."""


def load_audio(path: str | os.PathLike[str], *, sample_rate: int = 16000) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate``.

    Parameters
    ----------
    path : path-like
    sample_rate : int > 0

    Returns
    -------
    np.ndarray [shape=(n,)], float32

    Raises
    ------
    AudioError
        Missing, unreadable, corrupt or empty files.
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        y, native_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = getattr(exc, "error_string", "") or str(exc) or type(exc).__name__
        raise AudioError(
            f"{path}: cannot decode, corrupt or not audio (libsndfile: {reason}); "
            "tagstream reads wav, flac, ogg and mp3"
        ) from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if y.size == 0:
        raise AudioError(f"{path}: contains no audio")
    return resample(to_mono(y), orig_sr=int(native_rate), target_sr=sample_rate)
