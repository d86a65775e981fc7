"""Hostile input against the decoders and a real worker (real model, real ZeroMQ over ipc).

A few thousand mutated and hypothesis-drawn messages, multipart messages beyond
the limits, forgeries of another connection's stream and a stream whose seq and
capture times jump (:mod:`protocol.fuzzing`, the generators ``python -m
benchmarks.fuzz_worker`` also uses for its long run), then raw connections that
break the ZMTP handshake: nothing may crash, the worker must count every bad
message and connection under the reason judged here, a victim stream on its own
connection must get every update without a gap, and a valid stream sent
afterwards must still be tagged.  That stream is also the barrier: a PUSH
socket keeps order, so once its update arrives the worker has read every
message before it.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from helpers import DEADLINE_S, Harness, expected_starts, frames_of, music

from config import load_config
from inference import Worker
from inference.ingress import MAX_PARTS
from inference.worker import MAX_MESSAGE_BYTES
from protocol import EndOfStream, TagUpdate, decode_update, encode_audio, encode_end
from protocol.fuzzing import (
    ValidMessages,
    expected_reject,
    hostile_corpus,
    mutate,
    send_raw,
    updates_corpus,
    valid_stream,
    worker_reject,
    zmtp_case,
)

MESSAGES = 3000
ZMTP_CASES = 300
VICTIM = "victim:0"
#: Reasons for which the ingress drops a whole message before the worker sees it.
INGRESS_REASONS = ("parts", "message_size", "budget")


@pytest.fixture
def worker(tagger: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A worker in a thread on private ipc endpoints (short paths: unix sockets)."""
    folder = tmp_path_factory.mktemp("fuzz", numbered=True)
    config = load_config(
        overrides={
            "inference.input_endpoint": f"ipc://{folder}/in",
            "inference.publish_endpoint": f"ipc://{folder}/out",
            "inference.hop_seconds": 3.0,
            # The victim sends between chunks of hostile input: never evicted as idle here.
            "inference.idle_timeout_seconds": 3600.0,
            # Nor shed: how far behind a loaded machine falls must not decide what the
            # victim gets (shedding is tests/test_overload.py's; the long run reports it).
            "inference.max_window_age_seconds": 0,
        }
    )
    with Worker(config, tagger=tagger) as running:
        running.start()
        running.run_in_thread()
        yield running


class _Victim:
    """A real stream on a connection of its own, opened before the hostile input."""

    def __init__(self, worker: Worker, harness: Harness, context: zmq.Context[Any]) -> None:
        self.push = context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(worker.input_endpoint)
        y = music(np.random.default_rng(7), 12.0)
        self.blocks = frames_of(y, stream=VICTIM, block=1600, start_time=time.time())
        assert worker.settings is not None
        self.expected = len(expected_starts(len(y), worker.settings.hop_frames))
        self.sent = 32  # 3.2 s: its first window; the stream is open and owned from here
        for block in self.blocks[: self.sent]:
            self.push.send_multipart(encode_audio(block))
        self.updates = harness.receive(count=1, stream=VICTIM)
        assert self.updates, "the victim's stream got no update"

    def step(self, count: int = 8) -> None:
        for block in self.blocks[self.sent : self.sent + count]:
            self.push.send_multipart(encode_audio(block))
        self.sent = min(len(self.blocks), self.sent + count)

    def finish(self) -> None:
        self.step(len(self.blocks))
        self.push.send_multipart(encode_end(EndOfStream(stream=VICTIM, seq=len(self.blocks))))

    def check(self, updates: list[TagUpdate]) -> None:
        seqs = [u.seq for u in self.updates + updates if u.stream == VICTIM]
        assert seqs == list(range(self.expected)), "the victim lost or reordered updates"
        assert all(u.gaps == 0 for u in self.updates + updates if u.stream == VICTIM)


def _receive_until(
    harness: Harness, victim: _Victim, stream: str | None, *, others: int = 0
) -> list[TagUpdate]:
    """Updates until ``stream`` has one (None: the victim all of its own), ``others`` zmtp: ones."""
    updates: list[TagUpdate] = []
    deadline = time.monotonic() + DEADLINE_S

    def done() -> bool:
        mine = sum(u.stream == VICTIM for u in victim.updates + updates)
        raw = len({u.stream for u in updates if u.stream.startswith("zmtp:")})
        if stream is None:
            return mine >= victim.expected and raw >= others
        return raw >= others and any(u.stream == stream for u in updates)

    while not done() and time.monotonic() < deadline:
        if harness.sub.poll(100):
            updates.append(decode_update(harness.sub.recv_multipart()))
    return updates


