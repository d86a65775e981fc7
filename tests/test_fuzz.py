"""A short run of benchmarks/fuzz_worker.py in CI: a real worker, real sockets, hostile input.

``python -m benchmarks.fuzz_worker --messages 100000`` is the long run; this one
sends a few thousand mutated and hypothesis-drawn messages and checks that
nothing crashed, that the worker counted every bad message under the reason
the decoder gives, and that a valid stream is still tagged afterwards.
"""

from __future__ import annotations

import io

import pytest

from benchmarks.fuzz_worker import mutate, print_table, run_fuzz
from model import load_tagger


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_messages_never_crash_and_are_all_counted(seed: int) -> None:
    tagger = load_tagger("MSD_musicnn")
    result = run_fuzz(messages=3000, seed=seed, baseline_messages=1000, tagger=tagger)
    table = io.StringIO()
    print_table(result, out=table)
    assert result.sent == 3000
    assert result.crashes == 0, table.getvalue()
    assert result.bad > 1000 and result.valid > 0, table.getvalue()  # both kinds were sent
    assert len(result.expected_rejects) >= 8, table.getvalue()  # many reasons exercised
    assert sum(v for k, v in result.worker_rejects.items() if k != "internal") == result.bad
    assert result.rejects_match, table.getvalue()
    assert result.worker_answering, table.getvalue()
    assert result.update_messages == 3000 and sum(result.update_rejects.values()) > 0


def test_mutations_change_messages() -> None:
    import random

    rng = random.Random(0)
    base = [b"\x81\xa7version\x01", b"\x00" * 16]
    changed = sum(mutate(base, rng) != base for _ in range(200))
    assert changed > 150
