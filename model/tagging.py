"""The one-call file-tagging API: an audio file in, its tags out.

>>> tagger = load_tagger("MSD_musicnn")                       # doctest: +SKIP
>>> result = tag_file("song.mp3", tagger)                     # doctest: +SKIP
>>> result.top(3)                                             # doctest: +SKIP
[('rock', 0.61), ('guitar', 0.38), ('alternative', 0.31)]

A file is decoded block by block (:class:`model.audio.AudioReader`: downmix,
finite samples, resampling to the model's rate), its log-mel frames are
computed incrementally (:class:`model.features.MelExtractor`) and cut into
windows of the model's length every ``hop_seconds``, which go through the model
in batches as they are complete.  So memory is bounded by the block, the batch
and one window whatever the file's length; only the per-window results grow
with it.  The windows are exactly ``Tagger.tag_audio``'s on the decoded signal:
whole windows only, starting at 0, ``hop``, ``2 hop``, ...; a file's tags are
the mean probability over its windows.

:func:`tag_files` tags many files in order while the next ones are decoded in
threads (``python -m tools.tag`` runs it).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypedDict

import numpy as np

from model.audio import DEFAULT_BLOCK_SECONDS, AudioError, AudioReader
from model.contract import ModelContract
from model.features import MelExtractor
from tagstream.errors import TagstreamError, UnavailableError, UsageError

if TYPE_CHECKING:
    from model.tagger import BaseTagger

__all__ = [
    "DecodedFile",
    "FileTags",
    "FileTagsJSON",
    "TagError",
    "WindowTags",
    "WindowTagsJSON",
    "decode_file",
    "hop_frames_for",
    "tag_decoded",
    "tag_file",
    "tag_files",
]

logger = logging.getLogger(__name__)

#: A sample above this magnitude means the file is not silent.
SILENCE_LEVEL: Final = 1e-4


class TagError(UnavailableError, ValueError):
    """A file could not be tagged (too short, or the model gave no valid answer)."""


class WindowTagsJSON(TypedDict):
    start_s: float
    tags: dict[str, float]


class FileTagsJSON(TypedDict):
    path: str
    duration_s: float
    model: str
    tags: dict[str, float]
    windows: list[WindowTagsJSON]


@dataclass(frozen=True)
class WindowTags:
    """Tags of one window.

    Attributes
    ----------
    start_s : float >= 0
        Seconds from the file's start (rounded to 1 ms).
    tags : dict {tag: probability}
        In the model's tag order, probabilities in [0, 1] rounded to 6 decimals.
    """

    start_s: float
    tags: dict[str, float]


@dataclass(frozen=True)
class FileTags:
    """Tags of one file: the mean over its windows, and each window's.

    Attributes
    ----------
    path : str
    duration_s : float
        Length of the decoded audio (before any padding).
    model : str
        The model's name.
    tags : dict {tag: probability}
        Mean over the windows, in the model's tag order, rounded to 6 decimals.
    windows : tuple of WindowTags
    padded : bool
        The file was shorter than one window and padded with silence.
    silent : bool
        No sample above :data:`SILENCE_LEVEL`: the tags mean little.
    samples_replaced : int
        NaN and infinite samples replaced (:func:`model.audio.finite_samples`).
    """

    path: str
    duration_s: float
    model: str
    tags: dict[str, float]
    windows: tuple[WindowTags, ...]
    padded: bool = False
    silent: bool = False
    samples_replaced: int = 0

    def to_json_dict(self) -> FileTagsJSON:
        """The JSON object ``python -m tools.tag --json`` prints (one per line)."""
        return {
            "path": self.path,
            "duration_s": round(self.duration_s, 3),
            "model": self.model,
            "tags": self.tags,
            "windows": [{"start_s": w.start_s, "tags": w.tags} for w in self.windows],
        }

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable tags, most probable first."""
        return sorted(self.tags.items(), key=lambda item: -item[1])[:k]


