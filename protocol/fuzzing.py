"""Broken and hostile wire messages: what a fuzzer sends to the decoders and the worker.

The wire's own adversary, beside the format it attacks.  Two generators:

* :func:`mutate`: one random change of a valid encoded message: bit flips in
  the header or the PCM, truncated or extended frames, missing, extra,
  duplicated or swapped frames, header fields deleted or swapped to another
  type, huge and non-finite numbers, garbage;
* :func:`hypothesis_messages`: headers drawn by ``hypothesis`` strategies (any
  msgpack value for any protocol field, unknown fields) with random binary
  frames (``hypothesis`` is a test dependency, imported only here).

:func:`corpus` interleaves both over the valid messages of
:class:`ValidMessages`; :func:`updates_corpus` mutates tag updates.
:func:`expected_reject` says what a correct receiver must do with a message:
accept it (``None``) or reject it with the :class:`~protocol.ProtocolError`
reason the decoder gives; any other exception is a decoder crash and propagates.
``tests/test_fuzz.py`` and ``python -m benchmarks.fuzz_worker`` use the same
generators.

>>> import random
>>> rng = random.Random(0)
>>> message = mutate(ValidMessages(rng).audio(), rng)
>>> expected_reject(message)  # doctest: +SKIP
'bad_header'
"""

from __future__ import annotations

import dataclasses
import math
import random
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import msgpack
import numpy as np

from protocol import (
    AudioFrame,
    EndOfStream,
    ProtocolError,
    TagUpdate,
    decode_input,
    encode_audio,
    encode_end,
    encode_update,
)

__all__ = [
    "AUDIO_FIELDS",
    "HUGE_VALUES",
    "Message",
    "ValidMessages",
    "ZmtpCase",
    "corpus",
    "expected_reject",
    "forged_message",
    "hostile_corpus",
    "hypothesis_messages",
    "jumping_stream",
    "multipart_message",
    "mutate",
    "send_raw",
    "updates_corpus",
    "valid_stream",
    "worker_reject",
    "zmtp_case",
    "zmtp_frame",
    "zmtp_greeting",
    "zmtp_message",
    "zmtp_ready",
]

#: A multipart ZeroMQ message: its frames.
Message = list[bytes]
#: Fields of the audio header, for the type swaps and hypothesis headers.
AUDIO_FIELDS = (
    "version", "kind", "stream", "seq", "capture_time", "sample_rate", "channels",
    "sample_format", "frames",
)  # fmt: skip
#: Values a hostile header puts into any field.
HUGE_VALUES: tuple[Any, ...] = (
    2**63 - 1, -(2**63), 2**64 - 1, 10**9, -1, 0, 1e308, -1e308, math.nan, math.inf,
    -math.inf, 5e-324, "", "x" * 300, b"\x00" * 8, None, True, [], {}, [1, 2], {"a": 1},
)  # fmt: skip
#: Samples per valid base block: 10 ms at 16 kHz keeps messages small.
BASE_FRAMES = 160


