"""Pin each stream to one of several workers: rendezvous hashing of the stream id.

A worker keeps a stream's window (and, in streaming mode, its model cache), so
all of a stream's blocks must reach the same worker.  A ZeroMQ PUSH socket
connected to several workers round-robins *messages* between them, which
would split a stream; instead each streamer connects to the one worker that
:func:`endpoint_for` picks from ``streamer.endpoints``.

The pick is rendezvous (highest random weight) hashing: every endpoint scores
``blake2b(endpoint, stream id)`` and the highest score wins.  It is the same
in every process and on every machine (Python's ``hash`` is not), spreads
streams evenly, and when a worker is added or removed only the streams that
move to or from it change worker.

>>> endpoint_for("studio-a", ["tcp://w1:5555", "tcp://w2:5555"])  # doctest: +SKIP
'tcp://w2:5555'
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["endpoint_for"]


def _score(endpoint: str, stream_id: str) -> int:
    digest = hashlib.blake2b(
        endpoint.encode() + b"\x00" + stream_id.encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")


def endpoint_for(stream_id: str, endpoints: Sequence[str]) -> str:
    """The worker input endpoint that serves ``stream_id``.

    Parameters
    ----------
    stream_id : str
    endpoints : sequence of str, not empty
        Every worker's input endpoint, each written the same way in every
        streamer's config (the string is hashed, not the address it names).

    Raises
    ------
    ValueError
        If ``endpoints`` is empty or names the same endpoint twice.
    """
    if not endpoints:
        raise ValueError("endpoints must name at least one worker input endpoint")
    if len(set(endpoints)) != len(endpoints):
        raise ValueError(f"endpoints={list(endpoints)!r} names an endpoint twice")
    return max(endpoints, key=lambda endpoint: _score(endpoint, stream_id))
