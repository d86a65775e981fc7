"""The wire protocol: round trips, every rejection reason, and real ZeroMQ sockets."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from helpers import assert_same_update
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import protocol
from model.audio import to_mono_float32
from protocol import (
    AudioFrame,
    EndOfStream,
    ProtocolError,
    TagUpdate,
    decode_input,
    decode_update,
    encode_audio,
    encode_end,
    encode_update,
)
from protocol.subscriber import Subscriber, subscribe

RECEIVE_TIMEOUT_MS = 5000


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

_NON_PRINTABLE: list[Any] = ["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"]
stream_ids = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=_NON_PRINTABLE), st.just(" ")),
    min_size=1,
    max_size=protocol.MAX_STREAM_ID_CHARS,
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
seqs = st.integers(min_value=0, max_value=2**63 - 1)


@st.composite
def audio_frames(draw: st.DrawFn, sample_format: str | None = None) -> AudioFrame:
    fmt = sample_format or draw(st.sampled_from(sorted(protocol.SAMPLE_FORMATS)))
    channels = draw(st.integers(1, 8))
    frames = draw(st.integers(1, 600))
    sample_rate = draw(st.integers(max(protocol.MIN_SAMPLE_RATE, frames), protocol.MAX_SAMPLE_RATE))
    samples = draw(hnp.arrays(protocol.SAMPLE_FORMATS[fmt], (frames, channels)))
    return AudioFrame(
        stream=draw(stream_ids),
        seq=draw(seqs),
        capture_time=draw(finite_floats),
        sample_rate=sample_rate,
        channels=channels,
        sample_format=fmt,
        samples=samples,
    )


@st.composite
def tag_updates(draw: st.DrawFn) -> TagUpdate:
    n_tags = draw(st.integers(0, 60))
    tags = draw(st.lists(st.text(max_size=30), min_size=n_tags, max_size=n_tags))
    probs = hnp.arrays(np.float32, n_tags, elements=st.floats(0, 1, width=32))
    start_s, end_s = sorted(draw(st.lists(st.floats(0, 1e9), min_size=2, max_size=2)))
    return TagUpdate(
        stream=draw(stream_ids),
        seq=draw(seqs),
        start_s=start_s,
        end_s=end_s,
        model=draw(st.text(max_size=40)),
        tags=tuple(tags),
        probabilities=draw(probs),
        smoothed=draw(probs),
        capture_time=draw(finite_floats),
        received_time=draw(finite_floats),
        published_time=draw(finite_floats),
        gaps=draw(st.integers(0, 2**31)),
        dropped=draw(st.integers(0, 2**31)),
    )


def assert_same_audio(got: protocol.InputMessage, want: AudioFrame) -> None:
    assert isinstance(got, AudioFrame)
    assert (got.stream, got.seq, got.capture_time) == (want.stream, want.seq, want.capture_time)
    assert (got.sample_rate, got.channels, got.sample_format) == (
        want.sample_rate,
        want.channels,
        want.sample_format,
    )
    assert got.samples.dtype == protocol.SAMPLE_FORMATS[want.sample_format]
    assert got.samples.shape == want.samples.shape
    # Bytes, not values: NaN payloads and -0.0 must survive too.
    assert got.samples.tobytes() == np.ascontiguousarray(want.samples).tobytes()


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("sample_format", ["f32", "i16", "i32"])
@given(data=st.data())
def test_audio_round_trip(sample_format: str, data: st.DataObject) -> None:
    frame = data.draw(audio_frames(sample_format))
    parts = encode_audio(frame)
    assert len(parts) == 2
    assert_same_audio(decode_input(parts), frame)
    # As a receiver with copy=True would see them.
    assert_same_audio(decode_input([bytes(part) for part in parts]), frame)


@given(stream=stream_ids, seq=seqs)
def test_end_round_trip(stream: str, seq: int) -> None:
    parts = encode_end(EndOfStream(stream=stream, seq=seq))
    assert len(parts) == 1
    assert decode_input(parts) == EndOfStream(stream=stream, seq=seq)


@given(update=tag_updates())
def test_update_round_trip(update: TagUpdate) -> None:
    parts = encode_update(update)
    assert len(parts) == 4
    assert bytes(parts[0]) == update.stream.encode("utf-8")
    assert_same_update(decode_update(parts), update)
    assert_same_update(decode_update([bytes(part) for part in parts]), update)


def test_encode_audio_does_not_copy_contiguous_samples(rng: np.random.Generator) -> None:
    samples = rng.standard_normal((480, 2)).astype(np.float32)
    frame = AudioFrame(
        stream="s",
        seq=0,
        capture_time=0.0,
        sample_rate=48000,
        channels=2,
        sample_format="f32",
        samples=samples,
    )
    pcm = encode_audio(frame)[1]
    assert np.shares_memory(np.frombuffer(pcm, dtype=np.uint8), samples)


def test_big_endian_samples_are_sent_little_endian() -> None:
    samples = np.array([[1], [-2], [300]], dtype=">i2")
    frame = AudioFrame(
        stream="s",
        seq=0,
        capture_time=0.0,
        sample_rate=8000,
        channels=1,
        sample_format="i16",
        samples=samples,
    )
    decoded = decode_input(encode_audio(frame))
    assert isinstance(decoded, AudioFrame)
    assert decoded.samples[:, 0].tolist() == [1, -2, 300]


def test_update_without_optional_counters_defaults_to_zero() -> None:
    update = make_update()
    topic, header, probs, smoothed = encode_update(update)
    fields = msgpack.unpackb(header)
    del fields["gaps"], fields["dropped"]
    decoded = decode_update([topic, msgpack.packb(fields), probs, smoothed])
    assert (decoded.gaps, decoded.dropped) == (0, 0)


def test_where_the_sound_changes_travels_on_the_update() -> None:
    update = make_update(change_at_s=1.25, change_strength=2.5, change_speech=-0.75)
    decoded = decode_update([bytes(part) for part in encode_update(update)])
    assert (decoded.change_at_s, decoded.change_strength, decoded.change_speech) == (
        1.25, 2.5, -0.75
    )  # fmt: skip
    assert update.to_json_dict()["change_at_s"] == 1.25
    assert update.to_json_dict()["change_speech"] == -0.75
    older = make_update(change_at_s=1.25, change_strength=2.5)  # a worker that does not say
    assert decode_update([bytes(part) for part in encode_update(older)]).change_speech is None
    assert "change_speech" not in older.to_json_dict()
    absent = decode_update([bytes(part) for part in encode_update(make_update())])
    assert (absent.change_at_s, absent.change_strength, absent.change_speech) == (None,) * 3
    assert "change_at_s" not in make_update().to_json_dict()


def test_unknown_header_fields_are_ignored() -> None:
    """Adding optional fields does not bump the version: old receivers must accept them."""
    parts = audio_parts(extra={"gain_db": 3.0, "device": "hw:1,0"})
    assert isinstance(decode_input(parts), AudioFrame)
    end = msgpack.packb({"version": 1, "kind": "end", "stream": "s", "seq": 3, "why": "eof"})
    assert decode_input([end]) == EndOfStream(stream="s", seq=3)


def test_to_json_dict() -> None:
    update = make_update(tags=("rock", "jazz"), probabilities=[0.75, 0.25], smoothed=[0.5, 0.5])
    assert update.to_json_dict() == {
        "stream": "host:mic",
        "seq": 7,
        "start_s": 1.0,
        "end_s": 4.0,
        "model": "MSD_musicnn",
        "tags": {"rock": 0.75, "jazz": 0.25},
        "smoothed": {"rock": 0.5, "jazz": 0.5},
        "capture_time": 100.0,
        "received_time": 100.25,
        "published_time": 100.5,
        "gaps": 1,
        "dropped": 2,
    }


@pytest.mark.parametrize(
    ("sample_format", "samples", "expected"),
    [
        ("f32", np.array([[0.5], [-1.0]], dtype=np.float32), [0.5, -1.0]),
        ("f32", np.array([[0.5, -0.5], [1.0, 0.0]], dtype=np.float32), [0.0, 0.5]),
        ("i16", np.array([[-32768], [16384], [0]], dtype=np.int16), [-1.0, 0.5, 0.0]),
        ("i16", np.array([[32767, 32767], [-32768, 0]], dtype=np.int16), [32767 / 32768, -0.5]),
        ("i32", np.array([[-(2**31)], [2**30]], dtype=np.int32), [-1.0, 0.5]),
        ("i32", np.array([[2**31 - 1, -(2**31)]], dtype=np.int32), [-0.5 / 2**31]),
    ],
)
def test_to_mono_float32(sample_format: str, samples: np.ndarray, expected: list[float]) -> None:
    frame = AudioFrame(
        stream="s",
        seq=0,
        capture_time=0.0,
        sample_rate=8000,
        channels=samples.shape[1],
        sample_format=sample_format,
        samples=samples,
    )
    mono = to_mono_float32(frame)
    assert mono.dtype == np.float32
    assert mono.shape == (samples.shape[0],)
    np.testing.assert_allclose(mono, expected, rtol=1e-6, atol=1e-9)


@given(frame=audio_frames())
def test_to_mono_float32_stays_in_range(frame: AudioFrame) -> None:
    if frame.sample_format == "f32":
        return  # float input is passed through (mean), not clipped
    mono = to_mono_float32(frame)
    assert mono.shape == (frame.frames,)
    assert np.all(mono >= -1.0)
    assert np.all(mono <= 1.0)


# ---------------------------------------------------------------------------
# Rejections
# ---------------------------------------------------------------------------

DELETE = object()


def audio_parts(
    *, pcm_bytes: int | None = None, extra: dict[str, Any] | None = None, **fields: Any
) -> list[bytes]:
    """A valid audio message with header ``fields`` overridden (``DELETE`` removes one)."""
    header: dict[str, Any] = {
        "version": 1,
        "kind": "audio",
        "stream": "host:mic",
        "seq": 0,
        "capture_time": 1.7e9,
        "sample_rate": 16000,
        "channels": 2,
        "sample_format": "i16",
        "frames": 160,
    }
    header.update(fields)
    header.update(extra or {})
    header = {key: value for key, value in header.items() if value is not DELETE}
    nbytes = 160 * 2 * 2 if pcm_bytes is None else pcm_bytes
    return [msgpack.packb(header), bytes(nbytes)]


def make_update(**fields: Any) -> TagUpdate:
    values: dict[str, Any] = {
        "stream": "host:mic",
        "seq": 7,
        "start_s": 1.0,
        "end_s": 4.0,
        "model": "MSD_musicnn",
        "tags": ("rock", "jazz", "piano"),
        "probabilities": [0.5, 0.25, 0.125],
        "smoothed": [0.25, 0.25, 0.25],
        "capture_time": 100.0,
        "received_time": 100.25,
        "published_time": 100.5,
        "gaps": 1,
        "dropped": 2,
    }
    values.update(fields)
    return TagUpdate(**values)


def update_parts(*, topic: bytes | None = None, n_values: int = 3, **fields: Any) -> list[bytes]:
    """A valid update's frames with header ``fields`` overridden (``DELETE`` removes one)."""
    topic_frame, header_frame, _, _ = (bytes(part) for part in encode_update(make_update()))
    header = msgpack.unpackb(header_frame)
    header.update(fields)
    header = {key: value for key, value in header.items() if value is not DELETE}
    values = np.full(n_values, 0.5, dtype="<f4").tobytes()
    return [topic_frame if topic is None else topic, msgpack.packb(header), values, values]


