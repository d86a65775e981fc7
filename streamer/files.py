"""Audio files as a source: decoded with soundfile, sent at the file's own rate."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile

import protocol
from streamer.core import Block, ExitStatus, StreamerError

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
    StreamerError
        ``NO_INPUT`` if the file is missing or cannot be decoded, or its rate
        is outside the protocol's range.

    Notes
    -----
    Channels are downmixed to mono by their mean.  ``capture_time`` is the wall
    time at which streaming started plus the block's offset in the file.
    """

    live = False

    def __init__(self, path: str | Path, *, block_seconds: float = 0.1, realtime: bool = True):
        if not block_seconds > 0:
            raise StreamerError(
                f"block_seconds={block_seconds} must be > 0", status=ExitStatus.USAGE
            )
        self.path = Path(path)
        self.name = self.path.stem
        self.realtime = realtime
        if not self.path.is_file():
            raise StreamerError(f"no such audio file: {self.path}", status=ExitStatus.NO_INPUT)
        try:
            self._file: soundfile.SoundFile | None = soundfile.SoundFile(self.path)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
            raise StreamerError(
                f"cannot decode {self.path}: {exc}", status=ExitStatus.NO_INPUT
            ) from None
        self.sample_rate = int(self._file.samplerate)
        if not protocol.MIN_SAMPLE_RATE <= self.sample_rate <= protocol.MAX_SAMPLE_RATE:
            self.close()
            raise StreamerError(
                f"{self.path}: sample rate {self.sample_rate} Hz is outside "
                f"{protocol.MIN_SAMPLE_RATE}..{protocol.MAX_SAMPLE_RATE}",
                status=ExitStatus.NO_INPUT,
            )
        self.channels = int(self._file.channels)
        self.block_frames = max(1, round(block_seconds * self.sample_rate))
        self.blocks_read = 0

    @property
    def duration_s(self) -> float:
        """Length of the file in seconds (0 if unknown)."""
        return 0.0 if self._file is None else self._file.frames / self.sample_rate

    def status_fields(self) -> dict[str, int]:
        return {"blocks_read": self.blocks_read}

    def blocks(self, stop: threading.Event) -> Iterator[Block]:
        """Yield the file's blocks in order, paced in real time unless ``realtime=False``."""
        if self._file is None:
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
        while not stop.is_set():
            try:
                data = self._file.read(self.block_frames, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                raise StreamerError(
                    f"cannot decode {self.path} after {offset_frames} frames: {exc}",
                    status=ExitStatus.NO_INPUT,
                ) from None
            if data.shape[0] == 0:
                return
            mono = data[:, 0].copy() if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
            block = Block(
                index=self.blocks_read,
                samples=np.ascontiguousarray(mono, dtype=np.float32),
                sample_rate=self.sample_rate,
                capture_time=start_unix + offset_frames / self.sample_rate,
            )
            offset_frames += data.shape[0]
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
        if self._file is not None:
            self._file.close()
            self._file = None