def _processed(stats: Any) -> int:
    return int(stats.messages) + sum(stats.rejected.get(r, 0) for r in INGRESS_REASONS)


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_messages_never_crash_and_are_all_counted(
    seed: int, worker: Worker, context: zmq.Context[Any]
) -> None:
    messages = list(
        hostile_corpus(
            MESSAGES,
            seed,
            max_parts=MAX_PARTS,
            max_message_bytes=MAX_MESSAGE_BYTES,
            victim=VICTIM,
            multipart_share=0.02,
            forged_share=0.02,
            jumping_share=0.02,
        )
    )
    expected: collections.Counter[str] = collections.Counter()
    for message in messages:
        # A decoder crash raises here and fails the test.
        reason = worker_reject(
            message,
            max_parts=MAX_PARTS,
            max_message_bytes=MAX_MESSAGE_BYTES,
            foreign_streams=frozenset({VICTIM}),
        )
        if reason is not None:
            expected[reason] += 1
    assert sum(expected.values()) > MESSAGES // 3  # mostly bad, and
    assert sum(expected.values()) < MESSAGES  # some still valid after mutation
    assert len(expected) >= 8, expected  # many reject reasons exercised
    # The new ground: whole-message limits and ownership.
    assert expected["parts"] and expected["message_size"] and expected["owner"], expected

    harness = Harness(worker)  # its SUB socket has joined: no update is lost from here
    try:
        victim = _Victim(worker, harness, context)
        sent = _processed(worker.stats()) + len(messages)
        for index, message in enumerate(messages):
            harness.send(message)
            if index % 300 == 299:
                victim.step()
        # The barrier: a PUSH socket keeps order, so once this valid stream's update is
        # back, the worker has read every fuzzed message before it.
        alive = valid_stream("alive", seed=seed)
        for message in alive:
            harness.send(message)
        sent += len(alive)
        updates = _receive_until(harness, victim, "alive")
        assert any(u.stream == "alive" for u in updates), (
            "the worker no longer tags a valid stream after the fuzz"
        )
        # Only now the victim ends its stream: from its end on, the id is free for anyone.
        victim.finish()
        sent += len(victim.blocks) - 32 + 1
        victim.check(updates + _receive_until(harness, victim, None))
    finally:
        harness.close()

    stats = worker.wait_for(lambda s: _processed(s) >= sent, timeout_s=DEADLINE_S)
    rejected = dict(stats.rejected)
    assert rejected.pop("internal", 0) == 0, stats.rejected
    assert rejected == dict(expected)


def test_hostile_zmtp_connections_are_closed_and_counted(
    worker: Worker, context: zmq.Context[Any]
) -> None:
    """Garbage, truncated and wrong greetings, oversized frames... on raw connections."""
    rng = random.Random(5)
    cases = [
        zmtp_case(rng, max_parts=MAX_PARTS, max_message_bytes=MAX_MESSAGE_BYTES, stream=f"zmtp:{i}")
        for i in range(ZMTP_CASES)
    ]
    kinds = collections.Counter(case.name for case in cases)
    assert len(kinds) == 17, kinds  # every kind of case, the 17 MiB message included
    want = collections.Counter(outcome for case in cases for outcome in case.outcomes())

    harness = Harness(worker)
    try:
        victim = _Victim(worker, harness, context)
        before = worker.stats()
        for index, case in enumerate(cases):
            assert send_raw(worker.input_endpoint, case, timeout_s=DEADLINE_S), (
                f"the worker kept a half-closed {case.name} connection open"
            )
            if index % 30 == 29:
                victim.step()
        alive = valid_stream("alive", seed=5)
        for message in alive:
            harness.send(message)
        updates = _receive_until(harness, victim, "alive", others=want["message"])
        assert any(u.stream == "alive" for u in updates), "the worker stopped tagging"
        victim.finish()
        updates += _receive_until(harness, victim, None)
        victim.check(updates)
    finally:
        harness.close()

    # Each valid raw stream gave its one update; the rest is counted by reason.
    tagged = {u.stream for u in updates if u.stream.startswith("zmtp:")}
    assert len(tagged) == want.pop("message", 0)

    def counted(stats: Any) -> dict[str, int]:
        out = {
            r: stats.rejected.get(r, 0) - before.rejected.get(r, 0)
            for r in set(stats.rejected) | set(before.rejected)
        }
        return {r: n for r, n in out.items() if n}

    expected = dict(want)
    stats = worker.wait_for(
        lambda s: all(counted(s).get(k, 0) >= v for k, v in expected.items()),
        timeout_s=DEADLINE_S,
    )
    assert counted(stats) == expected


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_updates_are_rejected_by_reason_never_crash(seed: int) -> None:
    updates = updates_corpus(MESSAGES, seed)
    reasons = collections.Counter(expected_reject(m, decode_update) for m in updates)
    valid = reasons.pop(None, 0)
    assert valid > 0 and sum(reasons.values()) > MESSAGES // 3, reasons
    assert len(reasons) >= 5, reasons


def test_mutations_change_messages() -> None:
    rng = random.Random(0)
    base = ValidMessages(rng).audio()
    changed = sum(mutate(base, rng) != base for _ in range(200))
    assert changed > 150
    assert expected_reject(base) is None
