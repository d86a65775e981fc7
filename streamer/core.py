"""The streamer's pipeline: a source of audio blocks -> a PUSH socket to the worker.

A *source* (:class:`streamer.capture.DeviceSource`, :class:`streamer.files.FileSource`)
yields :class:`Block` objects of mono float32 audio; :class:`Streamer` numbers
them, wraps them in :class:`protocol.AudioFrame` and sends them with
:class:`Sender`, which owns the ZeroMQ socket.  When the source ends (or
:meth:`Streamer.stop` is called) an :class:`protocol.EndOfStream` follows.
"""

from __future__ import annotations

import dataclasses
import logging
import socket as socket_module
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import zmq

import protocol
from config import SecurityConfig
from protocol.security import secure_client
from tagstream.errors import UsageError

__all__ = [
    "Block",
    "Sender",
    "Source",
    "Streamer",
    "StreamerStats",
    "default_stream_id",
]

logger = logging.getLogger(__name__)

#: Linger on close after a source ended normally: the queued tail goes as fast as the worker
#: takes it (the worker's input queue is small, so a --fast file may still have a long tail
#: here); after this long with no worker taking it, ZeroMQ discards what is left.
CLOSE_LINGER_MS = 30_000
#: Linger on close after stop() (Ctrl-C, SIGTERM): enough for the end message, within 1 s.
STOP_LINGER_MS = 200
#: Longest wait of one blocking send before the stop flag is checked again.
_SEND_SLICE_MS = 200


@dataclasses.dataclass(frozen=True, eq=False)
class Block:
    """One block of audio from a source.

    Parameters
    ----------
    index : int >= 0
        Block number since the source started, +1 per block *including lost
        ones*: it becomes the message ``seq``, so a loss shows as a gap.
    samples : np.ndarray [shape=(frames,), dtype=float32]
        Mono audio in [-1, 1].
    sample_rate : int
        Hz.
    capture_time : float
        Unix time of the first sample.
    """

    index: int
    samples: np.ndarray
    sample_rate: int
    capture_time: float


class Source(Protocol):
    """What :class:`Streamer` needs from a source of audio."""

    #: Short name for the default stream id (device name or file stem).
    name: str
    #: True for live capture (drop on back-pressure), False for files (wait).
    live: bool

    def blocks(self, stop: threading.Event) -> Iterator[Block]:
        """Yield blocks until the source ends or ``stop`` is set."""
        ...

    def status_fields(self) -> dict[str, int]:
        """Counters for the periodic status line (e.g. ``queue``, ``overflows``)."""
        ...

    def close(self) -> None:
        """Release the source; safe to call twice."""
        ...


def default_stream_id(name: str) -> str:
    """``"<hostname>:<name>"``, made a valid stream id (printable, at most 128 characters)."""
    raw = f"{socket_module.gethostname()}:{name or 'default'}"
    cleaned = "".join(ch if ch.isprintable() else "_" for ch in raw)
    return cleaned[: protocol.MAX_STREAM_ID_CHARS]


@dataclasses.dataclass(frozen=True)
class StreamerStats:
    """Counters of one :class:`Streamer` run."""

    sent: int
    dropped_send: int
    source: dict[str, int]


