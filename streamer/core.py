"""The streamer's pipeline: a source of audio blocks -> a DEALER socket to the worker.

A *source* (:class:`streamer.capture.DeviceSource`, :class:`streamer.files.FileSource`)
yields :class:`Block` objects of mono float32 audio; :class:`Streamer` numbers
them, wraps them in :class:`protocol.AudioFrame` and sends them with
:class:`Sender`, which owns the ZeroMQ socket.  When the source ends (or
:meth:`Streamer.stop` is called) an :class:`protocol.EndOfStream` follows.

The worker answers on the same connection with acks (:class:`protocol.Ack`,
``docs/PROTOCOL.md``): a file sent with ``--fast`` keeps at most
:data:`FLOW_WINDOW_S` seconds of audio unacknowledged (flow control), and when
a source ends the streamer waits for the worker to say it has tagged the last
window (the end-of-stream handshake), for as long as the worker keeps making
progress through what is left.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import socket as socket_module
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

import protocol
from config import SecurityConfig
from protocol.security import secure_client, watch_handshake
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

#: Linger on close after a source ended, when the worker sends no acks (an older worker):
#: the queued tail goes as fast as the worker takes it; after this long ZeroMQ discards it.
#: With acks the streamer waits for the end-of-stream handshake instead.
CLOSE_LINGER_MS = 30_000
#: Flow control of sources that are not live (``--fast``): most seconds of audio sent and not
#: yet acknowledged by the worker.  Small enough that the worker never drops a waiting window
#: (``max_pending_windows``), large enough to keep its batches full.
FLOW_WINDOW_S = 8.0
#: End-of-stream handshake: after the last ack that made progress, wait this long plus
#: :data:`END_WAIT_FACTOR` times what the unacknowledged audio should take at the rate the
#: worker has been acknowledging (so the timeout grows with the backlog, not a fixed time).
END_WAIT_BASE_S = 10.0
END_WAIT_FACTOR = 3.0
#: A worker that has sent no ack this long after audio went out sends none (an older worker,
#: or a sender it cannot answer): flow control is switched off and the tail is left to linger.
NO_ACK_GIVE_UP_S = 30.0
#: Say "no worker connected" when none has been for this long.
NO_WORKER_WARN_S = 2.0
#: Linger on close after stop() (Ctrl-C, SIGTERM): enough for the end message, within 1 s.
STOP_LINGER_MS = 200
#: Longest wait of one blocking send before the stop flag is checked again.
_SEND_SLICE_MS = 200
#: Blocks remembered while unacknowledged (a worker that never acks cannot grow the streamer).
_MAX_IN_FLIGHT = 100_000


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
    """Counters of one :class:`Streamer` run.

    Attributes
    ----------
    sent : int
        Messages handed to ZeroMQ while a worker was connected.
    dropped_send : int
        Messages dropped because the send queue was full (live sources).
    source : dict
        The source's own counters.
    queued : int
        Messages handed to ZeroMQ while no worker was connected: they wait in the
        send queue (``send_hwm``) and go if one connects in time.
    acked : int
        Blocks the worker acknowledged (all blocks below this ``seq``; 0 without acks).
    worker_connected : bool
        Whether a worker is connected now.
    """

    sent: int
    dropped_send: int
    source: dict[str, int]
    queued: int = 0
    acked: int = 0
    worker_connected: bool = False


class Sender:
    """Owns the DEALER socket to the worker; sends audio and end messages, reads acks.

    The socket has a routing id of its own (:func:`protocol.new_sender_id`), so a
    reconnect keeps its streams (``docs/PROTOCOL.md``, "Stream ownership").

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
        self.queued = 0
        self.dropped = 0
        self.bad_acks = 0
        #: Called while a blocking send waits for room (the streamer's status checks).
        self.on_wait: Callable[[], None] | None = None
        self._connected = False
        self._connections = 0
        context = context if context is not None else zmq.Context.instance()
        self._socket: zmq.Socket[bytes] | None = context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.ROUTING_ID, protocol.new_sender_id())
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.RCVHWM, 1000)
        self._socket.setsockopt(zmq.SNDTIMEO, _SEND_SLICE_MS)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._handshake = None  # a refused CURVE key raises in send(), never waits for ever
        self._monitor: zmq.Socket[bytes] | None = None
        try:
            security = security or SecurityConfig()
            if secure_client(self._socket, security, endpoints=[endpoint]):
                self._handshake = watch_handshake(self._socket, security)
            else:  # the handshake watch is the socket's one monitor when CURVE is on
                self._monitor = self._socket.get_monitor_socket(
                    zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
                )
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
            if self._handshake is not None:
                self._handshake.check()
            try:
                self._socket.send_multipart(frames, flags=flags, copy=False)
            except zmq.Again:
                if self.blocking and not stop.is_set():
                    if self.on_wait is not None:
                        self.on_wait()
                    continue
                self.dropped += 1
                return False
            if self.connected:
                self.sent += 1
            else:
                self.queued += 1
            return True

    @property
    def connected(self) -> bool:
        """Whether a worker is connected (its ZeroMQ handshake done, not disconnected since)."""
        self._read_monitor()
        if self._handshake is not None:  # CURVE: the watch counts handshakes, not disconnects
            return self._handshake.succeeded > 0
        return self._connected

    @property
    def connections(self) -> int:
        """Handshakes with a worker so far (a new one after a disconnect: a reconnect)."""
        self._read_monitor()
        if self._handshake is not None:
            return self._handshake.succeeded
        return self._connections

    def _read_monitor(self) -> None:
        if self._handshake is not None:
            self._handshake.check()
        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._connected = True
                self._connections += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._connected = False

    def receive(self, timeout_ms: int = 0) -> list[protocol.Ack]:
        """The acks that have arrived, waiting up to ``timeout_ms`` for the first.

        Anything else from the worker is counted (``bad_acks``) and skipped.
        """
        if self._socket is None:
            raise RuntimeError("receive() on a closed Sender")
        acks: list[protocol.Ack] = []
        if not self._socket.poll(timeout_ms, zmq.POLLIN):
            return acks
        while True:
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return acks
            try:
                acks.append(protocol.decode_ack(frames))
            except protocol.ProtocolError as exc:
                self.bad_acks += 1
                logger.debug("skipped a message from the worker: %s", exc)

    def close(self, *, linger_ms: int = 0) -> None:
        """Close the socket, waiting up to ``linger_ms`` for queued messages; idempotent."""
        if self._handshake is not None:
            self._handshake.close()
        if self._monitor is not None:
            if self._socket is not None:
                self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
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
        self._worker_connected = False
        self._connections = 0
        self._started = time.monotonic()
        self._next_status = time.monotonic() + status_interval_s
        self._no_worker_logged = 0.0
        # Acks (docs/PROTOCOL.md): blocks sent and not yet acknowledged, (seq, seconds).
        self._in_flight: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=_MAX_IN_FLIGHT
        )
        self._acked = -1
        self._acked_audio_s = 0.0
        self._first_ack: tuple[float, float] | None = None  # (monotonic, acked audio seconds)
        self._last_progress = 0.0
        self._end_acked = False
        self._flow_control = True

    def stop(self) -> None:
        """Ask :meth:`run` to finish (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stats(self) -> StreamerStats:
        """The counters so far (safe from any thread)."""
        sender = self._sender
        return StreamerStats(
            sent=sender.sent if sender else 0,
            dropped_send=sender.dropped if sender else 0,
            source=self.source.status_fields(),
            queued=sender.queued if sender else 0,
            acked=max(self._acked, 0),
            worker_connected=self._worker_connected,
        )

    def run(self) -> StreamerStats:
        """Stream until the source ends or :meth:`stop`; send the end message; close.

        When the source ends (not on :meth:`stop`), waits for the worker's end
        acknowledgement (its last window tagged) while the worker makes progress.

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
        sender.on_wait = lambda: self._check(sender)
        self._started = time.monotonic()
        logger.info(
            "streaming stream=%s source=%s endpoint=%s live=%s",
            self.stream_id,
            self.source.name,
            self.endpoint,
            self.source.live,
        )
        next_seq = 0
        linger_ms = STOP_LINGER_MS
        pop_events = self._forward_events(sender)
        try:
            for block in self.source.blocks(self._stop):
                if not self.source.live:
                    self._wait_for_credit(sender)
                frame = protocol.AudioFrame(
                    stream=self.stream_id,
                    seq=block.index,
                    capture_time=block.capture_time,
                    sample_rate=block.sample_rate,
                    channels=1,
                    sample_format="f32",
                    samples=block.samples.reshape(-1, 1),
                    live=self.source.live,
                )
                sent = sender.send(protocol.encode_audio(frame), stop=self._stop)
                if sent and block.index >= self._acked:
                    self._in_flight.append((block.index, frame.duration_s))
                for event in pop_events():  # after the block they belong to
                    self._send_event(sender, event)
                next_seq = block.index + 1
                self._check(sender)
                if self._stop.is_set():
                    break
            end = protocol.EndOfStream(stream=self.stream_id, seq=next_seq)
            if not sender.send(protocol.encode_end(end), stop=self._stop):
                logger.warning("end message not queued stream=%s", self.stream_id)
            elif not self._stop.is_set() and not self._wait_for_end(sender, next_seq):
                linger_ms = CLOSE_LINGER_MS  # no acks: let ZeroMQ hand over the tail
            self._log_status()
            return self.stats()
        finally:
            self.source.close()
            sender.close(linger_ms=linger_ms)
            if context is not self._context:
                context.term()
            logger.info("stopped stream=%s", self.stream_id)

    # -- acks: flow control and the end-of-stream handshake --------------------------------

    def _check(self, sender: Sender) -> None:
        """Read acks and connection events; the status line and "no worker" when due."""
        self._take_acks(sender.receive(0))
        self._watch_connection(sender)
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + self.status_interval_s
            self._log_status()

    def _watch_connection(self, sender: Sender) -> None:
        connected = sender.connected
        self._worker_connected = connected
        connections = sender.connections
        if connections > self._connections:
            if self._connections:  # a reconnect: what was in flight may be lost with the worker
                logger.info(
                    "worker reconnected stream=%s endpoint=%s", self.stream_id, self.endpoint
                )
                self._in_flight.clear()
            self._connections = connections
            self._no_worker_logged = 0.0
        now = time.monotonic()
        if connected or now - self._started < NO_WORKER_WARN_S:
            return
        if now - self._no_worker_logged >= self.status_interval_s:
            self._no_worker_logged = now
            logger.warning(
                "no worker connected to %s; is `python -m inference` running? stream=%s "
                "queued=%d dropped_send=%d (queued blocks go once a worker connects, up to "
                "send_hwm=%d)",
                self.endpoint,
                self.stream_id,
                sender.queued,
                sender.dropped,
                self.send_hwm,
            )

    def _take_acks(self, acks: list[protocol.Ack]) -> None:
        now = time.monotonic()
        for ack in acks:
            if ack.stream != self.stream_id:
                continue
            if ack.end:
                self._end_acked = True
            if ack.seq > self._acked:
                self._acked = ack.seq
                self._last_progress = now
                in_flight = self._in_flight
                while in_flight and in_flight[0][0] < ack.seq:
                    self._acked_audio_s += in_flight.popleft()[1]
                if self._first_ack is None:
                    self._first_ack = (now, self._acked_audio_s)

    def _in_flight_s(self) -> float:
        return sum(seconds for _, seconds in self._in_flight)

    def _ack_rate(self) -> float:
        """Audio seconds the worker has acknowledged per second (1.0 until it can be told)."""
        if self._first_ack is None:
            return 1.0
        started, audio_s = self._first_ack
        elapsed = self._last_progress - started
        if elapsed < 1.0:
            return 1.0
        return max((self._acked_audio_s - audio_s) / elapsed, 0.05)

    def _wait_for_credit(self, sender: Sender) -> None:
        """Flow control: wait while :data:`FLOW_WINDOW_S` of audio awaits the worker's ack."""
        if not self._flow_control:
            return
        waiting_since = time.monotonic()
        while self._in_flight_s() >= FLOW_WINDOW_S - 1e-6 and not self._stop.is_set():
            self._take_acks(sender.receive(_SEND_SLICE_MS))
            self._check(sender)
            if self._first_ack is None and time.monotonic() - waiting_since > NO_ACK_GIVE_UP_S:
                logger.warning(
                    "the worker at %s sends no acknowledgements (an older worker?); sending "
                    "stream=%s without flow control, and the end of the file may be lost",
                    self.endpoint,
                    self.stream_id,
                )
                self._flow_control = False
                return

    def _wait_for_end(self, sender: Sender, end_seq: int) -> bool:
        """Wait for the worker's end ack; False when it sends no acks at all.

        Gives up (with a warning) when no ack has made progress for
        :data:`END_WAIT_BASE_S` plus :data:`END_WAIT_FACTOR` times the time the
        unacknowledged audio should take at the worker's rate.
        """
        waiting_since = time.monotonic()
        while not self._end_acked and not self._stop.is_set():
            self._take_acks(sender.receive(_SEND_SLICE_MS))
            self._check(sender)
            now = time.monotonic()
            if self._first_ack is None:
                if now - waiting_since <= END_WAIT_BASE_S:
                    continue
                if not self._worker_connected:
                    logger.warning(
                        "no worker connected to %s; stream=%s ends with %d blocks queued that "
                        "no worker took (is `python -m inference` running?)",
                        self.endpoint,
                        self.stream_id,
                        sender.queued,
                    )
                    return True
                logger.warning(
                    "no acknowledgement from the worker at %s (an older worker?); leaving "
                    "stream=%s's tail to the socket for up to %.0f s",
                    self.endpoint,
                    self.stream_id,
                    CLOSE_LINGER_MS / 1000,
                )
                return False
            backlog_s = self._in_flight_s()
            allowed = END_WAIT_BASE_S + END_WAIT_FACTOR * backlog_s / self._ack_rate()
            if now - max(self._last_progress, waiting_since) > allowed:
                logger.warning(
                    "gave up waiting for the worker to tag the end of stream=%s: %.1f s of "
                    "audio unacknowledged (blocks %d..%d), no progress for %.0f s",
                    self.stream_id,
                    backlog_s,
                    self._acked,
                    end_seq - 1,
                    allowed,
                )
                return True
        if self._end_acked:
            logger.info(
                "worker tagged the end of stream=%s waited_s=%.1f",
                self.stream_id,
                time.monotonic() - waiting_since,
            )
        return True

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
            "status stream=%s worker=%s sent=%d queued=%d acked=%d dropped_send=%d %s",
            self.stream_id,
            "connected" if stats.worker_connected else "none",
            stats.sent,
            stats.queued,
            stats.acked,
            stats.dropped_send,
            fields,
        )
