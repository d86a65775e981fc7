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

import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

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
    "corpus",
    "expected_reject",
    "hypothesis_messages",
    "mutate",
    "updates_corpus",
    "valid_stream",
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