INPUT_REJECTS: list[tuple[str, Callable[[], Any], str]] = [
    ("no frames", lambda: [], "frames"),
    ("three frames", lambda: [*audio_parts(), b""], "frames"),
    ("audio without pcm", lambda: audio_parts()[:1], "frames"),
    ("end with a pcm frame", lambda: [encode_end(EndOfStream("s", 0))[0], b"\0\0"], "frames"),
    ("bytes instead of a list", lambda: audio_parts()[0], "frames"),
    ("a frame that is not bytes", lambda: [12, b""], "frames"),
    ("garbage header", lambda: [b"\xc1\xc1", b""], "header"),
    ("truncated msgpack", lambda: [audio_parts()[0][:-3], bytes(640)], "header"),
    ("header is a list", lambda: [msgpack.packb([1, "audio"]), b""], "header"),
    ("no version", lambda: audio_parts(version=DELETE), "header"),
    ("version as string", lambda: audio_parts(version="1"), "header"),
    ("no kind", lambda: audio_parts(kind=DELETE), "header"),
    ("missing seq", lambda: audio_parts(seq=DELETE), "header"),
    ("missing frames", lambda: audio_parts(frames=DELETE), "header"),
    ("missing capture_time", lambda: audio_parts(capture_time=DELETE), "header"),
    ("seq as string", lambda: audio_parts(seq="1"), "header"),
    ("seq as bool", lambda: audio_parts(seq=True), "header"),
    ("seq as float", lambda: audio_parts(seq=1.0), "header"),
    ("capture_time as string", lambda: audio_parts(capture_time="now"), "header"),
    ("sample_rate as float", lambda: audio_parts(sample_rate=16000.0), "header"),
    ("channels as string", lambda: audio_parts(channels="2"), "header"),
    ("sample_format as int", lambda: audio_parts(sample_format=16), "header"),
    ("stream as bytes", lambda: audio_parts(stream=b"host:mic"), "header"),
    ("future version", lambda: audio_parts(version=2), "version"),
    ("version 0", lambda: audio_parts(version=0), "version"),
    ("unknown kind", lambda: audio_parts(kind="video"), "kind"),
    ("tags on the input socket", lambda: audio_parts(kind="tags"), "kind"),
    ("empty stream id", lambda: audio_parts(stream=""), "stream"),
    ("stream id too long", lambda: audio_parts(stream="x" * 129), "stream"),
    ("stream id with newline", lambda: audio_parts(stream="a\nb"), "stream"),
    (
        "end with bad stream",
        lambda: [msgpack.packb({"version": 1, "kind": "end", "stream": "", "seq": 0})],
        "stream",
    ),
    ("negative seq", lambda: audio_parts(seq=-1), "seq"),
    (
        "end with negative seq",
        lambda: [msgpack.packb({"version": 1, "kind": "end", "stream": "s", "seq": -5})],
        "seq",
    ),
    ("NaN capture_time", lambda: audio_parts(capture_time=math.nan), "timestamp"),
    ("infinite capture_time", lambda: audio_parts(capture_time=-math.inf), "timestamp"),
    ("sample_rate too low", lambda: audio_parts(sample_rate=999), "sample_rate"),
    ("sample_rate too high", lambda: audio_parts(sample_rate=384001), "sample_rate"),
    ("sample_rate negative", lambda: audio_parts(sample_rate=-16000), "sample_rate"),
    ("no channels", lambda: audio_parts(channels=0), "channels"),
    ("too many channels", lambda: audio_parts(channels=33), "channels"),
    ("float64 samples", lambda: audio_parts(sample_format="f64"), "sample_format"),
    ("upper-case format", lambda: audio_parts(sample_format="F32"), "sample_format"),
    ("zero frames", lambda: audio_parts(frames=0, pcm_bytes=0), "length"),
    ("negative frames", lambda: audio_parts(frames=-1), "length"),
    (
        "more than 10 s",
        lambda: audio_parts(sample_rate=1000, channels=1, frames=10_001, pcm_bytes=20_002),
        "length",
    ),
    (
        "buffer over 16 MiB",
        lambda: audio_parts(sample_rate=384000, channels=32, sample_format="i32", frames=200_000),
        "length",
    ),
    ("pcm one byte short", lambda: audio_parts(pcm_bytes=639), "size"),
    ("pcm one byte long", lambda: audio_parts(pcm_bytes=641), "size"),
    ("pcm for one channel", lambda: audio_parts(pcm_bytes=320), "size"),
]


