"""The streaming inference worker: audio blocks in (PULL), tag updates out (PUB).

``python -m inference`` runs it (see :mod:`inference.__main__`); tests and tools
drive :class:`Worker` in-process.  The rooms:

- :mod:`inference.worker`: sockets, the one batching loop, counters, status log;
- :mod:`inference.windows`: the socket-free per-stream logic (sequence checks,
  resampling, mel frames, sliding windows, gaps, the moving average);
- :mod:`inference.backends`: how due windows are computed, one class per
  ``inference.mode`` (exact, streaming);
- :mod:`inference.ready`: the ready file a started worker writes;
- :mod:`inference.errors`: why a worker cannot start.
"""

from inference.backends import BACKENDS, Backend, DueWindow, ExactBackend, StreamingBackend
from inference.errors import EndpointBindError, SettingsError, WorkerError
from inference.windows import (
    AcceptResult,
    ExponentialAverage,
    PendingWindow,
    StreamSettings,
    StreamState,
    WindowScheduler,
)
from inference.worker import Worker, WorkerStats

__all__ = [
    "BACKENDS",
    "AcceptResult",
    "Backend",
    "DueWindow",
    "EndpointBindError",
    "ExactBackend",
    "ExponentialAverage",
    "PendingWindow",
    "SettingsError",
    "StreamSettings",
    "StreamState",
    "StreamingBackend",
    "WindowScheduler",
    "Worker",
    "WorkerError",
    "WorkerStats",
]
