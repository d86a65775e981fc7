"""Audio files as a source: decoded by the one audio path, sent at the file's own rate."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import protocol
from model.audio import AudioReader
from streamer.core import Block
from tagstream.errors import UnavailableError, UsageError

__all__ = ["FileSource"]

logger = logging.getLogger(__name__)


class FileSource:
    """Blocks of a decoded audio file (wav, flac, ogg, mp3: whatever libsndfile reads).

    Parameters
    ----------
    path : str or Path
        The audio file.
    block_seconds : float > 0
        Seconds of audio per block (the last block may be shorter).
    realtime : bool
        ``True``: pace blocks like a live capture, each sent once its audio
        would have been recorded, on an absolute schedule (no drift).
        ``False`` (``--fast``): as fast as the socket takes them.

    Raises
    ------
    model.audio.AudioError
        The file is missing or cannot be decoded (an ``UnavailableError``, exit status 3).
    tagstream.errors.UnavailableError
        Its rate is outside the protocol's range.
    tagstream.errors.UsageError
        ``block_seconds`` is not positive.

    Notes
    -----
    Decoding is :class:`model.audio.AudioReader`'s, as for file tagging and
    training: channels are downmixed by their mean, NaN and infinite samples
    replaced, and the file's own rate is kept (the worker resamples).
    ``capture_time`` is the wall time at which streaming started plus the
    block's offset in the file.
    """

    live = False

    def __init__(self, path: str | Path, *, block_seconds: float = 0.1, realtime: bool = True):
        if not block_seconds > 0:
            raise UsageError(f"block_seconds={block_seconds} must be > 0")
        self.path = Path(path)
        self.name = self.path.stem
        self.realtime = realtime
        self._reader: AudioReader | None = AudioReader(self.path)
        self.sample_rate = self._reader.info.sample_rate
        if not protocol.MIN_SAMPLE_RATE <= self.sample_rate <= protocol.MAX_SAMPLE_RATE:
            self.close()
            raise UnavailableError(
                f"{self.path}: sample rate {self.sample_rate} Hz is outside "
                f"{protocol.MIN_SAMPLE_RATE}..{protocol.MAX_SAMPLE_RATE}"
            )
        self.channels = self._reader.info.channels
        self._duration_s = self._reader.info.duration_s
        self.block_frames = max(1, round(block_seconds * self.sample_rate))
        self.blocks_read = 0

    @property
    def duration_s(self) -> float:
        """Length of the file in seconds (0 if unknown)."""
        return self._duration_s

    def status_fields(self) -> dict[str, int]:
        return {"blocks_read": self.blocks_read}

    def blocks(self, stop: threading.Event) -> Iterator[Block]:
        """Yield the file's blocks in order, paced in real time unless ``realtime=False``.

        Raises
        ------
        model.audio.AudioError
            The file fails to decode mid-way.
        """
        if self._reader is None:
            raise RuntimeError("blocks() on a closed FileSource")
        logger.info(
            "reading file path=%s sample_rate=%d channels=%d duration_s=%.2f realtime=%s",
            self.path,
            self.sample_rate,
            self.channels,
            self.duration_s,
            self.realtime,
        )
        start_unix = time.time()
        start_mono = time.monotonic()
        offset_frames = 0
        for samples in self._reader.blocks(self.block_frames):
            if stop.is_set():
                return
            block = Block(
                index=self.blocks_read,
                samples=samples,
                sample_rate=self.sample_rate,
                capture_time=start_unix + offset_frames / self.sample_rate,
            )
            offset_frames += len(samples)
            if self.realtime:
                # A live capture delivers a block once its last sample is recorded.
                due = start_mono + offset_frames / self.sample_rate
                delay = due - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
            self.blocks_read += 1
            yield block

    def close(self) -> None:
        """Close the file; safe to call twice."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
