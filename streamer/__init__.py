"""Send audio to the tagstream inference worker: live capture or files, over ZeroMQ PUSH.

Library first (the CLI in :mod:`streamer.cli` is a thin layer over these)::

    from streamer import FileSource, Streamer

    source = FileSource("song.flac", block_seconds=0.1, realtime=False)
    Streamer(source, endpoint="tcp://127.0.0.1:5555").run()

Live capture uses :class:`streamer.capture.DeviceSource`, imported lazily so
that file streaming works on machines without PortAudio.
"""

from streamer.core import (
    Block,
    ExitStatus,
    Sender,
    Source,
    Streamer,
    StreamerError,
    StreamerStats,
    default_stream_id,
)
from streamer.files import FileSource

__all__ = [
    "Block",
    "ExitStatus",
    "FileSource",
    "Sender",
    "Source",
    "Streamer",
    "StreamerError",
    "StreamerStats",
    "default_stream_id",
]
