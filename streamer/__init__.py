"""Send audio to the tagstream inference worker: live capture or files, over ZeroMQ PUSH.

Library first (the CLI in :mod:`streamer.cli` is a thin layer over these)::

    from streamer import FileSource, Streamer

    source = FileSource("song.flac", block_seconds=0.1, realtime=False)
    Streamer(source, endpoint="tcp://127.0.0.1:5555").run()

Live capture uses :class:`streamer.capture.DeviceSource`, imported lazily so
that file streaming works on machines without PortAudio.  Files are decoded by
the one audio path, :mod:`model.audio`.  Errors are :mod:`tagstream.errors`
classes: a missing device or file is an ``UnavailableError`` (exit status 3),
bad usage a ``UsageError`` (2).
"""

from streamer.core import (
    Block,
    Sender,
    Source,
    Streamer,
    StreamerStats,
    default_stream_id,
)
from streamer.files import FileSource

__all__ = [
    "Block",
    "FileSource",
    "Sender",
    "Source",
    "Streamer",
    "StreamerStats",
    "default_stream_id",
]