@pytest.mark.parametrize(
    ("make_frames", "reason"),
    [pytest.param(make, reason, id=name) for name, make, reason in INPUT_REJECTS],
)
def test_decode_input_rejects(make_frames: Callable[[], Any], reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_input(make_frames())
    assert info.value.reason == reason
    assert reason in protocol.REJECT_REASONS
    assert isinstance(info.value, ValueError)


UPDATE_REJECTS: list[tuple[str, Callable[[], Any], str]] = [
    ("three frames", lambda: update_parts()[:3], "frames"),
    ("five frames", lambda: [*update_parts(), b""], "frames"),
    ("garbage header", lambda: [b"host:mic", b"\xc1", b"", b""], "header"),
    ("missing model", lambda: update_parts(model=DELETE), "header"),
    ("missing published_time", lambda: update_parts(published_time=DELETE), "header"),
    ("missing tags", lambda: update_parts(tags=DELETE), "header"),
    ("model as int", lambda: update_parts(model=3), "header"),
    ("seq as string", lambda: update_parts(seq="7"), "header"),
    ("start_s as string", lambda: update_parts(start_s="1"), "header"),
    ("future version", lambda: update_parts(version=2), "version"),
    ("audio on the update socket", lambda: update_parts(kind="audio"), "kind"),
    ("unknown kind", lambda: update_parts(kind="tag"), "kind"),
    ("bad stream id", lambda: update_parts(stream="a\tb", topic=b"a\tb"), "stream"),
    ("topic differs", lambda: update_parts(topic=b"host:mic2"), "topic"),
    ("negative seq", lambda: update_parts(seq=-1), "seq"),
    ("NaN published_time", lambda: update_parts(published_time=math.nan), "timestamp"),
    ("infinite received_time", lambda: update_parts(received_time=math.inf), "timestamp"),
    ("start after end", lambda: update_parts(start_s=5.0, end_s=4.0), "timestamp"),
    ("negative start", lambda: update_parts(start_s=-1.0), "timestamp"),
    ("tags not a list", lambda: update_parts(tags="rock"), "tags"),
    ("tag not a string", lambda: update_parts(tags=["rock", 2, "piano"]), "tags"),
    ("too many tags", lambda: update_parts(tags=["t"] * 5000, n_values=5000), "tags"),
    ("probabilities too short", lambda: update_parts(n_values=2), "size"),
    ("negative gaps", lambda: update_parts(gaps=-1), "counter"),
    ("negative dropped", lambda: update_parts(dropped=-3), "counter"),
    ("negative change_at_s", lambda: update_parts(change_at_s=-1.0), "content"),
    ("NaN change_strength", lambda: update_parts(change_strength=math.nan), "content"),
    ("change_at_s as string", lambda: update_parts(change_at_s="1.0"), "content"),
    ("change_speech above 1", lambda: update_parts(change_speech=1.5), "content"),
    ("NaN change_speech", lambda: update_parts(change_speech=math.nan), "content"),
]


@pytest.mark.parametrize(
    ("make_frames", "reason"),
    [pytest.param(make, reason, id=name) for name, make, reason in UPDATE_REJECTS],
)
def test_decode_update_rejects(make_frames: Callable[[], Any], reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_update(make_frames())
    assert info.value.reason == reason
    assert reason in protocol.REJECT_REASONS


def test_decode_update_rejects_short_smoothed_frame() -> None:
    parts = update_parts()
    parts[3] = parts[3][:-4]
    with pytest.raises(ProtocolError) as info:
        decode_update(parts)
    assert info.value.reason == "size"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"samples": np.zeros((10, 1), dtype=np.float64)}, "sample_format"),
        ({"samples": np.zeros((10, 2), dtype=np.float32)}, "size"),
        ({"samples": np.zeros(10, dtype=np.float32)}, "size"),
        ({"samples": [[0.0]]}, "header"),
        ({"sample_format": "i16"}, "sample_format"),
        ({"stream": ""}, "stream"),
        ({"seq": -1}, "seq"),
        ({"capture_time": math.inf}, "timestamp"),
    ],
)
def test_invalid_audio_frame_cannot_be_built(fields: dict[str, Any], reason: str) -> None:
    values: dict[str, Any] = {
        "stream": "s",
        "seq": 0,
        "capture_time": 0.0,
        "sample_rate": 16000,
        "channels": 1,
        "sample_format": "f32",
        "samples": np.zeros((10, 1), dtype=np.float32),
    }
    values.update(fields)
    with pytest.raises(ProtocolError) as info:
        AudioFrame(**values)
    assert info.value.reason == reason