class ValidMessages:
    """Valid audio, end and tag-update messages of a few streams, formats and rates.

    Parameters
    ----------
    rng : random.Random
        Picks the stream, format and noise; each stream's ``seq`` runs on.
    streams : int > 0
        Streams ``fuzz:0`` ... ``fuzz:N-1``; stream ``i`` uses format ``i % 4``.
    """

    FORMATS = (
        ("f32", np.float32, 16000, 1),
        ("f32", np.float32, 44100, 2),
        ("i16", np.int16, 48000, 1),
        ("i32", np.int32, 8000, 6),
    )

    def __init__(self, rng: random.Random, streams: int = 8) -> None:
        self.rng = rng
        self.seqs = [0] * streams
        self.noise = np.random.default_rng(rng.randrange(2**32))

    def audio(self) -> Message:
        index = self.rng.randrange(len(self.seqs))
        fmt, dtype, rate, channels = self.FORMATS[index % len(self.FORMATS)]
        if fmt == "f32":
            samples = (0.3 * self.noise.standard_normal((BASE_FRAMES, channels))).astype(dtype)
        else:
            limit = 2 ** (8 * np.dtype(dtype).itemsize - 3)
            samples = self.noise.integers(-limit, limit, (BASE_FRAMES, channels)).astype(dtype)
        frame = AudioFrame(
            stream=f"fuzz:{index}",
            seq=self.seqs[index],
            capture_time=time.time(),
            sample_rate=rate,
            channels=channels,
            sample_format=fmt,
            samples=samples,
        )
        self.seqs[index] += 1
        return [bytes(part) for part in encode_audio(frame)]

    def end(self) -> Message:
        index = self.rng.randrange(len(self.seqs))
        return encode_end(EndOfStream(stream=f"fuzz:{index}", seq=self.seqs[index]))

    def update(self) -> Message:
        n = self.rng.choice([0, 1, 50])
        update = TagUpdate(
            stream=f"fuzz:{self.rng.randrange(8)}",
            seq=self.rng.randrange(1000),
            start_s=1.0,
            end_s=4.0,
            model="m",
            tags=tuple(f"t{i}" for i in range(n)),
            probabilities=np.full(n, 0.5, np.float32),
            smoothed=np.full(n, 0.25, np.float32),
            capture_time=1.0,
            received_time=2.0,
            published_time=3.0,
        )
        return [bytes(part) for part in encode_update(update)]


# -- mutations ---------------------------------------------------------------------------------


def _flip_bits(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 8])):
        position = rng.randrange(len(buf))
        buf[position] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _with_header(
    message: Message, header_index: int, change: Callable[[dict[str, Any]], None]
) -> Message:
    """``message`` with its header map changed; bit flips when there is no usable map."""
    out = list(message)
    index = min(header_index, len(out) - 1)
    try:
        header = msgpack.unpackb(out[index], raw=False)
    except Exception:
        header = None
    if not isinstance(header, dict) or not header:
        out[index] = _flip_bits(out[index], random.Random(len(out[index])))
        return out
    change(header)
    out[index] = msgpack.packb(header, use_bin_type=True)
    return out


def mutate(message: Message, rng: random.Random, *, header_index: int = 0) -> Message:
    """One random mutation of a valid message (the result may still be valid)."""
    op = rng.randrange(14)
    out = list(message)
    i = rng.randrange(len(out))
    header_index = min(header_index, len(out) - 1)
    if op == 0:  # bit flips in the header
        out[header_index] = _flip_bits(out[header_index], rng)
    elif op == 1:  # bit flips anywhere
        out[i] = _flip_bits(out[i], rng)
    elif op == 2:  # truncation
        out[i] = out[i][: rng.randrange(len(out[i]) + 1)]
    elif op == 3:  # extension
        out[i] = out[i] + bytes(rng.choice([1, 3, 4, 1024]))
    elif op == 4 and len(out) > 1:  # a missing frame
        del out[i]
    elif op == 5:  # an extra frame
        out.insert(rng.randrange(len(out) + 1), rng.randbytes(rng.randrange(16)))
    elif op == 6:  # a duplicated frame
        out.insert(i, out[i])
    elif op == 7 and len(out) > 1:  # swapped frames
        j = rng.randrange(len(out))
        out[i], out[j] = out[j], out[i]
    elif op in (8, 9):  # a header field of another type, or a huge number

        def swap(header: dict[str, Any]) -> None:
            header[rng.choice(list(header))] = rng.choice(HUGE_VALUES)

        out = _with_header(out, header_index, swap)
    elif op == 10:  # a field deleted

        def delete(header: dict[str, Any]) -> None:
            del header[rng.choice(list(header))]

        out = _with_header(out, header_index, delete)
    elif op == 11:  # an unknown field (still valid), maybe huge
        size = rng.choice([1, 100, 10_000])
        out = _with_header(out, header_index, lambda h: h.update({"extra": "y" * size}))
    elif op == 12:  # the header replaced by another msgpack value
        out[header_index] = msgpack.packb(rng.choice(HUGE_VALUES), use_bin_type=True)
    else:  # garbage
        out = [rng.randbytes(rng.randrange(64)) for _ in range(rng.randrange(1, 4))]
    return out


