"""The one audio path: decode, downmix, make finite, resample; and PCM wire frames to mono.

Every process gets its audio here, so a model sees the same samples whichever
way they arrived:

- **decode**: :class:`AudioReader` opens wav, flac, ogg and mp3 files at any
  sample rate and channel count with libsndfile (through soundfile) and reads
  them block by block, so memory stays bounded whatever the file's length;
  :func:`iter_audio_blocks` and :func:`load_audio` are its one-call forms.
  Training, file tagging (:mod:`model.tagging`) and the streamer's file source
  all decode through it, so they accept and refuse the same files.
- **downmix**: :func:`to_mono` averages channels.
- **finite**: :func:`finite_samples` replaces NaN by 0 and +-inf by +-1 and clips
  finite samples to +-:data:`SAMPLE_LIMIT`, *before* resampling: one NaN fed to
  the resampler's filter would spread over the whole signal.
- **resample**: :func:`resample` (offline) and :class:`Resampler` (streaming,
  block by block) use the same soxr "HQ" filter; pushing a signal in any
  blocks through :class:`Resampler` gives exactly :func:`resample`'s samples.
  The inference worker's per-stream state uses :class:`Resampler` too.
- **wire frames**: :func:`to_mono_float32` turns a :class:`protocol.AudioFrame`
  (f32, i16 or i32, interleaved channels) into mono float32.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from tagstream.errors import UnavailableError, UsageError

if TYPE_CHECKING:
    from protocol import AudioFrame

__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_BLOCK_SECONDS",
    "SAMPLE_LIMIT",
    "AudioError",
    "AudioInfo",
    "AudioReader",
    "Resampler",
    "finite_samples",
    "iter_audio_blocks",
    "load_audio",
    "resample",
    "to_mono",
    "to_mono_float32",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")

#: Finite samples are clipped to +-SAMPLE_LIMIT so that absurd values cannot
#: overflow the mel power to inf (audio is nominally in [-1, 1]).
SAMPLE_LIMIT: Final = 16.0

#: Seconds of audio :func:`load_audio` and :func:`iter_audio_blocks` decode per block.
DEFAULT_BLOCK_SECONDS: Final = 10.0

#: Full scale of the wire's integer sample formats, used by :func:`to_mono_float32`.
_FULL_SCALE: Final = {"i16": 32768.0, "i32": 2147483648.0}


class AudioError(UnavailableError, ValueError):
    """A file is missing, unreadable, corrupt or empty; the message names it (exit status 3)."""


# ---------------------------------------------------------------------------
# Downmix, finite samples, resampling
# ---------------------------------------------------------------------------


def to_mono(y: np.ndarray) -> np.ndarray:
    """Downmix (frames, channels) or (frames,) audio to float32 mono by averaging channels."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        return y.mean(axis=1, dtype=np.float32) if y.shape[1] > 1 else y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"audio must have shape (n,) or (n, channels), got {y.shape}")
    return y


