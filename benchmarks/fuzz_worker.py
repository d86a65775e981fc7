"""Fuzz the wire protocol decoders and a real worker with broken and hostile messages.

    python -m benchmarks.fuzz_worker [--messages 100000] [--seed 1] [--hypothesis-share 0.1]

A real :class:`inference.Worker` (MSD_musicnn, real ZeroMQ sockets over ipc)
runs in this process.  Messages come from two generators:

* **mutations** of valid encoded audio and end messages (several formats,
  rates and channel counts): bit flips in the header or the PCM, truncated or
  extended frames, missing, extra, duplicated or swapped frames, header fields
  deleted or swapped to another type, huge and non-finite numbers, garbage;
* **hypothesis**: headers drawn by ``hypothesis`` strategies (any msgpack
  value for any protocol field, unknown fields) with random binary frames.

Each message is first decoded here (:func:`protocol.decode_input`): that
gives the expected outcome (valid, or the ``ProtocolError`` reason) and counts
decoder crashes (any other exception).  Then it goes to the worker.  The
mutated tag updates go through :func:`protocol.decode_update` the same way.

The table: messages sent, rejected by reason (expected here and counted by the
worker: they must be equal), crashes (decoder exceptions other than
``ProtocolError``, worker ``internal`` errors, a dead worker loop: must be 0),
whether a valid stream still gets updates afterwards, and messages/s against a
baseline of valid audio messages sent to the same worker in the same run.
Exit status 0 when there were no crashes, every reject was counted and the
worker still answered; 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from config import load_config
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

Message = list[bytes]
#: Fields of the audio header, for the type swaps and hypothesis headers.
AUDIO_FIELDS = (
    "version", "kind", "stream", "seq", "capture_time", "sample_rate", "channels",
    "sample_format", "frames",
)  # fmt: skip
HUGE_VALUES: tuple[Any, ...] = (
    2**63 - 1, -(2**63), 2**64 - 1, 10**9, -1, 0, 1e308, -1e308, math.nan, math.inf,
    -math.inf, 5e-324, "", "x" * 300, b"\x00" * 8, None, True, [], {}, [1, 2], {"a": 1},
)  # fmt: skip
#: Samples per valid base block: 10 ms at 16 kHz keeps messages small.
BASE_FRAMES = 160


@dataclasses.dataclass
class FuzzResult:
    """Counters of one run; see the module docstring."""

    sent: int = 0
    valid: int = 0
    expected_rejects: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    worker_rejects: dict[str, int] = dataclasses.field(default_factory=dict)
    decoder_crashes: int = 0
    crash_examples: list[str] = dataclasses.field(default_factory=list)
    update_messages: int = 0
    update_rejects: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    worker_alive: bool = False
    worker_answering: bool = False
    fuzz_seconds: float = 0.0
    baseline_messages: int = 0
    baseline_seconds: float = 0.0

    @property
    def bad(self) -> int:
        return sum(self.expected_rejects.values())

    @property
    def crashes(self) -> int:
        return (
            self.decoder_crashes
            + self.worker_rejects.get("internal", 0)
            + (0 if self.worker_alive else 1)
        )

    @property
    def rejects_match(self) -> bool:
        counted = {k: v for k, v in self.worker_rejects.items() if k != "internal"}
        return counted == dict(self.expected_rejects)

    @property
    def messages_per_s(self) -> float:
        return self.sent / self.fuzz_seconds if self.fuzz_seconds else float("nan")

    @property
    def baseline_per_s(self) -> float:
        return (
            self.baseline_messages / self.baseline_seconds
            if self.baseline_seconds
            else float("nan")
        )

    @property
    def ok(self) -> bool:
        return self.crashes == 0 and self.rejects_match and self.worker_answering


# -- valid messages ----------------------------------------------------------------------------


class Bases:
    """Valid audio and end messages of a few streams, formats and rates (with running seqs)."""

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


def corpus(count: int, seed: int, hypothesis_share: float) -> Iterator[Message]:
    """Mutated valid messages and hypothesis messages, interleaved, ``count`` in all."""
    rng = random.Random(seed)
    bases = Bases(rng)
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


# -- the run -----------------------------------------------------------------------------------


def classify(message: Message, result: FuzzResult) -> None:
    try:
        decode_input(message)
    except ProtocolError as exc:
        result.expected_rejects[exc.reason] += 1
    except Exception as exc:  # a decoder crash: what the fuzzer is here to find
        result.decoder_crashes += 1
        if len(result.crash_examples) < 5:
            result.crash_examples.append(f"{type(exc).__name__}: {exc} <- {message!r:.200}")
    else:
        result.valid += 1


def fuzz_updates(count: int, seed: int, result: FuzzResult) -> None:
    """The subscriber side: mutated tag updates through decode_update (no socket needed)."""
    rng = random.Random(seed + 1)
    bases = Bases(rng)
    for _ in range(count):
        message = mutate(bases.update(), rng, header_index=1)
        result.update_messages += 1
        try:
            decode_update(message)
        except ProtocolError as exc:
            result.update_rejects[exc.reason] += 1
        except Exception as exc:
            result.decoder_crashes += 1
            if len(result.crash_examples) < 5:
                result.crash_examples.append(f"update {type(exc).__name__}: {exc}")


def _send_all(push: zmq.Socket[Any], messages: list[Message]) -> None:
    for message in messages:
        push.send_multipart(message)


def _wait_messages(worker: Any, count: int, timeout_s: float) -> bool:
    stats = worker.wait_for(lambda s: s.messages >= count, timeout_s=timeout_s)
    return bool(stats.messages >= count)


def run_fuzz(
    *,
    messages: int,
    seed: int = 1,
    hypothesis_share: float = 0.1,
    baseline_messages: int | None = None,
    tagger: Any = None,
    chunk: int = 2000,
    timeout_s: float = 120.0,
) -> FuzzResult:
    """Run the fuzzer against a fresh in-process worker; see the module docstring.

    Parameters
    ----------
    messages : int > 0
        Fuzz messages sent to the worker (and as many mutated updates decoded).
    seed : int
        Seeds the mutations and hypothesis.
    hypothesis_share : float in [0, 1]
        Share of messages drawn by hypothesis rather than mutated.
    baseline_messages : int or None
        Valid audio messages for the baseline (default: ``min(messages, 20000)``).
    tagger : model.Tagger or None
        A loaded tagger to share (tests); loaded here when None.
    chunk : int
        Messages generated, then sent, per step (generation time is not counted).
    """
    from inference import Worker
    from protocol import decode_update as decode_tags

    result = FuzzResult()
    folder = Path(tempfile.mkdtemp(prefix="tagstream-fuzz-"))
    config = load_config(
        overrides={
            "inference.input_endpoint": f"ipc://{folder}/in",
            "inference.publish_endpoint": f"ipc://{folder}/out",
            "inference.hop_seconds": 3.0,
        }
    )
    worker = Worker(config, tagger=tagger)
    context: zmq.Context[Any] = zmq.Context()
    try:
        worker.start()
        thread = worker.run_in_thread()
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDHWM, 100_000)
        push.connect(worker.input_endpoint)
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"alive:")
        sub.connect(worker.publish_endpoint)

        # Baseline: valid audio messages of the same size, same worker, same way.
        rng = random.Random(seed + 2)
        bases = Bases(rng)
        total = baseline_messages if baseline_messages is not None else min(messages, 20_000)
        handled = 0
        while handled < total:
            batch = [bases.audio() for _ in range(min(chunk, total - handled))]
            started = time.perf_counter()
            _send_all(push, batch)
            handled += len(batch)
            if not _wait_messages(worker, handled, timeout_s):
                raise RuntimeError("the worker stopped taking baseline messages")
            result.baseline_seconds += time.perf_counter() - started
        result.baseline_messages = handled

        # Fuzz.
        generator = corpus(messages, seed, hypothesis_share)
        while result.sent < messages:
            batch = [next(generator) for _ in range(min(chunk, messages - result.sent))]
            for message in batch:
                classify(message, result)
            started = time.perf_counter()
            _send_all(push, batch)
            result.sent += len(batch)
            if not _wait_messages(worker, handled + result.sent, timeout_s):
                break  # reported: the worker no longer takes messages
            result.fuzz_seconds += time.perf_counter() - started
        result.worker_rejects = dict(worker.stats().rejected)
        result.worker_alive = thread.is_alive()

        # Still answering: a valid stream gets updates (resent while the SUB joins).
        y = (0.3 * np.random.default_rng(seed).standard_normal(16000 * 4)).astype(np.float32)
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while not result.worker_answering and time.monotonic() < deadline:
            stream = f"alive:{attempt}"
            for seq, offset in enumerate(range(0, len(y), 1600)):
                frame = AudioFrame(
                    stream=stream, seq=seq, capture_time=time.time(), sample_rate=16000,
                    channels=1, sample_format="f32",
                    samples=np.ascontiguousarray(y[offset : offset + 1600, None]),
                )  # fmt: skip
                push.send_multipart(encode_audio(frame))
            push.send_multipart(encode_end(EndOfStream(stream=stream, seq=40)))
            attempt += 1
            while sub.poll(2000):
                if decode_tags(sub.recv_multipart()).stream.startswith("alive:"):
                    result.worker_answering = True
        fuzz_updates(messages, seed, result)
    finally:
        context.destroy(linger=0)
        worker.close()
        shutil.rmtree(folder, ignore_errors=True)
    return result


def print_table(result: FuzzResult, out: Any = sys.stdout) -> None:
    def row(label: str, value: object) -> None:
        print(f"  {label:<38} {value}", file=out)

    print("fuzz: worker input (decode_input + a real worker)", file=out)
    row("messages sent", result.sent)
    row("  still valid after mutation", result.valid)
    row("  bad (rejected by the decoder here)", result.bad)
    reasons = sorted(set(result.expected_rejects) | set(result.worker_rejects))
    print(f"  {'rejected by reason':<38} {'expected':>9} {'worker':>9}", file=out)
    for reason in reasons:
        print(
            f"    {reason:<36} {result.expected_rejects.get(reason, 0):>9} "
            f"{result.worker_rejects.get(reason, 0):>9}",
            file=out,
        )
    row("every bad message counted by the worker", result.rejects_match)
    row("crashes (must be 0)", result.crashes)
    for example in result.crash_examples:
        row("  crash", example)
    row("worker still answering", result.worker_answering)
    print("fuzz: subscriber side (decode_update)", file=out)
    row("updates decoded", result.update_messages)
    row("  rejected", sum(result.update_rejects.values()))
    print("throughput (same worker, same run)", file=out)
    row("baseline: valid audio messages/s", f"{result.baseline_per_s:,.0f}")
    row("fuzz messages/s", f"{result.messages_per_s:,.0f}")
    row("ratio fuzz / baseline", f"{result.messages_per_s / result.baseline_per_s:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hypothesis-share", type=float, default=0.1)
    parser.add_argument("--baseline-messages", type=int, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    logging.basicConfig(level=logging.ERROR)
    result = run_fuzz(
        messages=args.messages,
        seed=args.seed,
        hypothesis_share=args.hypothesis_share,
        baseline_messages=args.baseline_messages,
    )
    print_table(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
