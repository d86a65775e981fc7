"""Fuzz the wire protocol decoders and a real worker with broken and hostile messages.

    python -m benchmarks.fuzz_worker [--messages 100000] [--seed 1] [--hypothesis-share 0.1]
        [--multipart-share 0.01] [--forged-share 0.01] [--handshake-share 0.01]

A real :class:`inference.Worker` (MSD_musicnn, real ZeroMQ sockets over ipc;
without CURVE its input is the raw-ZMTP ingress, :mod:`inference.ingress`)
runs in this process.  Messages come from :func:`protocol.fuzzing.hostile_corpus`:

* **mutations** of valid encoded audio and end messages (several formats,
  rates and channel counts): bit flips in the header or the PCM, truncated or
  extended frames, missing, extra, duplicated or swapped frames, header fields
  deleted or swapped to another type, huge and non-finite numbers, garbage;
* **hypothesis**: headers drawn by ``hypothesis`` strategies (any msgpack
  value for any protocol field, unknown fields) with random binary frames;
* **multipart** messages at and beyond the limits of a whole message (more
  than ``MAX_PARTS`` parts, up to 1000; more than ``MAX_MESSAGE_BYTES`` in all);
* **forgeries**: a victim stream's id (the victim streams real audio on its
  own connection all along) with ``seq`` and capture-time jumps, and a stream
  of the fuzzer's own whose ``seq`` and capture times jump back and forth.

Each message is first judged here (:func:`protocol.fuzzing.worker_reject`:
the limits of the whole message, :func:`protocol.decode_input`, ownership):
that gives the expected outcome (taken, or the reject reason) and counts
decoder crashes (any other exception).  Then it goes to the worker.  The
mutated tag updates go through :func:`protocol.decode_update` the same way.

Then **the ZMTP handshake**: ``--handshake-share`` × ``--messages`` raw
connections (:func:`protocol.fuzzing.zmtp_case`: garbage and truncated
greetings, wrong signatures, versions and mechanisms, oversized and empty
commands, messages before READY, wrong socket types, malformed READY, ERROR,
frames that announce 2^64 bytes, too many parts, 17 MiB messages, and valid
messages written a byte at a time).  Each must end as the ZMTP spec says:
connections closed (``protocol``), messages dropped (``parts``,
``message_size``) or taken, counted by the worker reason by reason.

The table: messages sent, rejected by reason (expected here and counted by the
worker: they must be equal), crashes (decoder exceptions other than
``ProtocolError``, worker ``internal`` errors, a dead worker loop: must be 0),
the handshake cases by kind and their outcomes (expected and counted), whether
the victim got every update without a gap, whether a valid stream still gets
updates afterwards, and messages/s against a baseline of valid audio messages
sent to the same worker in the same run.  Exit status 0 when there were no
crashes, every reject was counted, the victim lost nothing and the worker
still answered; 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from benchmarks.common import cpu_description, load_description
from config import load_config
from model.tagger import window_starts
from protocol import AudioFrame, EndOfStream, decode_update, encode_audio, encode_end
from protocol.fuzzing import (
    Message,
    ValidMessages,
    expected_reject,
    hostile_corpus,
    send_raw,
    updates_corpus,
    valid_stream,
    worker_reject,
    zmtp_case,
)
from tagstream import cli

#: Reasons the ingress counts for a whole message it dropped before the worker decoded it.
INGRESS_MESSAGE_REASONS = ("parts", "message_size", "budget")
#: The victim's stream, sent on a connection of its own through the whole run.
VICTIM = "victim:0"
#: The victim's blocks (0.1 s) sent after each chunk of fuzz messages or handshake cases.
VICTIM_BLOCKS_PER_STEP = 5


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
    handshake_cases: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    handshake_expected: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    handshake_counted: dict[str, int] = dataclasses.field(default_factory=dict)
    handshake_silent: int = 0
    handshake_hung: int = 0
    victim_updates: int = 0
    victim_shed: int = 0
    victim_expected: int = 0
    victim_gaps: int = 0
    victim_in_order: bool = False
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
    def handshake_match(self) -> bool:
        return self.handshake_hung == 0 and all(
            self.handshake_counted.get(k, 0) == v for k, v in self.handshake_expected.items()
        )

    @property
    def victim_complete(self) -> bool:
        # Shed windows (the flood put the worker behind; counted on each update) are said,
        # not lost: every window is an update or in the count.
        return (
            self.victim_in_order
            and self.victim_updates + self.victim_shed == self.victim_expected
            and self.victim_gaps == 0
        )

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
        return (
            self.crashes == 0
            and self.rejects_match
            and self.handshake_match
            and self.victim_complete
            and self.worker_answering
        )


# -- the run -----------------------------------------------------------------------------------


def classify(message: Message, result: FuzzResult) -> None:
    """Judge ``message`` here: count it as valid, as a reject by reason, or as a crash."""
    from inference.ingress import MAX_PARTS
    from inference.worker import MAX_MESSAGE_BYTES

    try:
        reason = worker_reject(
            message,
            max_parts=MAX_PARTS,
            max_message_bytes=MAX_MESSAGE_BYTES,
            foreign_streams=frozenset({VICTIM}),
        )
    except Exception as exc:  # a decoder crash: what the fuzzer is here to find
        result.decoder_crashes += 1
        if len(result.crash_examples) < 5:
            result.crash_examples.append(f"{type(exc).__name__}: {exc} <- {message!r:.200}")
        return
    if reason is None:
        result.valid += 1
    else:
        result.expected_rejects[reason] += 1


def fuzz_updates(count: int, seed: int, result: FuzzResult) -> None:
    """The subscriber side: mutated tag updates through decode_update (no socket needed)."""
    for message in updates_corpus(count, seed):
        result.update_messages += 1
        try:
            reason = expected_reject(message, decode_update)
        except Exception as exc:
            result.decoder_crashes += 1
            if len(result.crash_examples) < 5:
                result.crash_examples.append(f"update {type(exc).__name__}: {exc}")
            continue
        if reason is not None:
            result.update_rejects[reason] += 1


def _send_all(push: zmq.Socket[Any], messages: list[Message]) -> None:
    for message in messages:
        push.send_multipart(message)


def processed(stats: Any) -> int:
    """Whole messages the worker has dealt with: decoded (or not), or dropped by the ingress."""
    return int(stats.messages) + sum(stats.rejected.get(r, 0) for r in INGRESS_MESSAGE_REASONS)


def _wait_messages(worker: Any, count: int, timeout_s: float) -> bool:
    stats = worker.wait_for(lambda s: processed(s) >= count, timeout_s=timeout_s)
    return processed(stats) >= count


class Victim:
    """A real stream on a connection of its own; its updates must all come, in order."""

    def __init__(self, context: zmq.Context[Any], worker: Any, *, seconds: float, seed: int):
        self.push = context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(worker.input_endpoint)
        y = (0.3 * np.random.default_rng(seed).standard_normal(round(16000 * seconds))).astype(
            np.float32
        )
        start = time.time()
        self.blocks = [
            AudioFrame(
                stream=VICTIM, seq=i, capture_time=start + offset / 16000, sample_rate=16000,
                channels=1, sample_format="f32",
                samples=np.ascontiguousarray(y[offset : offset + 1600, None]),
            )
            for i, offset in enumerate(range(0, len(y), 1600))
        ]  # fmt: skip
        self.sent = 0
        self.seqs: list[int] = []
        self.gaps = 0
        self.shed = 0

    def step(self, count: int = VICTIM_BLOCKS_PER_STEP) -> None:
        # Live audio is sent as it is captured: a step's blocks were captured just before
        # it (the worker sheds a live stream's audio that arrives later than its capture
        # times say, so blocks stamped when the run began would be shed as it goes on).
        due = self.blocks[self.sent : self.sent + count]
        now = time.time()
        for k, block in enumerate(due):
            captured = now - (len(due) - k) * block.duration_s
            self.push.send_multipart(
                encode_audio(dataclasses.replace(block, capture_time=captured)), copy=False
            )
        self.sent = min(len(self.blocks), self.sent + count)

    def finish(self) -> None:
        self.step(len(self.blocks))
        self.push.send_multipart(encode_end(EndOfStream(stream=VICTIM, seq=len(self.blocks))))

    def take(self, message: list[bytes]) -> bool:
        update = decode_update(message)
        if update.stream != VICTIM:
            return False
        self.seqs.append(update.seq)
        self.gaps = max(self.gaps, update.gaps)
        self.shed = max(self.shed, update.shed)
        return True


def run_fuzz(
    *,
    messages: int,
    seed: int = 1,
    hypothesis_share: float = 0.1,
    multipart_share: float = 0.01,
    forged_share: float = 0.01,
    handshake_share: float = 0.01,
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
    multipart_share, forged_share : float in [0, 1]
        Shares of multipart messages and of forgeries (half of them of the victim's
        stream, half of the fuzzer's own jumping stream).
    handshake_share : float >= 0
        Raw ZMTP connections, as a share of ``messages``.
    baseline_messages : int or None
        Valid audio messages for the baseline (default: ``min(messages, 20000)``).
    tagger : model.Tagger or None
        A loaded tagger to share (tests); loaded here when None.
    chunk : int
        Messages generated, then sent, per step (generation time is not counted).
    """
    from inference import Worker
    from inference.ingress import MAX_PARTS
    from inference.worker import MAX_MESSAGE_BYTES

    result = FuzzResult()
    folder = Path(tempfile.mkdtemp(prefix="tagstream-fuzz-"))
    config = load_config(
        overrides={
            "inference.input_endpoint": f"ipc://{folder}/in",
            "inference.publish_endpoint": f"ipc://{folder}/out",
            "inference.hop_seconds": 3.0,
            # The victim sends between chunks of hostile input: never evicted as idle here.
            "inference.idle_timeout_seconds": 3600.0,
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
        sub.setsockopt(zmq.SUBSCRIBE, VICTIM.encode())
        sub.setsockopt(zmq.SUBSCRIBE, b"zmtp:")
        sub.connect(worker.publish_endpoint)
        n_handshake = int(messages * handshake_share)
        total = baseline_messages if baseline_messages is not None else min(messages, 20_000)
        steps = (messages + total) // chunk + n_handshake // 50 + 60  # with room to open
        victim = Victim(
            context, worker, seconds=0.1 * VICTIM_BLOCKS_PER_STEP * steps + 4.0, seed=seed
        )

        raw_tagged: set[str] = set()  # the valid raw-ZMTP streams that got their update

        def take(message: list[bytes]) -> None:
            if not victim.take(message):
                update = decode_update(message)
                if update.stream.startswith("zmtp:"):
                    raw_tagged.add(update.stream)

        def read_updates() -> None:
            while sub.poll(0):
                take(sub.recv_multipart())

        # The victim opens its stream (its connection owns it from here) and the SUB joins:
        # its audio goes on until an update of it comes back.
        while not victim.seqs:
            if victim.sent >= len(victim.blocks) // 2:
                raise RuntimeError("the victim's stream got no update")
            victim.step()
            if sub.poll(500):
                take(sub.recv_multipart())

        # Baseline: valid audio messages of the same size, same worker, same way.
        rng = random.Random(seed + 2)
        bases = ValidMessages(rng)
        handled = 0
        while handled < total:
            batch = [bases.audio() for _ in range(min(chunk, total - handled))]
            start_count = processed(worker.stats())
            started = time.perf_counter()
            _send_all(push, batch)
            handled += len(batch)
            if not _wait_messages(worker, start_count + len(batch), timeout_s):
                raise RuntimeError("the worker stopped taking baseline messages")
            result.baseline_seconds += time.perf_counter() - started
            victim.step()
            read_updates()
        result.baseline_messages = handled

        # Fuzz.
        generator = hostile_corpus(
            messages,
            seed,
            max_parts=MAX_PARTS,
            max_message_bytes=MAX_MESSAGE_BYTES,
            victim=VICTIM,
            hypothesis_share=hypothesis_share,
            multipart_share=multipart_share,
            forged_share=forged_share / 2,
            jumping_share=forged_share / 2,
        )
        before = worker.stats().rejected
        while result.sent < messages:
            batch = [next(generator) for _ in range(min(chunk, messages - result.sent))]
            for message in batch:
                classify(message, result)
            start_count = processed(worker.stats())
            started = time.perf_counter()
            _send_all(push, batch)
            result.sent += len(batch)
            if not _wait_messages(worker, start_count + len(batch), timeout_s):
                break  # reported: the worker no longer takes messages
            result.fuzz_seconds += time.perf_counter() - started
            victim.step()
            read_updates()
        after = worker.stats().rejected
        result.worker_rejects = {
            k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)
        }

        # The ZMTP handshake, on raw connections of their own.
        rng_cases = random.Random(seed + 4)
        for index in range(n_handshake):
            case = zmtp_case(
                rng_cases,
                max_parts=MAX_PARTS,
                max_message_bytes=MAX_MESSAGE_BYTES,
                stream=f"zmtp:{index}",
            )
            result.handshake_cases[case.name] += 1
            result.handshake_expected.update(case.outcomes())
            result.handshake_silent += not case.outcomes()
            if not send_raw(worker.input_endpoint, case, timeout_s=timeout_s):
                result.handshake_hung += 1
            if index % 50 == 49:
                victim.step()
                read_updates()
        want = result.handshake_expected

        def counted(stats: Any) -> dict[str, int]:
            return {
                reason: stats.rejected.get(reason, 0) - after.get(reason, 0)
                for reason in ("protocol", "parts", "message_size")
            }

        stats = worker.wait_for(
            lambda s: all(n >= want[k] for k, n in counted(s).items()), timeout_s=timeout_s
        )
        deadline = time.monotonic() + timeout_s
        while len(raw_tagged) < want["message"] and time.monotonic() < deadline:
            if sub.poll(500):
                take(sub.recv_multipart())
        result.handshake_counted = {**counted(stats), "message": len(raw_tagged)}
        result.worker_alive = thread.is_alive()

        # Still answering: a valid stream on a new connection gets updates (the fuzzer's own
        # may have used its max_streams_per_peer on mutated stream ids).
        fresh = context.socket(zmq.PUSH)
        fresh.setsockopt(zmq.LINGER, 0)
        fresh.connect(worker.input_endpoint)
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while not result.worker_answering and time.monotonic() < deadline:
            _send_all(fresh, valid_stream(f"alive:{attempt}", seed=seed))
            attempt += 1
            while sub.poll(2000):
                message = sub.recv_multipart()
                if decode_update(message).stream.startswith("alive:"):
                    result.worker_answering = True
                else:
                    take(message)
        # The victim's last blocks and its end: every update, in order, without a gap.
        victim.finish()
        settings = worker.settings
        assert settings is not None
        n_samples = sum(len(b.samples) for b in victim.blocks)
        result.victim_expected = len(
            window_starts(
                1 + n_samples // settings.spec.hop_length,
                settings.window_frames,
                settings.hop_frames,
            )
        )
        deadline = time.monotonic() + timeout_s
        first = lambda: victim.seqs[0] if victim.seqs else 0  # noqa: E731
        while (
            first() + len(victim.seqs) + victim.shed < result.victim_expected
            and time.monotonic() < deadline
        ):
            if sub.poll(500):
                take(sub.recv_multipart())
        result.victim_updates = first() + len(victim.seqs)  # the SUB joined at update first()
        result.victim_shed = victim.shed
        result.victim_in_order = victim.seqs == list(range(first(), first() + len(victim.seqs)))
        result.victim_gaps = victim.gaps
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
    print("fuzz: the ZMTP handshake (raw connections)", file=out)
    row("connections", sum(result.handshake_cases.values()))
    for name, count in sorted(result.handshake_cases.items()):
        row(f"  {name}", count)
    print(f"  {'outcome':<38} {'expected':>9} {'worker':>9}", file=out)
    for outcome in ("protocol", "parts", "message_size", "message"):
        print(
            f"    {outcome:<36} {result.handshake_expected.get(outcome, 0):>9} "
            f"{result.handshake_counted.get(outcome, 0):>9}",
            file=out,
        )
    row("  nothing (the peer left first)", result.handshake_silent)
    row("connections left hanging (must be 0)", result.handshake_hung)
    row("every outcome counted by the worker", result.handshake_match)
    print("fuzz: ownership (a victim stream on its own connection)", file=out)
    row(
        "victim updates + shed (expected)",
        f"{result.victim_updates} + {result.victim_shed} ({result.victim_expected})",
    )
    row("victim in order, gaps", f"{result.victim_in_order}, {result.victim_gaps}")
    row("crashes (must be 0)", result.crashes)
    for example in result.crash_examples:
        row("  crash", example)
    row("worker still answering", result.worker_answering)
    print("fuzz: subscriber side (decode_update)", file=out)
    row("updates decoded", result.update_messages)
    row("  rejected", sum(result.update_rejects.values()))
    print(f"throughput (same worker, same run; {cpu_description()})", file=out)
    print(f"  {load_description()}", file=out)
    row("baseline: valid audio messages/s", f"{result.baseline_per_s:,.0f}")
    row("fuzz messages/s", f"{result.messages_per_s:,.0f}")
    row("ratio fuzz / baseline", f"{result.messages_per_s / result.baseline_per_s:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hypothesis-share", type=float, default=0.1)
    parser.add_argument("--multipart-share", type=float, default=0.01)
    parser.add_argument("--forged-share", type=float, default=0.01)
    parser.add_argument("--handshake-share", type=float, default=0.01)
    parser.add_argument("--baseline-messages", type=int, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli.setup_logging("ERROR")
    result = run_fuzz(
        messages=args.messages,
        seed=args.seed,
        hypothesis_share=args.hypothesis_share,
        multipart_share=args.multipart_share,
        forged_share=args.forged_share,
        handshake_share=args.handshake_share,
        baseline_messages=args.baseline_messages,
    )
    print_table(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