def finite_samples(y: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN by 0 and +-inf by +-1, clip to +-:data:`SAMPLE_LIMIT`; count the replaced.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32

    Returns
    -------
    (samples, replaced) : np.ndarray [shape=(n,)] float32, int
        ``samples`` is ``y`` itself when nothing needed changing; ``replaced``
        counts the NaN and infinite samples (clipped finite ones are not counted).
    """
    y = np.asarray(y, dtype=np.float32)
    replaced = 0
    finite = np.isfinite(y)
    if not finite.all():
        replaced = int(len(y) - np.count_nonzero(finite))
        y = np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=-1.0)
    if len(y) and (y.max() > SAMPLE_LIMIT or y.min() < -SAMPLE_LIMIT):
        y = np.clip(y, -SAMPLE_LIMIT, SAMPLE_LIMIT)
    return y, replaced


def _check_rate(name: str, rate: int) -> None:
    if not isinstance(rate, int | np.integer) or rate <= 0:
        raise UsageError(f"{name}={rate!r} must be a positive integer (Hz)")


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int = 16000) -> np.ndarray:
    """Resample mono float32 audio with soxr ("HQ", librosa's default "soxr_hq").

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float
    orig_sr, target_sr : int > 0
        Hz.

    Returns
    -------
    np.ndarray [shape=(round(n * target_sr / orig_sr),)], float32
        ``y`` as float32 when the rates are equal.
    """
    _check_rate("orig_sr", orig_sr)
    _check_rate("target_sr", target_sr)
    if orig_sr == target_sr:
        return np.asarray(y, dtype=np.float32)
    import soxr

    out: np.ndarray = soxr.resample(
        np.asarray(y, dtype=np.float32), orig_sr, target_sr, quality="HQ"
    )
    return out.astype(np.float32, copy=False)


class Resampler:
    """Streaming :func:`resample`: push blocks, get the samples they complete.

    >>> resampler = Resampler(44100, 16000)
    >>> out = resampler.push(block)      # any block size, float32 mono
    >>> tail = resampler.flush()         # the filter's last samples; then a new signal may start

    The concatenated output of :meth:`push` calls and :meth:`flush` equals
    :func:`resample` of the whole signal.  With equal rates it passes samples
    through.  It keeps only the filter's state (a few hundred samples).

    Parameters
    ----------
    orig_sr, target_sr : int > 0
        Hz.
    """

    def __init__(self, orig_sr: int, target_sr: int) -> None:
        _check_rate("orig_sr", orig_sr)
        _check_rate("target_sr", target_sr)
        self.orig_sr = int(orig_sr)
        self.target_sr = int(target_sr)
        self._stream: Any = None

    def push(self, y: np.ndarray) -> np.ndarray:
        """Resample the next block of mono samples; return the output samples now complete."""
        y = np.asarray(y, dtype=np.float32)
        if self.orig_sr == self.target_sr:
            return y
        if self._stream is None:
            import soxr

            self._stream = soxr.ResampleStream(
                self.orig_sr, self.target_sr, 1, dtype="float32", quality="HQ"
            )
        out: np.ndarray = self._stream.resample_chunk(y)
        return out.astype(np.float32, copy=False)

    def flush(self) -> np.ndarray:
        """The signal is over: return the remaining output samples; the next push starts afresh."""
        stream, self._stream = self._stream, None
        if stream is None:
            return np.zeros(0, dtype=np.float32)
        out: np.ndarray = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        return out.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says.

    Attributes
    ----------
    path : str
    sample_rate : int
        The file's own rate, Hz.
    channels : int
    frames : int
        Samples per channel (libsndfile's count; an estimate for some mp3 files).
    """

    path: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _decode_error(path: Path, exc: BaseException, *, after_frames: int | None = None) -> AudioError:
    reason = getattr(exc, "error_string", "") or str(exc) or type(exc).__name__
    where = "" if after_frames is None else f" after {after_frames} frames"
    return AudioError(
        f"{path}: cannot decode{where}, corrupt or not audio (libsndfile: {reason}); "
        "tagstream reads wav, flac, ogg and mp3"
    )


class AudioReader:
    """An open audio file read block by block as finite mono float32 at one rate.

    Each block is decoded, downmixed (:func:`to_mono`), made finite
    (:func:`finite_samples`) and resampled (:class:`Resampler`), so memory is
    bounded by the block size whatever the file's length.

    Parameters
    ----------
    path : path-like
    sample_rate : int > 0 or None
        Rate of the samples :meth:`blocks` yields; ``None`` keeps the file's own rate.
    offset_seconds : float >= 0
        Skip this much of the file's start.
    max_seconds : float >= 0
        Read at most this much (0 = to the end).

    Raises
    ------
    AudioError
        Missing, unreadable or corrupt files (when opened); :meth:`blocks`
        raises it for files that fail mid-way or hold no audio.

    Attributes
    ----------
    info : AudioInfo
    sample_rate : int
        The output rate.
    frames_read : int
        Samples per channel decoded so far, at the file's rate.
    samples_replaced : int
        NaN and infinite samples replaced so far (see :func:`finite_samples`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sample_rate: int | None = None,
        offset_seconds: float = 0.0,
        max_seconds: float = 0.0,
    ) -> None:
        import soundfile as sf

        if not (math.isfinite(offset_seconds) and offset_seconds >= 0):
            raise UsageError(f"offset_seconds={offset_seconds} must be a finite number >= 0")
        if not (math.isfinite(max_seconds) and max_seconds >= 0):
            raise UsageError(f"max_seconds={max_seconds} must be a finite number >= 0")
        self.path = Path(path)
        if not self.path.exists():
            raise AudioError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise AudioError(f"{self.path}: is a folder, not an audio file")
        try:
            self._file: Any = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise _decode_error(self.path, exc) from None
        except OSError as exc:
            raise AudioError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        file = self._file
        self.info = AudioInfo(
            str(self.path), int(file.samplerate), int(file.channels), max(int(file.frames), 0)
        )
        if self.info.frames == 0:
            self.close()
            raise AudioError(f"{self.path}: contains no audio")
        if sample_rate is not None:
            _check_rate("sample_rate", sample_rate)
        self.sample_rate = int(sample_rate or self.info.sample_rate)
        self._resampler = Resampler(self.info.sample_rate, self.sample_rate)
        native = self.info.sample_rate
        self._remaining = round(max_seconds * native) if max_seconds > 0 else -1
        self.frames_read = 0
        self.samples_replaced = 0
        offset = round(offset_seconds * native)
        if offset:
            try:
                file.seek(min(offset, self.info.frames) if self.info.frames else offset)
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                self.close()
                raise _decode_error(self.path, exc) from None

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file; safe to call twice."""
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """Yield the audio as mono float32 blocks at :attr:`sample_rate`.

        Parameters
        ----------
        block_frames : int > 0
            Frames decoded per block, at the file's own rate: with
            ``sample_rate=None`` every block but the last has exactly this many
            samples; resampled blocks have about ``block_frames * sample_rate /
            info.sample_rate`` (the resampler's delay shifts a few to the end).

        Raises
        ------
        AudioError
            The file fails to decode mid-way, or holds no audio at all.
        """
        import soundfile as sf

        if block_frames <= 0:
            raise UsageError(f"block_frames={block_frames} must be > 0")
        if self._file is None:
            raise RuntimeError("blocks() on a closed AudioReader")
        while self._remaining != 0:
            want = block_frames if self._remaining < 0 else min(block_frames, self._remaining)
            try:
                data = self._file.read(want, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise _decode_error(self.path, exc, after_frames=self.frames_read) from None
            if data.shape[0] == 0:
                break
            self.frames_read += data.shape[0]
            if self._remaining > 0:
                self._remaining -= data.shape[0]
            samples, replaced = finite_samples(to_mono(data))
            self.samples_replaced += replaced
            out = self._resampler.push(samples)
            if len(out):
                yield np.ascontiguousarray(out)
        if self.frames_read == 0:
            raise AudioError(f"{self.path}: contains no audio")
        tail = self._resampler.flush()
        if len(tail):
            yield tail


def iter_audio_blocks(
    path: str | os.PathLike[str],
    *,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    sample_rate: int | None = 16000,
    offset_seconds: float = 0.0,
    max_seconds: float = 0.0,
) -> Iterator[np.ndarray]:
    """Decode ``path`` block by block to finite mono float32 at ``sample_rate``.

    Memory is bounded by ``block_seconds`` whatever the file's length.

    Parameters
    ----------
    path : path-like
    block_seconds : float > 0
        Seconds of the file decoded per block.
    sample_rate : int > 0 or None
        Output rate; ``None`` keeps the file's own.
    offset_seconds, max_seconds : float >= 0
        Skip the first ``offset_seconds``; read at most ``max_seconds`` (0 = all).

    Yields
    ------
    np.ndarray [shape=(n,)], float32

    Raises
    ------
    AudioError
        Missing, unreadable, corrupt or empty files.
    """
    if not (math.isfinite(block_seconds) and block_seconds > 0):
        raise UsageError(f"block_seconds={block_seconds} must be a finite number > 0")
    with AudioReader(
        path, sample_rate=sample_rate, offset_seconds=offset_seconds, max_seconds=max_seconds
    ) as reader:
        yield from reader.blocks(max(1, round(block_seconds * reader.info.sample_rate)))


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    offset_seconds: float = 0.0,
    max_seconds: float = 0.0,
) -> np.ndarray:
    """Decode ``path`` to finite mono float32 at ``sample_rate`` (the whole file in memory).

    The same samples as joining :func:`iter_audio_blocks`; prefer that for long files.

    Parameters
    ----------
    path : path-like
    sample_rate : int > 0
    offset_seconds, max_seconds : float >= 0
        Skip the first ``offset_seconds``; read at most ``max_seconds`` (0 = all).

    Returns
    -------
    np.ndarray [shape=(n,)], float32

    Raises
    ------
    AudioError
        Missing, unreadable, corrupt or empty files.
    """
    blocks = list(
        iter_audio_blocks(
            path,
            sample_rate=sample_rate,
            offset_seconds=offset_seconds,
            max_seconds=max_seconds,
        )
    )
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


# ---------------------------------------------------------------------------
# Wire frames
# ---------------------------------------------------------------------------


def to_mono_float32(frame: AudioFrame) -> np.ndarray:
    """Convert a wire block to mono float32 in [-1, 1], downmixing channels by their mean.

    Parameters
    ----------
    frame : protocol.AudioFrame

    Returns
    -------
    np.ndarray [shape=(frame.frames,), dtype=float32]
        For mono ``f32`` frames this is a (read-only) view of ``frame.samples``;
        otherwise a new array.  Integer formats are scaled by their full scale
        (``i16`` by 32768, ``i32`` by 2**31).  Non-finite ``f32`` samples are
        passed through: see :func:`finite_samples`.
    """
    samples = frame.samples
    if frame.sample_format == "f32":
        mono_f32: np.ndarray = (
            samples[:, 0].astype(np.float32, copy=False)
            if frame.channels == 1
            else samples.mean(axis=1, dtype=np.float32)
        )
        return mono_f32
    scale = np.float32(1.0 / _FULL_SCALE[frame.sample_format])
    if frame.channels == 1:
        mono = samples[:, 0].astype(np.float32)
    else:
        # float64 accumulation: exact for i32 sums before the final rounding to float32.
        mono = samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    mono *= scale
    return mono