def hypothesis_messages(count: int, seed: int) -> list[Message]:
    """``count`` messages whose headers ``hypothesis`` draws (any value for any field)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    scalar = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=200)
        | st.binary(max_size=64)
        | st.sampled_from(["audio", "end", "tags", "f32", "i16", "i32"])
        | st.sampled_from([1, 16000, 44100, 384000, 1000])
    )
    value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4), max_leaves=6)
    header = st.dictionaries(
        st.sampled_from(AUDIO_FIELDS) | st.text(max_size=8), value, max_size=12
    )
    frames = st.lists(st.binary(max_size=4096), max_size=3)
    out: list[Message] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(header=header, rest=frames, packed=st.booleans())
    def draw(header: dict[str, Any], rest: list[bytes], packed: bool) -> None:
        head = msgpack.packb(header, use_bin_type=True) if packed else repr(header).encode()
        out.append([head, *rest])

    draw()
    return out[:count]


def corpus(count: int, seed: int, hypothesis_share: float = 0.1) -> Iterator[Message]:
    """Worker input: mutated valid messages and hypothesis messages, ``count`` in all.

    Parameters
    ----------
    count : int >= 0
    seed : int
        The same seed gives the same messages.
    hypothesis_share : float in [0, 1]
        Share drawn by :func:`hypothesis_messages` (needs ``hypothesis``) rather
        than mutated; 0 needs nothing beyond the runtime dependencies.
    """
    rng = random.Random(seed)
    bases = ValidMessages(rng)
    n_hypothesis = int(count * hypothesis_share)
    drawn = hypothesis_messages(n_hypothesis, seed) if n_hypothesis else []
    order = [True] * len(drawn) + [False] * (count - len(drawn))
    rng.shuffle(order)
    drawn_iter = iter(drawn)
    for from_hypothesis in order:
        if from_hypothesis:
            yield next(drawn_iter)
            continue
        base = bases.end() if rng.random() < 0.1 else bases.audio()
        message = mutate(base, rng)
        if rng.random() < 0.2:
            message = mutate(message, rng)
        yield message


def valid_stream(stream: str, *, seconds: float = 4.0, seed: int = 0) -> list[Message]:
    """A whole valid stream: 0.1 s blocks of 16 kHz mono noise, then its end message.

    What a fuzzer sends after the hostile messages to see that the worker still
    tags (and, since a PUSH socket keeps order, that it has read everything before).
    """
    y = 0.3 * np.random.default_rng(seed).standard_normal(round(16000 * seconds))
    y = y.astype(np.float32)
    messages: list[Message] = []
    for seq, offset in enumerate(range(0, len(y), 1600)):
        frame = AudioFrame(
            stream=stream,
            seq=seq,
            capture_time=time.time(),
            sample_rate=16000,
            channels=1,
            sample_format="f32",
            samples=np.ascontiguousarray(y[offset : offset + 1600, None]),
        )
        messages.append([bytes(part) for part in encode_audio(frame)])
    messages.append(encode_end(EndOfStream(stream=stream, seq=len(messages))))
    return messages


def updates_corpus(count: int, seed: int) -> Iterator[Message]:
    """Subscriber input: ``count`` mutated tag updates (header in frame 1, after the topic)."""
    rng = random.Random(seed + 1)
    bases = ValidMessages(rng)
    for _ in range(count):
        yield mutate(bases.update(), rng, header_index=1)


def expected_reject(
    message: Message, decode: Callable[[Message], object] = decode_input
) -> str | None:
    """``None`` when ``decode`` accepts ``message``, else the ``ProtocolError`` reason.

    Parameters
    ----------
    message : list of bytes
    decode : callable
        :func:`protocol.decode_input` (worker input, the default) or
        :func:`protocol.decode_update` (subscriber input).

    Raises
    ------
    Exception
        Anything but ``ProtocolError`` from the decoder: a crash, what fuzzing is for.
    """
    try:
        decode(message)
    except ProtocolError as exc:
        return exc.reason
    return None


# -- beyond one well-framed message: multipart, ownership, the ZMTP handshake ------------------

#: A ZMTP frame's flags (ZMTP 3.0, rfc.zeromq.org/spec/23).
_MORE, _LONG, _COMMAND = 0x01, 0x02, 0x04
_SHARED_ZEROS: list[bytes] = []  # one large buffer every huge message refers to
#: An ERROR command: a case that is not wrong by itself ends with it, so that the receiver
#: closes the connection once it has read everything before it (a barrier).
_ERROR = b"\x04\x10\x05ERROR\x09barrier!!"
#: :func:`send_raw` writes this many first bytes of a case in ``chunk``-byte writes.
FRAGMENTED_BYTES = 512


def _zeros(size: int) -> bytes:
    """``size`` zero bytes from one shared buffer (huge messages cost no memory here).

    A memoryview typed as ``bytes``: what the fuzzer does with a part (``len``,
    sending it through ZeroMQ) works the same on both.
    """
    if not _SHARED_ZEROS or len(_SHARED_ZEROS[0]) < size:
        _SHARED_ZEROS[:] = [bytes(size)]
    return cast(bytes, memoryview(_SHARED_ZEROS[0])[:size])


def multipart_message(rng: random.Random, *, max_parts: int, max_message_bytes: int) -> Message:
    """A message at or beyond a receiver's limits on parts and total size.

    Many small parts (from ``max_parts`` to 1000), a total just above
    ``max_message_bytes`` in a few large parts, or one at the limits (still
    within them); the first part is a valid audio header or garbage.
    """
    head = ValidMessages(rng, streams=1).audio() if rng.random() < 0.7 else [rng.randbytes(12)]
    kind = rng.randrange(4)
    if kind == 0:  # many parts
        count = rng.choice([max_parts + 1, max_parts + 2, 50, 1000])
        return [*head, *(rng.randbytes(rng.randrange(8)) for _ in range(count - len(head)))]
    if kind == 1:  # exactly max_parts parts (within the limit; the decoder decides)
        return [*head, *(rng.randbytes(4) for _ in range(max(0, max_parts - len(head))))]
    if kind == 2:  # a huge total in 2 to max_parts parts
        parts = rng.randrange(2, max_parts + 1)
        each = max_message_bytes // (parts - 1) + 1
        return [head[0], *(_zeros(each) for _ in range(parts - 1))]
    # just within the total: header plus one part up to the limit
    return [head[0], _zeros(max_message_bytes - len(head[0]))]


def forged_message(stream: str, rng: random.Random) -> Message:
    """Another sender's stream id on a valid (or mutated) message with seq and time jumps."""
    seq = rng.choice([0, 1, 10**6, 10**12, 2**63 - 1, rng.randrange(1000)])
    capture = time.time() + rng.choice([0.0, -1e6, 1e6, 86400.0, -3600.0, 1e9])
    if rng.random() < 0.2:
        message = encode_end(EndOfStream(stream=stream, seq=seq))
    else:
        y = (0.1 * np.ones((BASE_FRAMES, 1))).astype(np.float32)
        frame = AudioFrame(
            stream=stream, seq=seq, capture_time=capture, sample_rate=16000, channels=1,
            sample_format="f32", samples=y,
        )  # fmt: skip
        message = [bytes(part) for part in encode_audio(frame)]
    return mutate(message, rng) if rng.random() < 0.2 else message