def hop_frames_for(hop_seconds: float, contract: ModelContract) -> int | None:
    """Mel frames between window starts; ``None`` (the window length) for ``hop_seconds`` 0.

    Raises
    ------
    tagstream.errors.UsageError
        ``hop_seconds`` is negative, not finite, or shorter than one mel frame.
    """
    if not math.isfinite(hop_seconds) or hop_seconds < 0:
        raise UsageError(f"hop_seconds={hop_seconds} must be a finite number >= 0")
    if hop_seconds == 0:
        return None
    hop_frames = contract.features.frames_for(hop_seconds)
    if not hop_frames:
        raise UsageError(f"hop_seconds={hop_seconds} is shorter than one mel frame")
    return int(hop_frames)


@dataclass
class _Windows:
    """A file's log-mel windows, computed block by block and handed out in batches.

    :meth:`batches` yields arrays (b, window_frames, n_mels), b <= batch_size;
    once it is exhausted the other attributes describe the file.
    """

    path: str
    contract: ModelContract
    hop_frames: int
    pad: bool
    batch_size: int
    block_seconds: float
    starts: list[int] = field(default_factory=list)
    samples: int = 0
    padded: bool = False
    silent: bool = True
    samples_replaced: int = 0

    def batches(self) -> Iterator[np.ndarray]:
        spec = self.contract.features
        window = self.contract.window_frames
        extractor = MelExtractor(spec=spec)
        frames = np.zeros((0, spec.n_mels), dtype=np.float32)
        origin = 0  # frame index of frames[0]
        next_start = 0
        batch: list[np.ndarray] = []

        def windows_of(new: np.ndarray) -> Iterator[np.ndarray]:
            nonlocal frames, origin, next_start
            frames = np.concatenate([frames, new]) if len(new) else frames
            while next_start + window <= origin + len(frames):
                offset = next_start - origin
                batch.append(frames[offset : offset + window])
                self.starts.append(next_start)
                next_start += self.hop_frames
                if len(batch) == self.batch_size:
                    yield np.stack(batch)
                    batch.clear()
            keep_from = min(next_start - origin, len(frames))
            frames = frames[keep_from:]
            origin += keep_from

        with AudioReader(self.path, sample_rate=spec.sample_rate) as reader:
            block_frames = max(1, round(self.block_seconds * reader.info.sample_rate))
            for block in reader.blocks(block_frames):
                self.samples += len(block)
                if self.silent and np.any(np.abs(block) > SILENCE_LEVEL):
                    self.silent = False
                yield from windows_of(extractor.push(block))
            self.samples_replaced = reader.samples_replaced
        window_samples = window * spec.hop_length
        if self.samples < window_samples:
            if not self.pad:
                raise TagError(
                    f"{self.path}: too short ({self.samples / spec.sample_rate:.2f} s); the model "
                    f"needs at least {self.contract.window_seconds:.2f} s; "
                    "pass --pad to pad it with silence"
                )
            self.padded = True
            yield from windows_of(
                extractor.push(np.zeros(window_samples - self.samples, dtype=np.float32))
            )
        yield from windows_of(extractor.flush())
        if batch:
            yield np.stack(batch)
            batch.clear()


def _result(
    windows: _Windows | DecodedFile, probabilities: list[np.ndarray], contract: ModelContract
) -> FileTags:
    """Build the :class:`FileTags` of a file from its windows' probabilities."""
    spec = contract.features
    values = (
        np.concatenate(probabilities)
        if probabilities
        else np.zeros((0, len(contract.tags)), dtype=np.float32)
    )
    if not np.isfinite(values).all():
        raise TagError(f"{windows.path}: the model gave non-finite probabilities; report this file")
    if windows.samples_replaced:
        logger.warning(
            "path=%s non-finite samples replaced=%d (NaN -> 0, inf -> +-1)",
            windows.path,
            windows.samples_replaced,
        )
    if windows.silent:
        logger.warning("path=%s is silent: its tags mean nothing", windows.path)
    tags = contract.tags
    mean = values.mean(axis=0)
    starts = np.asarray(windows.starts, dtype=np.int64) * spec.frame_seconds
    return FileTags(
        path=windows.path,
        duration_s=windows.samples / spec.sample_rate,
        model=contract.name,
        tags={tag: round(float(p), 6) for tag, p in zip(tags, mean, strict=True)},
        windows=tuple(
            WindowTags(
                start_s=round(float(start), 3),
                tags={tag: round(float(p), 6) for tag, p in zip(tags, row, strict=True)},
            )
            for start, row in zip(starts, values, strict=True)
        ),
        padded=windows.padded,
        silent=windows.silent,
        samples_replaced=windows.samples_replaced,
    )