class Sender:
    """Owns the PUSH socket to the worker; sends audio and end messages.

    Parameters
    ----------
    endpoint : str
        The worker's input endpoint (``tcp://host:port`` or ``ipc://path``); connected, not bound,
        so ZeroMQ reconnects by itself when the worker restarts.
    send_hwm : int > 0
        Messages queued while the worker is away or slow.
    blocking : bool
        ``False`` (live capture): a full queue drops the message and counts it.
        ``True`` (files): wait for room, checking ``stop`` every 200 ms.
    context : zmq.Context or None
        Defaults to ``zmq.Context.instance()``.
    security : SecurityConfig or None
        CURVE keys (:mod:`protocol.security`); ``None`` = the defaults ("auto", no keys).

    Raises
    ------
    tagstream.errors.UsageError
        ``endpoint`` is not a ZeroMQ address.
    protocol.security.SecurityError
        CURVE is required for ``endpoint`` and a key setting is missing.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        send_hwm: int = 1000,
        blocking: bool = False,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: SecurityConfig | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.blocking = blocking
        self.sent = 0
        self.dropped = 0
        context = context if context is not None else zmq.Context.instance()
        self._socket: zmq.Socket[bytes] | None = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.SNDTIMEO, _SEND_SLICE_MS)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            secure_client(self._socket, security or SecurityConfig(), endpoints=[endpoint])
            self._socket.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise UsageError(f"cannot connect to endpoint {endpoint!r}: {exc}") from None
        except BaseException:
            self.close()
            raise

    def send(self, frames: Sequence[bytes | memoryview], *, stop: threading.Event) -> bool:
        """Send one multipart message without copying its buffers; return whether it went.

        Non-blocking senders drop (and count) when the high-water mark is reached;
        blocking ones wait until it fits or ``stop`` is set.
        """
        if self._socket is None:
            raise RuntimeError("send() on a closed Sender")
        flags = 0 if self.blocking else zmq.NOBLOCK
        while True:
            try:
                self._socket.send_multipart(frames, flags=flags, copy=False)
            except zmq.Again:
                if self.blocking and not stop.is_set():
                    continue
                self.dropped += 1
                return False
            self.sent += 1
            return True

    def close(self, *, linger_ms: int = 0) -> None:
        """Close the socket, waiting up to ``linger_ms`` for queued messages; idempotent."""
        if self._socket is not None:
            self._socket.close(linger=linger_ms)
            self._socket = None


class Streamer:
    """Stream one source to the worker: blocks -> audio messages -> end message.

    Parameters
    ----------
    source : Source
        Where the audio comes from.
    endpoint : str
        The worker's input endpoint.
    stream_id : str or None
        Stream id; ``None`` or ``""`` means :func:`default_stream_id` of the source's name.
    send_hwm : int > 0
        ZeroMQ send high-water mark, in messages.
    status_interval_s : float > 0
        Seconds between status log lines.
    context : zmq.Context or None
        ``None``: :meth:`run` creates its own and terminates it at the end, which
        waits (up to the linger) until the queued tail has been handed to the worker.
    security : SecurityConfig or None
        CURVE keys for the connection (see :class:`Sender`).

    Notes
    -----
    :meth:`run` blocks; :meth:`stop` may be called from any thread or a signal
    handler and makes :meth:`run` return within about 0.2 s.
    """

    def __init__(
        self,
        source: Source,
        *,
        endpoint: str,
        stream_id: str | None = None,
        send_hwm: int = 1000,
        status_interval_s: float = 10.0,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: SecurityConfig | None = None,
    ) -> None:
        self.source = source
        self.security = security
        self.endpoint = endpoint
        self.stream_id = stream_id or default_stream_id(source.name)
        try:
            protocol.check_stream_id(self.stream_id)
        except protocol.ProtocolError as exc:
            raise UsageError(f"bad stream id: {exc}") from None
        self.send_hwm = send_hwm
        self.status_interval_s = status_interval_s
        self._context = context
        self._stop = threading.Event()
        self._sender: Sender | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to finish (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stats(self) -> StreamerStats:
        sender = self._sender
        return StreamerStats(
            sent=sender.sent if sender else 0,
            dropped_send=sender.dropped if sender else 0,
            source=self.source.status_fields(),
        )

    def run(self) -> StreamerStats:
        """Stream until the source ends or :meth:`stop`; send the end message; close.

        Returns
        -------
        StreamerStats
            The final counters.

        Raises
        ------
        tagstream.errors.TagstreamError
            If the endpoint is invalid (:class:`~tagstream.errors.UsageError`) or the
            source fails for good (:class:`~tagstream.errors.UnavailableError`).
        """
        # An own context (unless one was given) so that terminating it below waits for the
        # queued tail (up to the linger) instead of losing it at interpreter exit.
        context = self._context if self._context is not None else zmq.Context()
        try:
            sender = Sender(
                self.endpoint,
                send_hwm=self.send_hwm,
                blocking=not self.source.live,
                context=context,
                security=self.security,
            )
        except BaseException:
            self.source.close()
            if context is not self._context:
                context.term()
            raise
        self._sender = sender
        logger.info(
            "streaming stream=%s source=%s endpoint=%s live=%s",
            self.stream_id,
            self.source.name,
            self.endpoint,
            self.source.live,
        )
        next_seq = 0
        next_status = time.monotonic() + self.status_interval_s
        linger_ms = STOP_LINGER_MS
        pop_events = self._forward_events(sender)
        try:
            for block in self.source.blocks(self._stop):
                frame = protocol.AudioFrame(
                    stream=self.stream_id,
                    seq=block.index,
                    capture_time=block.capture_time,
                    sample_rate=block.sample_rate,
                    channels=1,
                    sample_format="f32",
                    samples=block.samples.reshape(-1, 1),
                )
                sender.send(protocol.encode_audio(frame), stop=self._stop)
                for event in pop_events():  # after the block they belong to
                    self._send_event(sender, event)
                next_seq = block.index + 1
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + self.status_interval_s
                    self._log_status()
                if self._stop.is_set():
                    break
            if not self._stop.is_set():
                linger_ms = CLOSE_LINGER_MS
            end = protocol.EndOfStream(stream=self.stream_id, seq=next_seq)
            if not sender.send(protocol.encode_end(end), stop=self._stop):
                logger.warning("end message not queued stream=%s", self.stream_id)
            self._log_status()
            return self.stats()
        finally:
            self.source.close()
            sender.close(linger_ms=linger_ms)
            if context is not self._context:
                context.term()
            logger.info("stopped stream=%s", self.stream_id)

    # -- source events (streamer.network: titles, drops, reconnects) ----------------------

    def _forward_events(self, sender: Sender) -> Callable[[], list[Any]]:
        """The source's events for the worker: ``source_down`` at once, the rest after sends.

        A ``source_down`` comes while no block does, so it is sent from the source's
        ``on_event`` (called in this thread, inside ``blocks()``); ``now_playing`` and
        ``source_up`` follow the block they belong to (the worker maps their ``at_s``
        with it).  Sources without ``pop_events`` have no events.
        """
        pop = getattr(self.source, "pop_events", None)
        if pop is None:
            return list
        if getattr(self.source, "on_event", "") is None:

            def on_event(event: Any) -> None:
                if event.kind == "source_down":
                    self._send_event(sender, event)

            self.source.on_event = on_event  # type: ignore[attr-defined]
        return lambda: [e for e in pop() if e.kind != "source_down"]

    def _send_event(self, sender: Sender, event: Any) -> None:
        try:
            message = protocol.Event(
                self.stream_id,
                event.kind,
                time=event.time,
                at_s=event.at_s,
                fields={name: getattr(event, name) for name in protocol.EVENT_FIELDS[event.kind]},
            )
        except protocol.ProtocolError as exc:
            logger.warning("source event not sent stream=%s error=%s", self.stream_id, exc)
            return
        if not sender.send(protocol.encode_event(message, topic=False), stop=self._stop):
            logger.warning("source event dropped stream=%s event=%s", self.stream_id, event.kind)

    def _log_status(self) -> None:
        stats = self.stats()
        fields = " ".join(f"{key}={value}" for key, value in stats.source.items())
        logger.info(
            "status stream=%s sent=%d dropped_send=%d %s",
            self.stream_id,
            stats.sent,
            stats.dropped_send,
            fields,
        )