def jumping_stream(stream: str, rng: random.Random, count: int) -> list[Message]:
    """A sender's own stream whose ``seq`` and capture times jump back and forth (all valid)."""
    messages: list[Message] = []
    seq, capture = 0, time.time()
    y = (0.1 * np.ones((BASE_FRAMES, 1))).astype(np.float32)
    for _ in range(count):
        jump = rng.randrange(6)
        if jump == 0:
            seq += rng.choice([2, 1000, 10**9])
        elif jump == 1:
            seq = max(0, seq - rng.choice([1, 5, 1000]))
        elif jump == 2:
            capture += rng.choice([-1e6, -60.0, 60.0, 1e6])
        else:
            seq += 1
            capture += BASE_FRAMES / 16000
        frame = AudioFrame(
            stream=stream, seq=seq, capture_time=capture, sample_rate=16000, channels=1,
            sample_format="f32", samples=y,
        )  # fmt: skip
        messages.append([bytes(part) for part in encode_audio(frame)])
    return messages


def worker_reject(
    message: Message,
    *,
    max_parts: int,
    max_message_bytes: int,
    foreign_streams: frozenset[str] = frozenset(),
) -> str | None:
    """What a worker must do with ``message`` from one sender: ``None`` (take it) or the reason.

    The limits of the whole message first, frame by frame as they arrive (more
    than ``max_parts`` parts: ``parts``; more than ``max_message_bytes`` in all:
    ``message_size``), then the decoder (:func:`expected_reject`), then
    ownership: a valid message for a stream in ``foreign_streams`` (open and
    owned by another sender) is ``owner``.
    """
    held = 0
    for index, part in enumerate(message):
        if index >= max_parts:
            return "parts"
        held += len(part)
        if held > max_message_bytes:
            return "message_size"
    reason = expected_reject(message)
    if reason is None and foreign_streams:
        stream = getattr(decode_input(message), "stream", None)
        if stream in foreign_streams:
            return "owner"
    return reason


