"""The worker's input socket, with memory bounded per peer and in total whatever peers send.

ZeroMQ's own limit (``ZMQ_MAXMSGSIZE``) bounds one *part* of a message, and
libzmq keeps every part of a multipart message until its last part has
arrived: one message of 400 parts of 16 MiB made a worker hold 6.4 GB before
it could see the first part.  So without CURVE the worker does not let libzmq
assemble messages: it binds a ``ZMQ_STREAM`` socket (raw bytes per
connection) and speaks ZMTP 3.0 with the NULL mechanism itself
(:class:`StreamIngress`).  Each frame's size is known from its header before
any of its bytes are kept, so a message that would exceed :data:`MAX_PARTS`
parts, ``max_message_bytes`` in all, or the shared budget of partly received
messages is skipped byte by byte as it arrives, without being kept, and
counted.  libzmq itself holds at most ``RAW_RCVHWM`` chunks of at most
:data:`RAW_CHUNK_BYTES` per connection (the high-water mark of a raw
connection counts whole chunks, so a full one stops reading its TCP socket).

A peer is the connection (its ZeroMQ routing id) here, and its CURVE public
key with :class:`RouterIngress`, which is used when CURVE is on (libzmq must do
the encryption; only authenticated peers get past its handshake) and for
``inproc://`` (in-process, trusted).  ``docs/ROBUSTNESS.md`` gives the
worst-case memory formula built from these constants.

:class:`StreamIngress` accepts PUSH peers (it answers as PULL) and DEALER peers
(it answers as ROUTER, so the worker can send them acknowledgements: the
end-of-stream handshake and flow control, ``docs/PROTOCOL.md``).
:class:`RouterIngress` is a libzmq ROUTER: DEALER peers only.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import zmq

__all__ = [
    "MAX_PARTS",
    "MAX_PEERS",
    "PARTIAL_BUDGET_BYTES",
    "RAW_CHUNK_BYTES",
    "RAW_RCVHWM",
    "Inbound",
    "Ingress",
    "RouterIngress",
    "StreamIngress",
    "open_ingress",
]

logger = logging.getLogger(__name__)

#: Most parts of one input message (audio has 2, end 1); more and the message is dropped.
MAX_PARTS = 4
#: Most connected peers; a connection beyond it is closed at once and counted.
MAX_PEERS = 1024
#: All peers' partly received messages together hold at most this many bytes.
PARTIAL_BUDGET_BYTES = 256 * 1024 * 1024
#: libzmq reads a raw connection in chunks of at most this many bytes (its in_batch_size).
RAW_CHUNK_BYTES = 8192
#: Receive high-water mark of the raw socket: chunks libzmq may queue per connection.
RAW_RCVHWM = 128
#: A connection that has not finished the ZMTP handshake after this long is closed.
HANDSHAKE_TIMEOUT_S = 10.0
#: Longest ZMTP command body accepted (READY with its properties), in bytes.
MAX_COMMAND_BYTES = 4096

_SIGNATURE_HEAD = 0xFF
_SIGNATURE_TAIL = 0x7F
_GREETING_BYTES = 64
_FLAG_MORE = 0x01
_FLAG_LONG = 0x02
_FLAG_COMMAND = 0x04
#: Socket type a peer announces -> the type this ingress answers with.
_ANSWER_TYPE = {b"PUSH": b"PULL", b"DEALER": b"ROUTER"}


def _greeting() -> bytes:
    """ZMTP 3.0 greeting: signature, version 3.0, mechanism NULL, as-server 0, filler."""
    return (
        bytes([_SIGNATURE_HEAD]) + bytes(8) + bytes([_SIGNATURE_TAIL, 3, 0])
        + b"NULL".ljust(20, b"\0") + bytes(1) + bytes(31)
    )  # fmt: skip


def _frame(body: bytes, *, command: bool = False, more: bool = False) -> bytes:
    flags = (_FLAG_COMMAND if command else 0) | (_FLAG_MORE if more else 0)
    if len(body) > 255:
        return bytes([flags | _FLAG_LONG]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def _ready(socket_type: bytes) -> bytes:
    name = b"Socket-Type"
    body = b"\x05READY" + bytes([len(name)]) + name + struct.pack(">I", len(socket_type))
    return _frame(body + socket_type, command=True)


def _properties(body: bytes) -> dict[bytes, bytes]:
    """ZMTP metadata (name-size, name, value-size, value)*; raises ValueError if malformed."""
    props: dict[bytes, bytes] = {}
    at = 0
    while at < len(body):
        size = body[at]
        name = body[at + 1 : at + 1 + size]
        at += 1 + size
        if at + 4 > len(body):
            raise ValueError("truncated property")
        (value_size,) = struct.unpack(">I", body[at : at + 4])
        at += 4
        if at + value_size > len(body):
            raise ValueError("truncated property value")
        props[name.lower()] = body[at : at + value_size]
        at += value_size
    return props


@dataclass
class Inbound:
    """One whole input message and the peer it came from.

    Attributes
    ----------
    peer : str
        ``conn:<hex routing id>`` (a connection) or ``key:<z85 public key>`` (CURVE).
    frames : list
        The message's parts (buffer-like).
    reply_to : object or None
        Where :meth:`Ingress.reply` sends an answer (a DEALER peer); ``None`` when
        the peer cannot be answered (a PUSH peer).
    """

    peer: str
    frames: list[Any]
    reply_to: Any = None


class Ingress:
    """What the worker needs of its input socket: :class:`StreamIngress`, :class:`RouterIngress`."""

    socket: zmq.Socket[Any]
    #: Messages and connections refused by the ingress itself, by reason.
    dropped: collections.Counter[str]
    #: Bytes read from the socket so far (raw ZMTP; 0 where libzmq frames messages).
    bytes_read: int = 0

    def receive(self, limit: int, *, max_chunks: int | None = None) -> Iterator[Inbound]:
        """Yield up to ``limit`` whole messages that are ready, without blocking.

        ``max_chunks``: most raw chunks read (raw ZMTP; default ``16 * limit``, so that a
        large message moves on); ignored where libzmq frames messages.
        """
        raise NotImplementedError

    def reply(self, reply_to: Any, frames: list[bytes]) -> bool:
        """Send ``frames`` to an :attr:`Inbound.reply_to`; False if it did not go (never blocks)."""
        return False

    def housekeeping(self, now: float) -> None:
        """Close connections stuck in the handshake (called about once a second)."""

    def peers(self) -> int:
        """Peers connected now (connections past the handshake; 0 when unknown)."""
        return 0

    def take_closed(self) -> list[str]:
        """Peers whose connection closed since the last call (their streams can be released)."""
        return []


@dataclass
class _Peer:
    routing_id: bytes
    connected: float
    buffer: bytearray = field(default_factory=bytearray)
    at: int = 0  # read offset into buffer
    state: str = "greeting"  # greeting -> ready -> open
    answer: bytes = b""
    name: str = ""  # the peer: conn:<routing id> or id:<the DEALER's own routing id>
    # The frame being read:
    need: int = -1  # payload bytes still missing, -1 while reading a header
    more: bool = False
    command: bool = False
    part: bytearray | None = None  # the part's bytes (None while skipping)
    filled: int = 0
    # The message being read:
    parts: list[bytearray] = field(default_factory=list)
    held: int = 0  # bytes of this message kept so far
    skipping: str = ""  # reason the current message is being dropped, "" when kept


class StreamIngress(Ingress):
    """ZMTP 3.0 (NULL mechanism) over a ``ZMQ_STREAM`` socket, parsed with size checks first.

    Parameters
    ----------
    socket : zmq.Socket
        A bound ``zmq.STREAM`` socket.
    max_message_bytes : int
        Largest whole message (all parts, payload bytes).
    max_peers : int
        Most simultaneous connections.
    """

    def __init__(
        self,
        socket: zmq.Socket[Any],
        *,
        max_message_bytes: int,
        max_peers: int = MAX_PEERS,
        partial_budget_bytes: int = PARTIAL_BUDGET_BYTES,
    ) -> None:
        self.socket = socket
        self.max_message_bytes = max_message_bytes
        self.max_peers = max_peers
        self.partial_budget_bytes = partial_budget_bytes
        self.dropped = collections.Counter()
        self._peers: dict[bytes, _Peer] = {}
        self._partial = 0  # bytes held in all peers' partly received messages
        self._closed: list[str] = []
        self._named: dict[str, bytes] = {}  # peer name -> routing id of its open connection
        # Routing ids this side closed: libzmq never reuses one, and a late disconnect
        # notification for one must not look like a new connection.
        self._gone: collections.deque[bytes] = collections.deque(maxlen=4096)

    def peers(self) -> int:
        return sum(1 for p in self._peers.values() if p.state == "open")

    def take_closed(self) -> list[str]:
        closed, self._closed = self._closed, []
        return closed

    def receive(self, limit: int, *, max_chunks: int | None = None) -> Iterator[Inbound]:
        out: collections.deque[Inbound] = collections.deque()
        # Each raw chunk is at most RAW_CHUNK_BYTES: reading a few per wanted message keeps
        # one call short while a peer streams a huge (dropped) message.
        for _ in range(max_chunks if max_chunks is not None else max(limit, 1) * 16):
            try:
                routing_id, data = self.socket.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            except ValueError:  # pragma: no cover - a raw socket always gives two parts
                continue
            self.bytes_read += len(data)
            self._on_chunk(routing_id, data, out)
            while out:
                yield out.popleft()
                limit -= 1
            if limit <= 0:
                return

    def reply(self, reply_to: Any, frames: list[bytes]) -> bool:
        # reply_to is the peer's name: a DEALER that reconnected with its own id is answered
        # on its new connection.
        state = self._by_name(reply_to)
        if state is None or state.answer != b"ROUTER" or state.state != "open":
            return False
        data = b"".join(_frame(f, more=i < len(frames) - 1) for i, f in enumerate(frames))
        try:
            self.socket.send_multipart([state.routing_id, data], zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        return True

    def housekeeping(self, now: float) -> None:
        for peer in list(self._peers.values()):
            if peer.state != "open" and now - peer.connected > HANDSHAKE_TIMEOUT_S:
                self._close(peer, "handshake_timeout")

    # -- parsing ---------------------------------------------------------------------

    def _by_name(self, peer: str) -> _Peer | None:
        routing_id = self._named.get(peer)
        return None if routing_id is None else self._peers.get(routing_id)

    def _on_chunk(self, routing_id: bytes, data: bytes, out: collections.deque[Inbound]) -> None:
        peer = self._peers.get(routing_id)
        if not data:  # connect or disconnect notification
            if peer is not None:
                self._forget(peer)
                return
            if routing_id in self._gone:
                return
            if len(self._peers) >= self.max_peers:
                self.dropped["max_peers"] += 1
                self._send_close(routing_id)
                return
            peer = _Peer(routing_id, connected=time.monotonic())
            self._peers[routing_id] = peer
            self._send(peer, _greeting())
            return
        if peer is None:  # data after we closed it
            return
        try:
            self._parse(peer, data, out)
        except ValueError as exc:
            self._log_close(peer, str(exc))

    def _parse(self, peer: _Peer, data: bytes, out: collections.deque[Inbound]) -> None:
        if peer.state == "open" and peer.need > 0 and not peer.buffer:
            data = self._payload(peer, memoryview(data), out)
            if not data:
                return
        buf = peer.buffer
        buf += data
        while peer.routing_id in self._peers:
            view = memoryview(buf)[peer.at :]
            if peer.state == "greeting":
                if len(view) < _GREETING_BYTES:
                    return
                greeting = bytes(view[:_GREETING_BYTES])
                view.release()
                peer.at += _GREETING_BYTES
                self._check_greeting(greeting)
                peer.state = "ready"
                continue
            if peer.need > 0:
                taken = len(view)
                rest = self._payload(peer, view, out)
                left = len(rest)
                del rest
                view.release()
                peer.at += taken - left
                if peer.need > 0:
                    break
                continue
            if len(view) < 2:
                view.release()
                break
            flags = view[0]
            if flags & _FLAG_LONG:
                if len(view) < 9:
                    view.release()
                    break
                (size,) = struct.unpack(">Q", view[1:9])
                header = 9
            else:
                size, header = view[1], 2
            view.release()
            peer.at += header
            self._start_frame(peer, flags, size)
            if size == 0:
                self._end_frame(peer, out)
        # Keep the buffer small: drop what was read.
        if peer.routing_id in self._peers and peer.at:
            del buf[: peer.at]
            peer.at = 0

    def _check_greeting(self, greeting: bytes) -> None:
        if greeting[0] != _SIGNATURE_HEAD or greeting[9] != _SIGNATURE_TAIL:
            raise ValueError("not a ZMTP peer")
        if greeting[10] < 3:
            raise ValueError(f"ZMTP {greeting[10]}.{greeting[11]} peer; 3.0 or later needed")
        mechanism = greeting[12:32].rstrip(b"\0")
        if mechanism != b"NULL":
            raise ValueError(
                f"peer asked for mechanism {mechanism[:20].decode('ascii', 'replace')}; "
                "this worker has CURVE off"
            )

    def _start_frame(self, peer: _Peer, flags: int, size: int) -> None:
        peer.more = bool(flags & _FLAG_MORE)
        peer.command = bool(flags & _FLAG_COMMAND)
        peer.need = size
        peer.filled = 0
        peer.part = None
        if peer.command:
            if size > MAX_COMMAND_BYTES:
                raise ValueError(f"command of {size} bytes")
            peer.part = bytearray(size)
            return
        if peer.state != "open":
            raise ValueError("message before the READY command")
        if not peer.skipping:
            if len(peer.parts) >= MAX_PARTS:
                peer.skipping = "parts"
            elif peer.held + size > self.max_message_bytes:
                peer.skipping = "message_size"
            elif self._partial + size > self.partial_budget_bytes:
                peer.skipping = "budget"
            if peer.skipping:
                self._release(peer)
        if not peer.skipping:
            peer.part = bytearray(size)
            peer.held += size
            self._partial += size

    def _payload(self, peer: _Peer, view: memoryview, out: collections.deque[Inbound]) -> Any:
        """Take up to ``peer.need`` bytes of ``view`` into the frame; return the rest."""
        n = min(peer.need, len(view))
        if peer.part is not None:
            peer.part[peer.filled : peer.filled + n] = view[:n]
        peer.filled += n
        peer.need -= n
        if peer.need == 0:
            self._end_frame(peer, out)
        return view[n:]

    def _end_frame(self, peer: _Peer, out: collections.deque[Inbound]) -> None:
        peer.need = -1
        part, peer.part = peer.part, None
        if peer.command:
            self._command(peer, bytes(part or b""))
            return
        if part is not None:
            peer.parts.append(part)
        if peer.more:
            return
        if peer.skipping:
            self.dropped[peer.skipping] += 1
            logger.debug("dropped message peer=%s reason=%s", peer.routing_id.hex(), peer.skipping)
            peer.skipping = ""
        else:
            reply_to = peer.name if peer.answer == b"ROUTER" else None
            out.append(Inbound(peer.name, list(peer.parts), reply_to))
        self._release(peer)

    def _release(self, peer: _Peer) -> None:
        self._partial -= peer.held
        peer.held = 0
        peer.parts = []

    def _command(self, peer: _Peer, body: bytes) -> None:
        if not body:
            raise ValueError("empty command")
        name = body[1 : 1 + body[0]]
        if name == b"READY" and peer.state == "ready":
            props = _properties(body[1 + body[0] :])
            socket_type = props.get(b"socket-type", b"")
            answer = _ANSWER_TYPE.get(socket_type)
            if answer is None:
                raise ValueError(f"peer socket type {socket_type[:16]!r}; PUSH or DEALER expected")
            peer.answer = answer
            identity = props.get(b"identity", b"")
            # libzmq's own generated ids start with a zero byte; a DEALER's chosen id does not.
            if identity and identity[0] != 0 and socket_type == b"DEALER":
                peer.name = f"id:{identity.hex()}"
            else:
                peer.name = f"conn:{peer.routing_id.hex()}"
            previous = self._peers.get(self._named.get(peer.name, b""))
            if previous is not None:  # the same sender reconnected: the new connection wins
                self._named.pop(peer.name)
                previous.state = "replaced"
                self._forget(previous)
                self._send_close(previous.routing_id)
            self._named[peer.name] = peer.routing_id
            peer.state = "open"
            self._send(peer, _ready(answer))
        elif name == b"ERROR":
            raise ValueError("peer sent ERROR")
        # PING and unknown commands are ignored (we announce ZMTP 3.0: no heartbeats).

    # -- connections -----------------------------------------------------------------

    def _send(self, peer: _Peer, data: bytes) -> None:
        try:
            self.socket.send_multipart([peer.routing_id, data], zmq.NOBLOCK)
        except zmq.ZMQError:
            self._forget(peer)

    def _send_close(self, routing_id: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.socket.send_multipart([routing_id, b""], zmq.NOBLOCK)

    def _log_close(self, peer: _Peer, why: str) -> None:
        logger.warning("closed input connection peer=%s reason=%.200s", peer.routing_id.hex(), why)
        self._close(peer, "protocol")

    def _close(self, peer: _Peer, reason: str) -> None:
        self.dropped[reason] += 1
        self._forget(peer)
        self._send_close(peer.routing_id)

    def _forget(self, peer: _Peer) -> None:
        if peer.state == "open":
            self._closed.append(peer.name)
            self._named.pop(peer.name, None)
        self._release(peer)
        self._peers.pop(peer.routing_id, None)
        self._gone.append(peer.routing_id)
        peer.state = "closed"
        peer.buffer = bytearray()


class RouterIngress(Ingress):
    """A ROUTER socket: libzmq frames messages (CURVE, ``inproc://``); DEALER peers only.

    With CURVE the peer is its public key (``key:<z85>``, ZeroMQ's ``User-Id``),
    else its routing id (``id:<hex>`` when the DEALER chose one, which
    ``ROUTER_HANDOVER`` lets a reconnect keep; ``conn:<hex>`` for libzmq's own).
    Every peer can be answered, by its routing id.
    """

    def __init__(self, socket: zmq.Socket[Any]) -> None:
        self.socket = socket
        self.dropped = collections.Counter()

    def receive(self, limit: int, *, max_chunks: int | None = None) -> Iterator[Inbound]:
        for _ in range(limit):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            routing_id = frames[0].bytes
            if len(frames) - 1 > MAX_PARTS:  # libzmq kept it already; do not pass it on
                self.dropped["parts"] += 1
                continue
            user = ""
            with contextlib.suppress(zmq.ZMQError, AttributeError):  # no CURVE: no User-Id
                user = str(frames[0].get("User-Id") or "")
            if user:
                peer = f"key:{user}"
            elif routing_id[:1] != b"\0":
                peer = f"id:{routing_id.hex()}"
            else:
                peer = f"conn:{routing_id.hex()}"
            yield Inbound(peer, frames[1:], routing_id)

    def reply(self, reply_to: Any, frames: list[bytes]) -> bool:
        try:
            self.socket.send_multipart([reply_to, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        return True


def open_ingress(
    context: zmq.Context[Any],
    endpoint: str,
    *,
    curve: bool,
    max_message_bytes: int,
    max_part_bytes: int,
    receive_hwm: int,
    configure: Any = None,
) -> Ingress:
    """Bind the input socket for ``endpoint``: raw ZMTP unless CURVE is on or it is inproc.

    ``configure(socket)`` runs before ``bind`` (CURVE server options).
    """
    if curve or endpoint.startswith("inproc://"):
        socket = context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.MAXMSGSIZE, max_part_bytes)
        socket.setsockopt(zmq.RCVHWM, receive_hwm)
        socket.setsockopt(zmq.SNDHWM, 1000)
        socket.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a sender that reconnects keeps its id
        if configure is not None:
            configure(socket)
        socket.bind(endpoint)
        return RouterIngress(socket)
    socket = context.socket(zmq.STREAM)
    socket.setsockopt(zmq.RCVHWM, RAW_RCVHWM)
    socket.setsockopt(zmq.SNDHWM, 1000)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(endpoint)
    return StreamIngress(socket, max_message_bytes=max_message_bytes)
