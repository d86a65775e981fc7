"""The tagstream wire protocol: the one module every process imports.

Three messages travel over ZeroMQ (``docs/PROTOCOL.md`` is the full
specification for readers outside Python):

* **audio** (streamer PUSH -> worker PULL): frame 0 is a msgpack header,
  frame 1 the raw little-endian interleaved PCM, sent and received without a
  copy (``copy=False`` on both sides, ``np.frombuffer`` on the ZeroMQ buffer).
* **end** (streamer -> worker): one header frame; the stream is over.
* **ack** (worker -> streamer, on the same connection, to ``DEALER`` senders only):
  how far the worker has tagged a stream (:class:`Ack`); a sender's credit for
  flow control and, with ``end=True``, the end-of-stream handshake.
* **tags** (worker PUB -> subscribers): frame 0 is the topic (the stream id),
  frame 1 a msgpack header, frames 2 and 3 the raw and the smoothed tag
  probabilities as little-endian float32.  Optional header fields say what the
  window holds (``content``, ``content_probabilities``, ``level_dbfs``).
* **event** (worker PUB -> subscribers, and streamer -> worker for the source's
  own events): something that happened at a moment of a stream's audio
  (:class:`Event`: ``silence_start``, ``content_change``, ``now_playing``, ...);
  frame 0 is the topic on the PUB socket, then one msgpack header.

Every header carries ``"version": PROTOCOL_VERSION``.  Decoding rejects
anything malformed with :class:`ProtocolError`, whose ``reason`` is a short
slug (one of :data:`REJECT_REASONS`) so that receivers can count rejects by
cause and carry on.

Examples
--------
>>> import numpy as np
>>> frame = AudioFrame(stream="host:mic", seq=0, capture_time=1.7e9, sample_rate=16000,
...                    channels=1, sample_format="f32",
...                    samples=np.zeros((1600, 1), dtype=np.float32))
>>> decoded = decode_input(encode_audio(frame))
>>> decoded.samples.shape, decoded.seq
((1600, 1), 0)
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

import msgpack
import numpy as np

from tagstream.errors import TagstreamError

__all__ = [
    "CONTENTS",
    "EVENT_FIELDS",
    "EVENT_KINDS",
    "KIND_ACK",
    "KIND_AUDIO",
    "KIND_END",
    "KIND_EVENT",
    "KIND_TAGS",
    "MAX_BUFFER_BYTES",
    "MAX_CHANNELS",
    "MAX_FRAME_SECONDS",
    "MAX_SAMPLE_RATE",
    "MAX_STREAM_ID_CHARS",
    "MAX_TAGS",
    "MIN_SAMPLE_RATE",
    "PROTOCOL_VERSION",
    "REJECT_REASONS",
    "SAMPLE_FORMATS",
    "SOURCE_EVENT_KINDS",
    "Ack",
    "AudioFrame",
    "EndOfStream",
    "Event",
    "FrameLike",
    "InputMessage",
    "ProtocolError",
    "PublishedMessage",
    "TagUpdate",
    "check_stream_id",
    "decode_ack",
    "decode_event",
    "decode_input",
    "decode_published",
    "decode_update",
    "encode_ack",
    "encode_audio",
    "encode_end",
    "encode_event",
    "encode_update",
    "new_sender_id",
]

PROTOCOL_VERSION: Final = 1

KIND_AUDIO: Final = "audio"
KIND_END: Final = "end"
KIND_TAGS: Final = "tags"
KIND_EVENT: Final = "event"
KIND_ACK: Final = "ack"

#: What a window holds (a tag update's optional ``content``), as :mod:`model.content` says.
CONTENTS: Final = ("music", "speech", "silence")
#: Event kinds, and the kind-specific fields each carries (name -> type), besides the
#: ``stream``, ``event``, ``time`` and ``at_s`` every event has (docs/PROTOCOL.md "Event").
EVENT_FIELDS: Final[Mapping[str, Mapping[str, type]]] = {
    "silence_start": {"silence_since_s": float, "level_dbfs": float, "threshold_dbfs": float},
    "silence_end": {"duration_s": float, "level_dbfs": float},
    "content_change": {"content": str, "previous": str},
    "now_playing": {"title": str},
    "source_down": {"reason": str},
    "source_up": {"outage_s": float},
}
EVENT_KINDS: Final = tuple(EVENT_FIELDS)
#: The event kinds a streamer may send to the worker (about its source).
SOURCE_EVENT_KINDS: Final = ("now_playing", "source_down", "source_up")
#: Longest text field of an event (a title, a reason), in characters.
MAX_EVENT_TEXT_CHARS: Final = 1024

#: Sample format name -> numpy dtype (always little-endian, interleaved channels).
SAMPLE_FORMATS: Final[Mapping[str, np.dtype[Any]]] = {
    "f32": np.dtype("<f4"),
    "i16": np.dtype("<i2"),
    "i32": np.dtype("<i4"),
}

MIN_SAMPLE_RATE: Final = 1_000
MAX_SAMPLE_RATE: Final = 384_000
MAX_CHANNELS: Final = 32
#: Longest audio message, in seconds of audio.
MAX_FRAME_SECONDS: Final = 10.0
#: Largest PCM buffer of one audio message, in bytes.
MAX_BUFFER_BYTES: Final = 16 * 1024 * 1024
MAX_STREAM_ID_CHARS: Final = 128
#: Most tags one update may carry.
MAX_TAGS: Final = 4096
#: Longest ProtocolError message: what a peer sent is quoted at most this far.
MAX_ERROR_CHARS: Final = 300
#: Largest msgpack header accepted, in bytes.
_MAX_HEADER_BYTES: Final = 1024 * 1024

#: Every ``ProtocolError.reason``, with what it means.
REJECT_REASONS: Final[Mapping[str, str]] = {
    "frames": "wrong number of ZeroMQ frames for the message kind",
    "header": "header is not a msgpack map, or a field is missing or of the wrong type",
    "version": "protocol version this receiver does not know",
    "kind": "unknown message kind, or a kind that does not belong on this socket",
    "stream": "stream id is not 1..128 printable characters",
    "seq": "negative sequence number",
    "timestamp": "a time is NaN or infinite, or start_s/end_s are out of order",
    "sample_rate": f"sample_rate outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}",
    "channels": f"channels outside 1..{MAX_CHANNELS}",
    "sample_format": "sample_format is not one of f32, i16, i32",
    "length": f"frames < 1, more than {MAX_FRAME_SECONDS:g} s of audio, or buffer > 16 MiB",
    "size": "a binary frame's byte length does not match the header",
    "topic": "the topic frame differs from the header's stream",
    "tags": f"tag names are not strings, or more than {MAX_TAGS} of them",
    "counter": "gaps, dropped, shed or behind_s is negative",
    "content": "content is not music/speech/silence, or its probabilities or level are not numbers",
    "event": "unknown event kind, or a kind-specific field missing or of the wrong type",
}


class ProtocolError(TagstreamError, ValueError):
    """A message is malformed; ``reason`` is a short slug from :data:`REJECT_REASONS`.

    Parameters
    ----------
    message : str
        One line naming the problem and the offending value.
    reason : str
        The slug receivers count rejects by, e.g. ``"version"`` or ``"size"``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        if len(message) > MAX_ERROR_CHARS:  # values come from peers: a 1 MB id, a 1 MB log line
            message = f"{message[:MAX_ERROR_CHARS]}... ({len(message)} characters)"
        super().__init__(message)
        self.reason = reason


