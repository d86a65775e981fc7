"""Hostile input against the decoders and a real worker (real model, real ZeroMQ over ipc).

A few thousand mutated and hypothesis-drawn messages (:mod:`protocol.fuzzing`,
the generators ``python -m benchmarks.fuzz_worker`` also uses for its long
run): nothing may crash, the worker must count every bad message under the
reason the decoder gives here, and a valid stream sent afterwards must still be
tagged.  That stream is also the barrier: a PUSH socket keeps order, so once its
update arrives the worker has read every message before it.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import DEADLINE_S, Harness

from config import load_config
from inference import Worker
from protocol import decode_update
from protocol.fuzzing import (
    ValidMessages,
    corpus,
    expected_reject,
    mutate,
    updates_corpus,
    valid_stream,
)

MESSAGES = 3000


@pytest.fixture
def worker(tagger: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A worker in a thread on private ipc endpoints (short paths: unix sockets)."""
    folder = tmp_path_factory.mktemp("fuzz", numbered=True)
    config = load_config(
        overrides={
            "inference.input_endpoint": f"ipc://{folder}/in",
            "inference.publish_endpoint": f"ipc://{folder}/out",
            "inference.hop_seconds": 3.0,
        }
    )
    with Worker(config, tagger=tagger) as running:
        running.start()
        running.run_in_thread()
        yield running


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_messages_never_crash_and_are_all_counted(seed: int, worker: Worker) -> None:
    messages = list(corpus(MESSAGES, seed, hypothesis_share=0.1))
    expected: collections.Counter[str] = collections.Counter()
    for message in messages:
        reason = expected_reject(message)  # a decoder crash raises here and fails the test
        if reason is not None:
            expected[reason] += 1
    assert sum(expected.values()) > MESSAGES // 3  # mostly bad, and
    assert sum(expected.values()) < MESSAGES  # some still valid after mutation
    assert len(expected) >= 8, expected  # many reject reasons exercised

    harness = Harness(worker)  # its SUB socket has joined: no update is lost from here
    try:
        sent = worker.stats().messages + len(messages)
        for message in messages:
            harness.send(message)
        # The barrier: a PUSH socket keeps order, so once this valid stream's update is
        # back, the worker has read every fuzzed message before it.
        alive = valid_stream("alive", seed=seed)
        for message in alive:
            harness.send(message)
        sent += len(alive)
        assert harness.receive(count=1, stream="alive"), (
            "the worker no longer tags a valid stream after the fuzz"
        )
    finally:
        harness.close()

    stats = worker.wait_for(lambda s: s.messages >= sent, timeout_s=DEADLINE_S)
    rejected = dict(stats.rejected)
    assert rejected.pop("internal", 0) == 0, stats.rejected
    assert rejected == dict(expected)


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