def _check_batching(batch_size: int, block_seconds: float) -> None:
    if batch_size <= 0:
        raise UsageError(f"batch_size={batch_size} must be > 0")
    if not (math.isfinite(block_seconds) and block_seconds > 0):
        raise UsageError(f"block_seconds={block_seconds} must be a finite number > 0")


def tag_file(
    path: str | os.PathLike[str],
    tagger: BaseTagger,
    *,
    hop_seconds: float = 0.0,
    pad: bool = False,
    batch_size: int = 32,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
) -> FileTags:
    """Decode, window and tag one audio file.

    Parameters
    ----------
    path : path-like
        wav, flac, ogg or mp3 (whatever libsndfile reads), any rate and channels.
    tagger : model.tagger.BaseTagger (either backend)
    hop_seconds : float >= 0
        Seconds between window starts; 0 means the window length (no overlap).
    pad : bool
        Pad a file shorter than one window with silence instead of refusing it.
    batch_size : int > 0
        Windows per model call.
    block_seconds : float > 0
        Seconds of the file decoded at a time (memory, not results).

    Returns
    -------
    FileTags

    Raises
    ------
    model.audio.AudioError
        Missing, unreadable, corrupt or empty files.
    TagError
        Files shorter than one window (without ``pad``).
    tagstream.errors.UsageError
        A bad ``hop_seconds``, ``batch_size`` or ``block_seconds``.
    """
    contract = tagger.contract
    hop = hop_frames_for(hop_seconds, contract) or contract.window_frames
    _check_batching(batch_size, block_seconds)
    windows = _Windows(os.fspath(path), contract, hop, pad, batch_size, block_seconds)
    probabilities = [tagger.predict(batch) for batch in windows.batches()]
    return _result(windows, probabilities, contract)


#: End of one file's batches in :func:`tag_files`' queues.
_DONE: Final = object()