FrameLike: TypeAlias = Any
"""``bytes``, ``bytearray``, ``memoryview`` or ``zmq.Frame``: anything with the buffer protocol."""


# ---------------------------------------------------------------------------
# Field checks shared by the dataclasses (encode side) and the decoders.
# ---------------------------------------------------------------------------


def new_sender_id() -> bytes:
    """A routing id for a DEALER sender: 16 random bytes, the first never zero.

    Set it with ``socket.setsockopt(zmq.ROUTING_ID, new_sender_id())`` before
    connecting and keep it for the life of the process: without CURVE the worker
    knows the sender, and which streams are its own, by this id across reconnects
    (``docs/PROTOCOL.md``, "Stream ownership").  libzmq marks the ids it makes up
    itself with a leading zero byte.
    """
    token = secrets.token_bytes(16)
    return bytes([token[0] | 1]) + token[1:]


def check_stream_id(stream: object) -> str:
    """Return ``stream`` if it is a valid stream id, else raise ``ProtocolError("stream")``.

    A stream id is a ``str`` of 1..128 printable characters.
    """
    if not isinstance(stream, str):
        raise ProtocolError(f"stream={stream!r} must be a string", reason="stream")
    if not 1 <= len(stream) <= MAX_STREAM_ID_CHARS or not stream.isprintable():
        raise ProtocolError(
            f"stream={stream!r} must be 1..{MAX_STREAM_ID_CHARS} printable characters",
            reason="stream",
        )
    return stream