# -- the ZMTP handshake at the byte level ------------------------------------------------------


def zmtp_greeting(*, mechanism: bytes = b"NULL", major: int = 3, minor: int = 0) -> bytes:
    """A ZMTP 3.x greeting (64 bytes): signature, version, mechanism, as-server 0, filler."""
    return (
        b"\xff" + bytes(8) + b"\x7f" + bytes([major, minor])
        + mechanism[:20].ljust(20, b"\0") + bytes(1) + bytes(31)
    )  # fmt: skip


def zmtp_frame(body: bytes, *, command: bool = False, more: bool = False) -> bytes:
    """One ZMTP frame: flags, size (1 byte, or 8 with the LONG flag), body."""
    flags = (_COMMAND if command else 0) | (_MORE if more else 0)
    if len(body) > 255:
        return bytes([flags | _LONG]) + len(body).to_bytes(8, "big") + body
    return bytes([flags, len(body)]) + body


def zmtp_ready(socket_type: bytes = b"PUSH", **properties: bytes) -> bytes:
    """The READY command with its ``Socket-Type`` and other properties."""
    body = b"\x05READY"
    for name, value in {"Socket-Type": socket_type, **properties}.items():
        key = name.encode()
        body += bytes([len(key)]) + key + len(value).to_bytes(4, "big") + value
    return zmtp_frame(body, command=True)


def zmtp_message(parts: Message) -> bytes:
    """The frames of one multipart message."""
    return b"".join(
        zmtp_frame(bytes(part), more=i < len(parts) - 1) for i, part in enumerate(parts)
    )


@dataclasses.dataclass(frozen=True)
class ZmtpCase:
    """Bytes a raw peer sends on one connection, and what a correct receiver does.

    Attributes
    ----------
    name : str
        The kind of case (the table's row).
    data : bytes
        Everything the peer sends before it closes its side.
    expected : str or None
        ``"protocol"`` (the receiver closes the connection and counts it), a
        message reject reason (``parts``, ``message_size``), ``"message"`` (a
        valid 3.2 s stream is taken in: one update for it) or ``None`` (nothing
        counted: the peer leaves before it is wrong, or says nothing wrong).
    error : bool
        The case ends with an ERROR command, so the receiver also closes it and
        counts ``protocol`` once it has read all before (:meth:`outcomes`).
    chunk : int
        Bytes per write of the first :data:`FRAGMENTED_BYTES` (small values split
        the greeting, READY and the first frame's header); the rest goes at once.
    """

    name: str
    data: bytes
    expected: str | None
    chunk: int = 65536
    error: bool = False

    def outcomes(self) -> list[str]:
        """What the receiver counts for this case: ``expected``, then ``protocol`` for ERROR."""
        return [o for o in (self.expected, "protocol" if self.error else None) if o is not None]

    @property
    def receiver_closes(self) -> bool:
        """Whether a correct receiver closes the connection (the peer waits for that)."""
        return self.error or self.expected == "protocol"