def tag_files(
    paths: Iterable[str | os.PathLike[str]],
    tagger: BaseTagger,
    *,
    hop_seconds: float = 0.0,
    pad: bool = False,
    batch_size: int = 32,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    decode_threads: int = 2,
    prefetch: int = 4,
    queue_batches: int = 4,
) -> Iterator[tuple[str, FileTags | TagstreamError]]:
    """Tag many files in order, decoding the next ones while the model runs.

    Decoding (libsndfile, soxr) and the log-mel run in ``decode_threads``
    threads, at most ``prefetch`` files ahead, each holding at most
    ``queue_batches`` batches of windows; the model runs in the caller's thread.
    Memory is bounded by those numbers, not by the files' lengths.

    Yields
    ------
    (path, FileTags) or (path, error)
        ``error`` is the :class:`model.audio.AudioError` or :class:`TagError` of
        a file that failed; other files are still tagged.

    Raises
    ------
    tagstream.errors.UsageError
        A bad ``hop_seconds``, ``batch_size`` or ``block_seconds`` (before any file).
    """
    contract = tagger.contract
    hop = hop_frames_for(hop_seconds, contract) or contract.window_frames
    _check_batching(batch_size, block_seconds)
    if decode_threads <= 0 or prefetch <= 0 or queue_batches <= 0:
        raise UsageError(
            f"decode_threads={decode_threads}, prefetch={prefetch} and "
            f"queue_batches={queue_batches} must be > 0"
        )
    stop = threading.Event()

    def put(out: queue.Queue[object], item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce(windows: _Windows, out: queue.Queue[object]) -> None:
        try:
            for batch in windows.batches():
                if not put(out, batch):
                    return
        except BaseException as exc:  # handed to the caller's thread: reported or raised there
            put(out, exc)
            return
        put(out, _DONE)

    pending: list[tuple[_Windows, queue.Queue[object]]] = []
    todo = iter(paths)
    with ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode") as pool:

        def submit_next() -> None:
            path = next(todo, None)
            if path is not None:
                windows = _Windows(os.fspath(path), contract, hop, pad, batch_size, block_seconds)
                out: queue.Queue[object] = queue.Queue(maxsize=queue_batches)
                pending.append((windows, out))
                pool.submit(produce, windows, out)

        try:
            for _ in range(prefetch):
                submit_next()
            while pending:
                windows, out = pending.pop(0)
                submit_next()
                probabilities: list[np.ndarray] = []
                failure: TagstreamError | None = None
                while True:
                    item = out.get()
                    if item is _DONE:
                        break
                    if isinstance(item, AudioError | TagError):
                        failure = item
                        break
                    if isinstance(item, BaseException):
                        raise item
                    assert isinstance(item, np.ndarray)
                    probabilities.append(tagger.predict(item))
                if failure is None:
                    try:
                        result: FileTags | TagstreamError = _result(
                            windows, probabilities, contract
                        )
                    except TagError as exc:
                        result = exc
                else:
                    result = failure
                yield windows.path, result
        finally:
            stop.set()  # producers blocked on a full queue give up within 0.1 s
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class DecodedFile:
    """A file decoded into its log-mel windows, not yet tagged (:func:`decode_file`).

    For engines that decode in one process and tag in another (``archive.ray_engine``):
    the windows are exactly :func:`tag_file`'s, and :func:`tag_decoded` turns them
    into the same :class:`FileTags`.

    Attributes
    ----------
    path : str
    windows : np.ndarray [shape=(n, window_frames, n_mels)], float32
    starts : tuple of int
        Each window's first mel frame.
    samples : int
        Decoded samples at the model's rate (before any padding).
    padded, silent : bool
    samples_replaced : int
    """

    path: str
    windows: np.ndarray
    starts: tuple[int, ...]
    samples: int
    padded: bool = False
    silent: bool = False
    samples_replaced: int = 0


def decode_file(
    path: str | os.PathLike[str],
    contract: ModelContract,
    *,
    hop_seconds: float = 0.0,
    pad: bool = False,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
) -> DecodedFile:
    """Decode one file into the windows :func:`tag_file` would give the model.

    Needs only the model's contract, not the model.  Memory holds all of the
    file's windows (about 24 kB per second of audio for the pretrained models).

    Raises
    ------
    model.audio.AudioError, TagError, tagstream.errors.UsageError
        As :func:`tag_file`.
    """
    hop = hop_frames_for(hop_seconds, contract) or contract.window_frames
    _check_batching(1, block_seconds)
    windows = _Windows(os.fspath(path), contract, hop, pad, 256, block_seconds)
    batches = list(windows.batches())
    spec = contract.features
    return DecodedFile(
        path=windows.path,
        windows=(
            np.concatenate(batches)
            if batches
            else np.zeros((0, contract.window_frames, spec.n_mels), dtype=np.float32)
        ),
        starts=tuple(windows.starts),
        samples=windows.samples,
        padded=windows.padded,
        silent=windows.silent,
        samples_replaced=windows.samples_replaced,
    )


def tag_decoded(
    files: Sequence[DecodedFile], tagger: BaseTagger, *, batch_size: int = 32
) -> list[FileTags | TagError]:
    """Tag decoded files, batching windows across files; one result per file, in order.

    Raises
    ------
    tagstream.errors.UsageError
        A bad ``batch_size``.
    """
    _check_batching(batch_size, DEFAULT_BLOCK_SECONDS)
    contract = tagger.contract
    if not files:
        return []
    windows = np.concatenate([f.windows for f in files])
    probabilities = np.concatenate(
        [tagger.predict(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]
        or [np.zeros((0, len(contract.tags)), dtype=np.float32)]
    )
    results: list[FileTags | TagError] = []
    offset = 0
    for f in files:
        n = len(f.windows)
        try:
            results.append(_result(f, [probabilities[offset : offset + n]], contract))
        except TagError as exc:
            results.append(exc)
        offset += n
    return results
