"""The streaming inference worker: audio blocks in (PULL), tag updates out (PUB).

``python -m inference`` runs it (see :mod:`inference.__main__`); tests and tools
drive :class:`Worker` in-process.  :mod:`inference.streams` holds the
socket-free per-stream logic (resampling, mel frames, sliding windows, gaps,
the moving average).
"""

from inference.streams import (
    AcceptResult,
    ExponentialAverage,
    PendingWindow,
    StreamSettings,
    StreamState,
    WindowScheduler,
)
from inference.worker import Worker, WorkerError, WorkerStats

__all__ = [
    "AcceptResult",
    "ExponentialAverage",
    "PendingWindow",
    "StreamSettings",
    "StreamState",
    "WindowScheduler",
    "Worker",
    "WorkerError",
    "WorkerStats",
]