def test_invalid_update_cannot_be_built() -> None:
    with pytest.raises(ProtocolError) as info:
        make_update(probabilities=[0.5])
    assert info.value.reason == "size"


# ---------------------------------------------------------------------------
# Real ZeroMQ sockets
# ---------------------------------------------------------------------------


def _push_pull_round_trip(
    context: zmq.Context[zmq.Socket[bytes]], rng: np.random.Generator, bind: str
) -> None:
    pull = context.socket(zmq.PULL)
    push = context.socket(zmq.PUSH)
    try:
        if bind.startswith("tcp://"):
            port = pull.bind_to_random_port(bind)
            endpoint = f"{bind}:{port}"
        else:
            pull.bind(bind)
            endpoint = bind
        push.connect(endpoint)
        sent: list[AudioFrame] = []
        for seq, fmt in enumerate(["f32", "i16", "i32", "f32"]):
            dtype = protocol.SAMPLE_FORMATS[fmt]
            if dtype.kind == "f":
                samples = rng.uniform(-1, 1, (48000, 2)).astype(dtype)  # 375 KiB: not inlined
            else:
                info = np.iinfo(dtype)
                samples = rng.integers(info.min, info.max, (48000, 2), endpoint=True).astype(dtype)
            frame = AudioFrame(
                stream="host:mic",
                seq=seq,
                capture_time=1.7e9 + seq,
                sample_rate=48000,
                channels=2,
                sample_format=fmt,
                samples=samples,
            )
            push.send_multipart(encode_audio(frame), copy=False)
            sent.append(frame)
        push.send_multipart(encode_end(EndOfStream("host:mic", len(sent))))
        for want in sent:
            assert pull.poll(RECEIVE_TIMEOUT_MS), "no message within 5 s"
            parts = pull.recv_multipart(copy=False)
            got = decode_input(parts)
            assert_same_audio(got, want)
            assert isinstance(got, AudioFrame)
            # Zero copy: the samples are a read-only view of the received ZeroMQ frame.
            assert np.shares_memory(got.samples, np.frombuffer(parts[1].buffer, dtype=np.uint8))
            assert not got.samples.flags.writeable
        assert pull.poll(RECEIVE_TIMEOUT_MS)
        assert decode_input(pull.recv_multipart(copy=False)) == EndOfStream("host:mic", 4)
    finally:
        push.close(linger=0)
        pull.close(linger=0)