def zmtp_case(
    rng: random.Random, *, max_parts: int, max_message_bytes: int, stream: str, huge: bool = True
) -> ZmtpCase:
    """One random hostile (or fragmented but valid) ZMTP conversation with a NULL-mechanism PULL.

    ``stream`` names the valid message's stream (a fresh one per case: each
    connection is its own sender).  ``huge=False`` leaves out the one case
    that sends ``max_message_bytes`` bytes.
    """
    hello = zmtp_greeting()
    opened = hello + zmtp_ready(rng.choice([b"PUSH", b"DEALER"]))
    kinds = [
        "garbage", "short_garbage", "truncated_greeting", "bad_signature", "old_version",
        "wrong_mechanism", "huge_command", "message_before_ready", "bad_socket_type",
        "malformed_ready", "empty_command", "error_command", "unknown_command",
        "declared_huge_frame", "many_parts", "fragmented_valid",
    ]  # fmt: skip
    if huge:
        kinds.append("oversized_message")
    kind = rng.choice(kinds)
    if kind == "garbage":
        data = bytes([rng.randrange(255)]) + rng.randbytes(rng.randrange(63, 300))
        return ZmtpCase(kind, data, "protocol")
    if kind == "short_garbage":
        return ZmtpCase(kind, bytes([rng.randrange(255)]) + rng.randbytes(rng.randrange(62)), None)
    if kind == "truncated_greeting":
        return ZmtpCase(kind, hello[: rng.randrange(64)], None, chunk=rng.choice([1, 7, 64]))
    if kind == "bad_signature":
        patched = bytearray(hello)
        patched[9] = rng.choice([0x00, 0x01, 0x7E, 0xFF])
        return ZmtpCase(kind, bytes(patched), "protocol")
    if kind == "old_version":
        return ZmtpCase(kind, zmtp_greeting(major=rng.choice([0, 1, 2])), "protocol")
    if kind == "wrong_mechanism":
        name = rng.choice([b"CURVE", b"PLAIN", b"GSSAPI", b"", rng.randbytes(20).strip(b"\0")])
        if name == b"NULL":
            name = b"CURVE"
        return ZmtpCase(kind, zmtp_greeting(mechanism=name), "protocol")
    if kind == "huge_command":
        size = rng.choice([4097, 10**6, 2**63 - 1, 2**64 - 1])
        return ZmtpCase(
            kind, hello + bytes([_COMMAND | _LONG]) + size.to_bytes(8, "big"), "protocol"
        )
    if kind == "message_before_ready":
        return ZmtpCase(kind, hello + zmtp_frame(b"hello"), "protocol")
    if kind == "bad_socket_type":
        socket_type = rng.choice(
            [b"SUB", b"PUB", b"REQ", b"REP", b"ROUTER", b"PAIR", b"", b"X" * 200]
        )
        return ZmtpCase(kind, hello + zmtp_ready(socket_type), "protocol")
    if kind == "malformed_ready":
        body = b"\x05READY\x0bSocket-Type" + rng.choice([b"", b"\x00\x00", b"\xff\xff\xff\xff"])
        return ZmtpCase(kind, hello + zmtp_frame(body, command=True), "protocol")
    if kind == "empty_command":
        return ZmtpCase(kind, hello + zmtp_frame(b"", command=True), "protocol")
    if kind == "error_command":
        return ZmtpCase(kind, opened + zmtp_frame(b"\x05ERROR\x03bad", command=True), "protocol")
    if kind == "unknown_command":
        body = rng.choice([b"\x04PING\x00\x00", b"\x03FOO", b"\x05HELLO" + rng.randbytes(40)])
        return ZmtpCase(kind, opened + zmtp_frame(body, command=True) + _ERROR, None, error=True)
    if kind == "declared_huge_frame":  # a frame header that promises 2**63 bytes, then silence
        size = rng.choice([max_message_bytes + 1, 2**63 - 1, 2**64 - 1])
        return ZmtpCase(kind, opened + bytes([_LONG]) + size.to_bytes(8, "big"), None)
    if kind == "many_parts":
        count = rng.choice([max_parts + 1, 64, 5000])
        return ZmtpCase(kind, opened + zmtp_message([b"p"] * count) + _ERROR, "parts", error=True)
    if kind == "oversized_message":
        parts = [
            bytes(_zeros(max_message_bytes // 2 + 1)),
            bytes(_zeros(max_message_bytes // 2 + 1)),
        ]
        return ZmtpCase(kind, opened + zmtp_message(parts) + _ERROR, "message_size", error=True)
    # fragmented_valid: a whole valid stream (3.2 s: one window, one update, then its end),
    # its greeting, READY and first frames written a few bytes at a time
    y = 0.3 * np.random.default_rng(rng.randrange(2**32)).standard_normal((51200, 1))
    frame = AudioFrame(
        stream=stream, seq=0, capture_time=time.time(), sample_rate=16000, channels=1,
        sample_format="f32", samples=y.astype(np.float32),
    )  # fmt: skip
    data = opened + zmtp_message([bytes(p) for p in encode_audio(frame)])
    data += zmtp_message(encode_end(EndOfStream(stream=stream, seq=1)))
    return ZmtpCase(kind, data + _ERROR, "message", chunk=rng.choice([1, 3, 17, 100]), error=True)


def send_raw(endpoint: str, case: ZmtpCase, *, timeout_s: float = 60.0) -> bool:
    """Play ``case`` on a new raw connection to a ZeroMQ ``tcp://`` or ``ipc://`` endpoint.

    Writes ``case.data`` in ``case.chunk``-byte writes, then reads until the
    receiver closes the connection.  When a correct receiver would close it
    (:attr:`ZmtpCase.receiver_closes`) the peer waits for that, so everything it
    sent has been read; otherwise it closes its sending side first (libzmq may
    then drop what it had not handed over: nothing is expected of it).  Returns
    whether the connection was closed within ``timeout_s``.
    """
    transport, _, address = endpoint.partition("://")
    if transport == "ipc":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = address
    elif transport == "tcp":
        host, _, port = address.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        target = (host.strip("[]"), int(port))
    else:
        raise ValueError(f"endpoint={endpoint!r}: tcp:// or ipc:// expected")
    with sock:
        sock.settimeout(timeout_s)
        sock.connect(target)
        view = memoryview(case.data)
        try:
            for at in range(0, min(len(view), FRAGMENTED_BYTES), case.chunk):
                sock.sendall(view[at : min(at + case.chunk, FRAGMENTED_BYTES)])
            sock.sendall(view[FRAGMENTED_BYTES:])
            if not case.receiver_closes:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return True  # the receiver closed it first: what a hostile case expects
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return True


def hostile_corpus(
    count: int,
    seed: int,
    *,
    max_parts: int,
    max_message_bytes: int,
    victim: str,
    hypothesis_share: float = 0.1,
    multipart_share: float = 0.01,
    forged_share: float = 0.01,
    jumping_share: float = 0.01,
    huge: bool = True,
) -> Iterator[Message]:
    """:func:`corpus` with multipart messages, forgeries of ``victim`` and a jumping stream.

    Shares of ``count``: ``multipart_share`` from :func:`multipart_message`
    (``huge=False`` leaves out those over ``max_message_bytes``),
    ``forged_share`` from :func:`forged_message` for ``victim`` (a stream
    another sender owns), ``jumping_share`` from :func:`jumping_stream` (this
    sender's own ``fuzz:jump``); the rest from :func:`corpus`.  Judge each with
    :func:`worker_reject` (``foreign_streams={victim}``).
    """
    rng = random.Random(seed + 3)
    n_multipart = int(count * multipart_share)
    n_forged = int(count * forged_share)
    n_jumping = int(count * jumping_share)
    rest = corpus(max(0, count - n_multipart - n_forged - n_jumping), seed, hypothesis_share)
    jumping = iter(jumping_stream("fuzz:jump", rng, n_jumping))
    order = ["m"] * n_multipart + ["f"] * n_forged + ["j"] * n_jumping
    order += ["c"] * (count - len(order))
    rng.shuffle(order)
    for kind in order:
        if kind == "c":
            yield next(rest)
        elif kind == "j":
            yield next(jumping)
        elif kind == "f":
            yield forged_message(victim, rng)
        else:
            while True:
                message = multipart_message(
                    rng, max_parts=max_parts, max_message_bytes=max_message_bytes
                )
                if huge or sum(len(p) for p in message) <= max_message_bytes:
                    break
            yield message
