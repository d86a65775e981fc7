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
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from config import load_config
from protocol import decode_update
from protocol.fuzzing import (
    Message,
    ValidMessages,
    corpus,
    expected_reject,
    updates_corpus,
    valid_stream,
)
from tagstream import cli


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


# -- the run -----------------------------------------------------------------------------------


def classify(message: Message, result: FuzzResult) -> None:
    """Decode ``message`` here: count it as valid, as a reject by reason, or as a crash."""
    try:
        reason = expected_reject(message)
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
        bases = ValidMessages(rng)
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
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while not result.worker_answering and time.monotonic() < deadline:
            _send_all(push, valid_stream(f"alive:{attempt}", seed=seed))
            attempt += 1
            while sub.poll(2000):
                if decode_update(sub.recv_multipart()).stream.startswith("alive:"):
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
    cli.setup_logging("ERROR")
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