def test_push_pull_over_tcp(
    context: zmq.Context[zmq.Socket[bytes]], rng: np.random.Generator
) -> None:
    _push_pull_round_trip(context, rng, "tcp://127.0.0.1")


def test_push_pull_over_ipc(
    context: zmq.Context[zmq.Socket[bytes]], rng: np.random.Generator, tmp_path: Path
) -> None:
    _push_pull_round_trip(context, rng, f"ipc://{tmp_path}/audio.sock")


class Publisher:
    """Publishes a round of updates every 20 ms from a thread until stopped (slow joiner)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], rounds: list[list[bytes]]):
        self.socket = context.socket(zmq.PUB)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.rounds = rounds
        self.sent_rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(500):  # bounded: at most ~10 s
            if self._stop.is_set():
                return
            for parts in self.rounds:
                self.socket.send_multipart(parts)
            self.sent_rounds += 1
            self._stop.wait(0.02)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close(linger=0)


def test_subscribe_filters_exact_stream_and_closes(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    wanted = make_update(stream="studio")
    prefix_trap = make_update(stream="studio-2")  # topic "studio" is a prefix of "studio-2"
    other = make_update(stream="kitchen")
    rounds = [
        [bytes(part) for part in encode_update(update)] for update in (prefix_trap, other, wanted)
    ]
    sub_context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    with Publisher(context, rounds) as publisher:
        updates = subscribe(
            [publisher.endpoint], streams=["studio"], context=sub_context, timeout_s=10.0
        )
        received = [next(updates) for _ in range(3)]
        updates.close()
    assert [update.stream for update in received] == ["studio"] * 3
    assert_same_update(received[0], wanted)
    # The generator closed its socket: terminating its context returns instead of hanging.
    terminated = threading.Thread(target=sub_context.term, daemon=True)
    terminated.start()
    terminated.join(timeout=10)
    assert not terminated.is_alive(), "subscribe() left its SUB socket open"


def test_subscriber_counts_and_skips_malformed_updates(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    good = [bytes(part) for part in encode_update(make_update(stream="studio"))]
    short = [*good[:3], good[3][:-4]]
    future = update_parts(version=2, stream="studio", topic=b"studio")
    with (
        Publisher(context, [short, future, good]) as publisher,
        Subscriber(publisher.endpoint, streams=["studio"], context=context) as subscriber,
    ):
        for _ in range(3):
            update = subscriber.receive(timeout_s=10.0)
            assert update is not None
            assert update.stream == "studio"
    # From the second good update on, the malformed ones of its round came first.
    assert subscriber.rejected["size"] >= 1
    assert subscriber.rejected["version"] >= 1
    assert subscriber.received == 3
    assert subscriber.closed


def test_subscribe_stops_after_timeout(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    publisher = context.socket(zmq.PUB)
    try:
        port = publisher.bind_to_random_port("tcp://127.0.0.1")
        updates = list(subscribe(f"tcp://127.0.0.1:{port}", context=context, timeout_s=0.2))
    finally:
        publisher.close(linger=0)
    assert updates == []