def _check_int(name: str, value: object, *, minimum: int, reason: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ProtocolError(f"{name}={value!r} must be an integer", reason="header")
    if value < minimum:
        raise ProtocolError(f"{name}={value!r} must be >= {minimum}", reason=reason)
    return int(value)


def _check_time(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ProtocolError(f"{name}={value!r} must be a number", reason="header")
    value = float(value)
    if not math.isfinite(value):
        raise ProtocolError(f"{name}={value!r} must be finite", reason="timestamp")
    return value


def _check_audio_format(*, sample_rate: object, channels: object, sample_format: object) -> None:
    _check_int("sample_rate", sample_rate, minimum=0, reason="sample_rate")
    assert isinstance(sample_rate, int | np.integer)
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            f"sample_rate={sample_rate} must be in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}",
            reason="sample_rate",
        )
    _check_int("channels", channels, minimum=0, reason="channels")
    assert isinstance(channels, int | np.integer)
    if not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError(f"channels={channels} must be in 1..{MAX_CHANNELS}", reason="channels")
    if not isinstance(sample_format, str):
        raise ProtocolError(f"sample_format={sample_format!r} must be a string", reason="header")
    if sample_format not in SAMPLE_FORMATS:
        raise ProtocolError(
            f"sample_format={sample_format!r} must be one of {', '.join(SAMPLE_FORMATS)}",
            reason="sample_format",
        )


def _check_length(*, frames: int, sample_rate: int, channels: int, sample_format: str) -> int:
    """Check the audio length limits; return the PCM buffer size in bytes."""
    if frames < 1:
        raise ProtocolError(f"frames={frames} must be >= 1", reason="length")
    if frames > MAX_FRAME_SECONDS * sample_rate:
        raise ProtocolError(
            f"frames={frames} is more than {MAX_FRAME_SECONDS:g} s at {sample_rate} Hz",
            reason="length",
        )
    nbytes = frames * channels * SAMPLE_FORMATS[sample_format].itemsize
    if nbytes > MAX_BUFFER_BYTES:
        raise ProtocolError(
            f"audio buffer of {nbytes} bytes exceeds {MAX_BUFFER_BYTES}", reason="length"
        )
    return nbytes


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class AudioFrame:
    """One block of PCM audio from one stream.

    Parameters
    ----------
    stream : str
        Stream id, 1..128 printable characters.
    seq : int >= 0
        Block counter of this stream, +1 per block; a missing number is a lost block.
    capture_time : float
        Unix time (seconds) at which the first sample was captured.
    sample_rate : int in [1000, 384000]
    channels : int in [1, 32]
    sample_format : {"f32", "i16", "i32"}
    samples : np.ndarray [shape=(frames, channels), dtype matching ``sample_format``]
        Interleaved samples.  Decoded frames hold a read-only view of the
        received ZeroMQ buffer: copy before modifying.
    live : bool
        ``True`` (the default): audio captured now, which the worker may shed
        when it falls too far behind (``inference.max_window_age_seconds``).
        ``False``: recorded audio sent as fast as the worker takes it, under
        flow control (acks): never shed.  Optional on the wire (``"live"``).

    Raises
    ------
    ProtocolError
        If any field is invalid (the same checks the decoder applies).

    Notes
    -----
    ``eq=False``: frames compare by identity, because arrays have no single truth value.
    """

    stream: str
    seq: int
    capture_time: float
    sample_rate: int
    channels: int
    sample_format: str
    samples: np.ndarray
    live: bool = True

    def __post_init__(self) -> None:
        check_stream_id(self.stream)
        _check_int("seq", self.seq, minimum=0, reason="seq")
        _check_time("capture_time", self.capture_time)
        if not isinstance(self.live, bool):
            raise ProtocolError(f"live={self.live!r} must be true or false", reason="header")
        _check_audio_format(
            sample_rate=self.sample_rate, channels=self.channels, sample_format=self.sample_format
        )
        samples = self.samples
        if not isinstance(samples, np.ndarray):
            raise ProtocolError(
                f"samples must be a numpy array, got {type(samples).__name__}", reason="header"
            )
        expected = SAMPLE_FORMATS[self.sample_format]
        if samples.dtype.kind != expected.kind or samples.dtype.itemsize != expected.itemsize:
            raise ProtocolError(
                f"samples dtype {samples.dtype} does not match sample_format="
                f"{self.sample_format!r} ({expected})",
                reason="sample_format",
            )
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise ProtocolError(
                f"samples shape {samples.shape} must be (frames, {self.channels})", reason="size"
            )
        _check_length(
            frames=samples.shape[0],
            sample_rate=self.sample_rate,
            channels=self.channels,
            sample_format=self.sample_format,
        )

    @property
    def frames(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        """Seconds of audio in this block."""
        return self.frames / self.sample_rate


@dataclasses.dataclass(frozen=True)
class EndOfStream:
    """The stream is over (its file ended or its streamer stopped).

    Parameters
    ----------
    stream : str
        Stream id.
    seq : int >= 0
        The sequence number after the stream's last audio block.
    """

    stream: str
    seq: int

    def __post_init__(self) -> None:
        check_stream_id(self.stream)
        _check_int("seq", self.seq, minimum=0, reason="seq")


InputMessage: TypeAlias = "AudioFrame | EndOfStream | Event"


@dataclasses.dataclass(frozen=True)
class Ack:
    """How far the worker has tagged a stream (worker -> the sender that owns it).

    Parameters
    ----------
    stream : str
        Stream id.
    seq : int >= 0
        Every audio block numbered below ``seq`` has been taken in, and every
        window those blocks completed has been published (or shed, or dropped:
        counted in the updates' ``dropped``).  Acks of one stream never go back.
    end : bool
        The stream's end message has been handled and its last window
        published: nothing of the stream is left in the worker.  ``seq`` is
        then the end message's ``seq``.
    """

    stream: str
    seq: int
    end: bool = False

    def __post_init__(self) -> None:
        check_stream_id(self.stream)
        _check_int("seq", self.seq, minimum=0, reason="seq")
        if not isinstance(self.end, bool):
            raise ProtocolError(f"end={self.end!r} must be true or false", reason="header")


@dataclasses.dataclass(frozen=True, eq=False)
class TagUpdate:
    """Tag probabilities for one window of one stream, published by the worker.

    Parameters
    ----------
    stream : str
        Stream id (also the ZeroMQ topic).
    seq : int >= 0
        Update counter of this stream.
    start_s, end_s : float >= 0
        Audio time of the window, seconds since the stream's first sample.
    model : str
        Name of the model that produced the probabilities.
    tags : tuple of str [len N]
        Tag names, in the order of ``probabilities``.
    probabilities : np.ndarray [shape=(N,), dtype=float32]
        Tag probabilities of this window, in [0, 1].
    smoothed : np.ndarray [shape=(N,), dtype=float32]
        Exponential moving average of ``probabilities``.
    capture_time : float
        Unix time at which the window's last sample was captured.
    received_time : float
        Unix time at which the worker received that sample.
    published_time : float
        Unix time at which the update was published.
    gaps : int >= 0
        Sequence gaps seen so far on this stream.
    dropped : int >= 0
        Blocks or updates dropped so far on this stream.
    content : {"music", "speech", "silence"} or None
        What the window holds (:mod:`model.content`); ``None`` when the worker
        did not classify it (an older worker, or the window's audio was gone).
    content_probabilities : dict {str: float} or None
        One probability per class of :data:`CONTENTS`.
    level_dbfs : float or None
        The window's RMS level in dBFS (a full-scale sine reads 0).
    shed : int >= 0
        Windows of this stream the worker shed so far because they were too old
        when their turn came (also counted in ``dropped``).
    behind_s : float >= 0 or None
        How far behind the stream the worker is: seconds of the stream's audio it
        had received beyond this window's end when it published it.  ``None``
        from a worker that does not say.
    change_at_s : float or None
        Audio time, within the window's middle second, where its sound changes
        most (:func:`model.content.spectral_change`); ``None`` when not classified
        or silent.
    change_strength : float >= 0 or None
        How much it changes there (RMS change of the log-mel bands, in nepers, with
        three quarters of the change of overall level taken out).
    change_speech : float in [-1, 1] or None
        How much the speech probability changes there (its mean over the second
        after minus the second before; > 0: talk begins): of talk, voice that the
        content network calls speech, or of voice alone with ``[content] network =
        false``.  Sent with ``change_at_s``; ``None`` from a worker that does not say.

    Notes
    -----
    ``tags`` is normalised to a tuple and the probability arrays to float32
    (without a copy when they already are).  ``eq=False`` as for :class:`AudioFrame`.
    """

    stream: str
    seq: int
    start_s: float
    end_s: float
    model: str
    tags: tuple[str, ...]
    probabilities: np.ndarray
    smoothed: np.ndarray
    capture_time: float
    received_time: float
    published_time: float
    gaps: int = 0
    dropped: int = 0
    content: str | None = None
    content_probabilities: Mapping[str, float] | None = None
    level_dbfs: float | None = None
    shed: int = 0
    behind_s: float | None = None
    change_at_s: float | None = None
    change_strength: float | None = None
    change_speech: float | None = None

    def __post_init__(self) -> None:
        check_stream_id(self.stream)
        _check_int("seq", self.seq, minimum=0, reason="seq")
        _check_content(self)
        _check_int("shed", self.shed, minimum=0, reason="counter")
        if self.behind_s is not None:
            behind_s = _check_time("behind_s", self.behind_s)
            if behind_s < 0:
                raise ProtocolError(f"behind_s={behind_s} must be >= 0", reason="counter")
            object.__setattr__(self, "behind_s", behind_s)
        start_s = _check_time("start_s", self.start_s)
        end_s = _check_time("end_s", self.end_s)
        if not 0.0 <= start_s <= end_s:
            raise ProtocolError(
                f"start_s={start_s} and end_s={end_s} must satisfy 0 <= start_s <= end_s",
                reason="timestamp",
            )
        for name in ("capture_time", "received_time", "published_time"):
            _check_time(name, getattr(self, name))
        if not isinstance(self.model, str):
            raise ProtocolError(f"model={self.model!r} must be a string", reason="header")
        _check_int("gaps", self.gaps, minimum=0, reason="counter")
        _check_int("dropped", self.dropped, minimum=0, reason="counter")
        tags = self.tags
        if isinstance(tags, str) or not isinstance(tags, Sequence):
            raise ProtocolError(f"tags={tags!r} must be a list of strings", reason="tags")
        if len(tags) > MAX_TAGS or not all(isinstance(tag, str) for tag in tags):
            raise ProtocolError(
                f"tags must be at most {MAX_TAGS} strings, got {len(tags)} items", reason="tags"
            )
        object.__setattr__(self, "tags", tuple(tags))
        for name in ("probabilities", "smoothed"):
            values = np.asarray(getattr(self, name), dtype=np.float32)
            if values.shape != (len(tags),):
                raise ProtocolError(
                    f"{name} shape {values.shape} must be ({len(tags)},) to match tags",
                    reason="size",
                )
            object.__setattr__(self, name, values)

    @property
    def latency_s(self) -> float:
        """Seconds from the capture of the window's last sample to publication."""
        return self.published_time - self.capture_time

    def to_json_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict; ``tags`` and ``smoothed`` map name -> probability."""
        return {
            "stream": self.stream,
            "seq": self.seq,
            "start_s": float(self.start_s),
            "end_s": float(self.end_s),
            "model": self.model,
            "tags": dict(zip(self.tags, self.probabilities.tolist(), strict=True)),
            "smoothed": dict(zip(self.tags, self.smoothed.tolist(), strict=True)),
            "capture_time": float(self.capture_time),
            "received_time": float(self.received_time),
            "published_time": float(self.published_time),
            "gaps": self.gaps,
            "dropped": self.dropped,
            **self._optional_fields(),
        }

    def _optional_fields(self) -> dict[str, Any]:
        """The optional fields that are set: content, shed, behind (header and JSON share them)."""
        fields: dict[str, Any] = {}
        if self.shed:
            fields["shed"] = int(self.shed)
        if self.behind_s is not None:
            fields["behind_s"] = float(self.behind_s)
        if self.content is not None:
            fields["content"] = self.content
        if self.content_probabilities is not None:
            fields["content_probabilities"] = dict(self.content_probabilities)
        if self.level_dbfs is not None:
            fields["level_dbfs"] = float(self.level_dbfs)
        if self.change_at_s is not None and self.change_strength is not None:
            fields["change_at_s"] = float(self.change_at_s)
            fields["change_strength"] = float(self.change_strength)
            if self.change_speech is not None:
                fields["change_speech"] = float(self.change_speech)
        return fields


def _check_content(update: TagUpdate) -> None:
    """Check (and normalise) a tag update's optional content fields."""
    if update.content is not None and update.content not in CONTENTS:
        raise ProtocolError(
            f"content={update.content!r} must be one of {', '.join(CONTENTS)}", reason="content"
        )
    probabilities = update.content_probabilities
    if probabilities is not None:
        if not isinstance(probabilities, Mapping) or set(probabilities) != set(CONTENTS):
            raise ProtocolError(
                f"content_probabilities={probabilities!r} must map each of "
                f"{', '.join(CONTENTS)} to a number",
                reason="content",
            )
        checked = {}
        for name in CONTENTS:
            value = probabilities[name]
            number = _content_number(f"content_probabilities[{name!r}]", value)
            if not 0.0 <= number <= 1.0:
                raise ProtocolError(
                    f"content_probabilities[{name!r}]={value!r} must be in [0, 1]",
                    reason="content",
                )
            checked[name] = number
        object.__setattr__(update, "content_probabilities", checked)
    level = update.level_dbfs
    if level is not None:
        number = _content_number("level_dbfs", level)
        if not math.isfinite(number):
            raise ProtocolError(f"level_dbfs={level!r} must be finite", reason="content")
        object.__setattr__(update, "level_dbfs", number)
    for name in ("change_at_s", "change_strength"):
        value = getattr(update, name)
        if value is None:
            continue
        number = _content_number(name, value)
        if not math.isfinite(number) or number < 0:
            raise ProtocolError(f"{name}={value!r} must be finite and >= 0", reason="content")
        object.__setattr__(update, name, number)
    if update.change_speech is not None:
        number = _content_number("change_speech", update.change_speech)
        if not -1.0 <= number <= 1.0:  # also NaN
            raise ProtocolError(
                f"change_speech={update.change_speech!r} must be in [-1, 1]", reason="content"
            )
        object.__setattr__(update, "change_speech", number)


def _content_number(name: str, value: object) -> float:
    """``value`` as a float; a ProtocolError (reason ``content``) when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ProtocolError(f"{name}={value!r} must be a number", reason="content")
    return float(value)


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def _pack(header: dict[str, Any]) -> bytes:
    packed = msgpack.packb(header, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def encode_audio(frame: AudioFrame) -> list[bytes | memoryview]:
    """Encode an audio block as ``[header, pcm]`` for ``send_multipart(..., copy=False)``.

    Parameters
    ----------
    frame : AudioFrame
        The block to send.

    Returns
    -------
    list [len 2]
        The msgpack header (bytes) and a memoryview of the little-endian PCM
        samples.  The view shares memory with ``frame.samples`` when that array
        is C-contiguous little-endian, so nothing is copied before ZeroMQ.
    """
    dtype = SAMPLE_FORMATS[frame.sample_format]
    samples = np.ascontiguousarray(frame.samples, dtype=dtype)
    header = {
        "version": PROTOCOL_VERSION,
        "kind": KIND_AUDIO,
        "stream": frame.stream,
        "seq": int(frame.seq),
        "capture_time": float(frame.capture_time),
        "sample_rate": int(frame.sample_rate),
        "channels": int(frame.channels),
        "sample_format": frame.sample_format,
        "frames": int(samples.shape[0]),
    }
    if not frame.live:
        header["live"] = False
    return [_pack(header), samples.data.cast("B")]


def encode_end(message: EndOfStream) -> list[bytes]:
    """Encode an end-of-stream message as ``[header]``."""
    header = {
        "version": PROTOCOL_VERSION,
        "kind": KIND_END,
        "stream": message.stream,
        "seq": int(message.seq),
    }
    return [_pack(header)]


def encode_ack(ack: Ack) -> list[bytes]:
    """Encode an acknowledgement as ``[header]`` (the worker replies on the input connection)."""
    header = {
        "version": PROTOCOL_VERSION,
        "kind": KIND_ACK,
        "stream": ack.stream,
        "seq": int(ack.seq),
        "end": bool(ack.end),
    }
    return [_pack(header)]


def encode_update(update: TagUpdate) -> list[bytes | memoryview]:
    """Encode a tag update as ``[topic, header, probabilities, smoothed]`` for a PUB socket.

    The topic is the stream id in UTF-8, so subscribers can filter by stream
    (ZeroMQ topics are prefixes: see :func:`protocol.subscriber.subscribe`).
    """
    header = {
        "version": PROTOCOL_VERSION,
        "kind": KIND_TAGS,
        "stream": update.stream,
        "seq": int(update.seq),
        "start_s": float(update.start_s),
        "end_s": float(update.end_s),
        "model": update.model,
        "tags": list(update.tags),
        "capture_time": float(update.capture_time),
        "received_time": float(update.received_time),
        "published_time": float(update.published_time),
        "gaps": int(update.gaps),
        "dropped": int(update.dropped),
        **update._optional_fields(),
    }
    probabilities = np.ascontiguousarray(update.probabilities, dtype="<f4")
    smoothed = np.ascontiguousarray(update.smoothed, dtype="<f4")
    return [
        update.stream.encode("utf-8"),
        _pack(header),
        probabilities.data.cast("B"),
        smoothed.data.cast("B"),
    ]


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def _buffer(frame: FrameLike) -> memoryview:
    """A flat byte view of one received frame, without copying."""
    try:
        view = memoryview(frame)
    except TypeError:
        raise ProtocolError(
            f"a frame must be bytes-like, got {type(frame).__name__}", reason="frames"
        ) from None
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
    return view


def _unpack_header(frame: FrameLike) -> dict[str, Any]:
    data = _buffer(frame)
    if data.nbytes > _MAX_HEADER_BYTES:
        raise ProtocolError(
            f"header of {data.nbytes} bytes exceeds {_MAX_HEADER_BYTES}", reason="header"
        )
    try:
        header = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ProtocolError(f"header is not valid msgpack ({exc})", reason="header") from None
    if not isinstance(header, dict):
        raise ProtocolError(
            f"header must be a msgpack map, got {type(header).__name__}", reason="header"
        )
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProtocolError(f"version={version!r} must be an integer", reason="header")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"version={version} is not supported (this receiver speaks {PROTOCOL_VERSION})",
            reason="version",
        )
    kind = header.get("kind")
    if not isinstance(kind, str):
        raise ProtocolError(f"kind={kind!r} must be a string", reason="header")
    return header


def _field(header: Mapping[str, Any], name: str) -> Any:
    try:
        return header[name]
    except KeyError:
        raise ProtocolError(
            f"header of kind {header.get('kind')!r} lacks field {name!r}", reason="header"
        ) from None


def _str_field(header: Mapping[str, Any], name: str) -> str:
    value = _field(header, name)
    if not isinstance(value, str):
        raise ProtocolError(f"{name}={value!r} must be a string", reason="header")
    return value


def _expect_frame_list(frames: object) -> None:
    """A message is a sequence of frames; one bytes-like object is not."""
    if isinstance(frames, bytes | bytearray | memoryview) or not isinstance(frames, Sequence):
        raise ProtocolError("expected a list of frames", reason="frames")


def _expect_frames(frames: Sequence[FrameLike], count: int, kind: str) -> None:
    if len(frames) != count:
        raise ProtocolError(
            f"a {kind!r} message has {count} frame(s), got {len(frames)}", reason="frames"
        )


def decode_input(frames: Sequence[FrameLike]) -> InputMessage:
    """Decode a message received on the worker's PULL socket.

    Parameters
    ----------
    frames : sequence of bytes-like or zmq.Frame
        The parts from ``recv_multipart(copy=False)`` (or ``copy=True``).

    Returns
    -------
    AudioFrame, EndOfStream or Event
        An event is one of :data:`SOURCE_EVENT_KINDS` (from the streamer's source).
        Audio samples are a read-only ``np.frombuffer`` view of the PCM frame.

    Raises
    ------
    ProtocolError
        For anything malformed; ``reason`` says what.
    """
    _expect_frame_list(frames)
    if not 1 <= len(frames) <= 2:
        raise ProtocolError(
            f"an input message has 1 or 2 frames, got {len(frames)}", reason="frames"
        )
    header = _unpack_header(frames[0])
    kind = header["kind"]
    if kind == KIND_END:
        _expect_frames(frames, 1, kind)
        return EndOfStream(stream=_str_field(header, "stream"), seq=_field(header, "seq"))
    if kind == KIND_EVENT:
        return _decode_source_event(frames, header)
    if kind != KIND_AUDIO:
        raise ProtocolError(
            f"kind={kind!r} is not an input message ({KIND_AUDIO!r} or {KIND_END!r})",
            reason="kind",
        )
    _expect_frames(frames, 2, kind)
    stream = check_stream_id(_str_field(header, "stream"))
    seq = _check_int("seq", _field(header, "seq"), minimum=0, reason="seq")
    capture_time = _check_time("capture_time", _field(header, "capture_time"))
    sample_rate = _field(header, "sample_rate")
    channels = _field(header, "channels")
    sample_format = _field(header, "sample_format")
    _check_audio_format(sample_rate=sample_rate, channels=channels, sample_format=sample_format)
    n_frames = _check_int("frames", _field(header, "frames"), minimum=1, reason="length")
    nbytes = _check_length(
        frames=n_frames, sample_rate=sample_rate, channels=channels, sample_format=sample_format
    )
    pcm = _buffer(frames[1])
    if pcm.nbytes != nbytes:
        raise ProtocolError(
            f"PCM frame has {pcm.nbytes} bytes; {n_frames} frames x {channels} channels of "
            f"{sample_format} need {nbytes}",
            reason="size",
        )
    samples = np.frombuffer(pcm, dtype=SAMPLE_FORMATS[sample_format]).reshape(n_frames, channels)
    samples.flags.writeable = False  # a view of the receive buffer, whatever its type
    return AudioFrame(
        stream=stream,
        seq=seq,
        capture_time=capture_time,
        sample_rate=sample_rate,
        channels=channels,
        sample_format=sample_format,
        samples=samples,
        live=header.get("live", True),
    )


def decode_ack(frames: Sequence[FrameLike]) -> Ack:
    """Decode an acknowledgement received by a ``DEALER`` sender (``[header]``).

    Raises
    ------
    ProtocolError
        For anything malformed; ``reason`` says what.
    """
    _expect_frame_list(frames)
    _expect_frames(frames, 1, KIND_ACK)
    header = _unpack_header(frames[0])
    if header["kind"] != KIND_ACK:
        raise ProtocolError(f"kind={header['kind']!r} is not {KIND_ACK!r}", reason="kind")
    return Ack(
        stream=check_stream_id(_str_field(header, "stream")),
        seq=_field(header, "seq"),
        end=header.get("end", False),
    )


def _float32_frame(frame: FrameLike, count: int, name: str) -> np.ndarray:
    data = _buffer(frame)
    if data.nbytes != 4 * count:
        raise ProtocolError(
            f"{name} frame has {data.nbytes} bytes; {count} tags need {4 * count}", reason="size"
        )
    values = np.frombuffer(data, dtype="<f4")
    values.flags.writeable = False
    return values


def decode_update(frames: Sequence[FrameLike]) -> TagUpdate:
    """Decode a tag update received on a SUB socket.

    Parameters
    ----------
    frames : sequence of bytes-like or zmq.Frame
        ``[topic, header, probabilities, smoothed]``.

    Returns
    -------
    TagUpdate
        ``probabilities`` and ``smoothed`` are read-only views of the received frames.

    Raises
    ------
    ProtocolError
        For anything malformed; ``reason`` says what.
    """
    _expect_frame_list(frames)
    if len(frames) != 4:
        raise ProtocolError(f"a tag update has 4 frames, got {len(frames)}", reason="frames")
    header = _unpack_header(frames[1])
    if header["kind"] != KIND_TAGS:
        raise ProtocolError(
            f"kind={header['kind']!r} is not a tag update ({KIND_TAGS!r})", reason="kind"
        )
    stream = check_stream_id(_str_field(header, "stream"))
    topic = _buffer(frames[0]).tobytes()
    if topic != stream.encode("utf-8"):
        raise ProtocolError(f"topic {topic!r} differs from stream {stream!r}", reason="topic")
    tags = _field(header, "tags")
    if not isinstance(tags, list):
        raise ProtocolError(f"tags={tags!r} must be a list of strings", reason="tags")
    optional = {
        name: header[name]
        for name in (
            "gaps",
            "dropped",
            "content",
            "content_probabilities",
            "level_dbfs",
            "shed",
            "behind_s",
            "change_at_s",
            "change_strength",
            "change_speech",
        )
        if name in header
    }
    return TagUpdate(
        stream=stream,
        seq=_field(header, "seq"),
        start_s=_field(header, "start_s"),
        end_s=_field(header, "end_s"),
        model=_field(header, "model"),
        tags=tuple(tags),
        probabilities=_float32_frame(frames[2], len(tags), "probabilities"),
        smoothed=_float32_frame(frames[3], len(tags), "smoothed"),
        capture_time=_field(header, "capture_time"),
        received_time=_field(header, "received_time"),
        published_time=_field(header, "published_time"),
        **optional,
    )


# ---------------------------------------------------------------------------
# Events (worker PUB -> subscribers; source events also streamer -> worker)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Event:
    """Something that happened at a moment of a stream's audio.

    Parameters
    ----------
    stream : str
        Stream id (also the ZeroMQ topic on the PUB socket).
    event : str
        One of :data:`EVENT_KINDS`: ``silence_start``, ``silence_end``,
        ``content_change``, ``now_playing``, ``source_down``, ``source_up``.
    time : float
        Unix time at which it was noticed.
    at_s : float >= 0
        Audio time at which it happened, in seconds on the stream's audio
        timeline (that of the tag updates' ``start_s``/``end_s``; from a
        streamer: its block timeline, block ``i`` starting at ``i`` x block length).
    fields : dict {str: str or float}
        The kind's own fields, exactly those :data:`EVENT_FIELDS` names for it
        (``title`` of ``now_playing``, ``duration_s`` of ``silence_end``, ...).

    Raises
    ------
    ProtocolError
        ``reason="event"`` for an unknown kind or a missing or mistyped field.

    Examples
    --------
    >>> Event("radio1", "now_playing", time=1.7e9, at_s=12.5, fields={"title": "A - B"}).title
    'A - B'
    """

    stream: str
    event: str
    time: float
    at_s: float
    fields: Mapping[str, str | float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_stream_id(self.stream)
        if not isinstance(self.event, str) or self.event not in EVENT_FIELDS:
            raise ProtocolError(
                f"event={self.event!r} must be one of {', '.join(EVENT_KINDS)}", reason="event"
            )
        object.__setattr__(self, "time", _check_time("time", self.time))
        at_s = _check_time("at_s", self.at_s)
        if at_s < 0:
            raise ProtocolError(f"at_s={at_s} must be >= 0", reason="timestamp")
        object.__setattr__(self, "at_s", at_s)
        if not isinstance(self.fields, Mapping):
            raise ProtocolError(f"fields={self.fields!r} must be a map", reason="event")
        checked: dict[str, str | float] = {}
        for name, kind in EVENT_FIELDS[self.event].items():
            if name not in self.fields:
                raise ProtocolError(
                    f"a {self.event!r} event lacks its field {name!r}", reason="event"
                )
            value = self.fields[name]
            if kind is str:
                if not isinstance(value, str) or len(value) > MAX_EVENT_TEXT_CHARS:
                    raise ProtocolError(
                        f"{self.event}.{name}={value!r} must be a string of at most "
                        f"{MAX_EVENT_TEXT_CHARS} characters",
                        reason="event",
                    )
                checked[name] = value
            else:
                if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                    raise ProtocolError(
                        f"{self.event}.{name}={value!r} must be a number", reason="event"
                    )
                if not math.isfinite(float(value)):
                    raise ProtocolError(
                        f"{self.event}.{name}={value!r} must be finite", reason="event"
                    )
                checked[name] = float(value)
        object.__setattr__(self, "fields", checked)

    def __getattr__(self, name: str) -> Any:
        """A kind-specific field as an attribute (``event.title``, ``event.duration_s``)."""
        fields = self.__dict__.get("fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(f"a {self.__dict__.get('event')!r} event has no field {name!r}")

    def to_json_dict(self) -> dict[str, Any]:
        """``{"stream", "event", "time", "at_s", <the kind's fields>}``, JSON-serialisable."""
        return {
            "stream": self.stream,
            "event": self.event,
            "time": self.time,
            "at_s": self.at_s,
            **self.fields,
        }


PublishedMessage: TypeAlias = TagUpdate | Event


def _event_header(event: Event) -> bytes:
    return _pack(
        {
            "version": PROTOCOL_VERSION,
            "kind": KIND_EVENT,
            "stream": event.stream,
            "event": event.event,
            "time": float(event.time),
            "at_s": float(event.at_s),
            **event.fields,
        }
    )


def encode_event(event: Event, *, topic: bool = True) -> list[bytes]:
    """Encode an event: ``[topic, header]`` for a PUB socket, ``[header]`` to a worker.

    Parameters
    ----------
    event : Event
    topic : bool
        True (the worker's PUB socket): the stream id in UTF-8 comes first, as
        for tag updates.  False (a streamer's PUSH socket): the header alone.
    """
    header = _event_header(event)
    return [event.stream.encode("utf-8"), header] if topic else [header]


def _event_from_header(header: Mapping[str, Any]) -> Event:
    kind = _str_field(header, "event")
    if kind not in EVENT_FIELDS:
        raise ProtocolError(
            f"event={kind!r} must be one of {', '.join(EVENT_KINDS)}", reason="event"
        )
    return Event(
        stream=check_stream_id(_str_field(header, "stream")),
        event=kind,
        time=_field(header, "time"),
        at_s=_field(header, "at_s"),
        fields={name: header[name] for name in EVENT_FIELDS[kind] if name in header},
    )


def decode_event(frames: Sequence[FrameLike]) -> Event:
    """Decode an event received on a SUB socket (``[topic, header]``).

    Raises
    ------
    ProtocolError
        For anything malformed; ``reason`` says what.
    """
    message = decode_published(frames)
    if not isinstance(message, Event):
        raise ProtocolError(f"kind={KIND_TAGS!r} is not an event ({KIND_EVENT!r})", reason="kind")
    return message


def decode_published(frames: Sequence[FrameLike]) -> PublishedMessage:
    """Decode anything the worker publishes: a :class:`TagUpdate` or an :class:`Event`.

    Raises
    ------
    ProtocolError
        For anything malformed; ``reason`` says what.
    """
    _expect_frame_list(frames)
    if len(frames) != 2:
        return decode_update(frames)
    header = _unpack_header(frames[1])
    if header["kind"] != KIND_EVENT:
        raise ProtocolError(
            f"a 2-frame message must be an event ({KIND_EVENT!r}), got kind={header['kind']!r}",
            reason="kind",
        )
    event = _event_from_header(header)
    topic = _buffer(frames[0]).tobytes()
    if topic != event.stream.encode("utf-8"):
        raise ProtocolError(f"topic {topic!r} differs from stream {event.stream!r}", reason="topic")
    return event


def _decode_source_event(frames: Sequence[FrameLike], header: Mapping[str, Any]) -> Event:
    """An input ``event`` message (``[header]``): one of :data:`SOURCE_EVENT_KINDS`."""
    _expect_frames(frames, 1, KIND_EVENT)
    event = _event_from_header(header)
    if event.event not in SOURCE_EVENT_KINDS:
        raise ProtocolError(
            f"event={event.event!r} is not a source event a streamer may send "
            f"({', '.join(SOURCE_EVENT_KINDS)})",
            reason="event",
        )
    return event
