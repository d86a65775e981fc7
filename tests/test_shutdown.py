"""SIGTERM and Ctrl-C stop every process promptly, leave no orphans and lose no recorded rows.

The real commands run as subprocesses on private ipc endpoints: a worker, a
streamer, ``tools.subscribe``, ``tools.record`` and ``tools.live`` (which
starts a worker and a streamer of its own).  Each gets its signal once it is
busy; the time to exit is measured and printed (``-s`` shows it), and only
bounded by a generous :data:`EXIT_BOUND_S` (the design target is 1 s).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from helpers import DEADLINE_S, Processes, alive, children_of, wait_until

from inference.ready import READY_KEYS
from tools.demo_audio import write_demo_wav

#: Generous bound on the time from the signal to the exit (the target is 1 s).
EXIT_BOUND_S = 3.0


def stop(process: subprocess.Popen[bytes], signum: int) -> float:
    """Send ``signum``; return seconds until the process exited (fails past the deadline)."""
    started = time.monotonic()
    process.send_signal(signum)
    process.wait(timeout=DEADLINE_S)
    return time.monotonic() - started


def count_rows(db: Path) -> int:
    if not db.exists():
        return 0
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(connection.execute("SELECT count(*) FROM updates").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        connection.close()


def test_every_process_stops_within_the_bound(
    processes: Processes,
    tmp_path: Path,
) -> None:
    wav = write_demo_wav(str(tmp_path / "long.wav"), seconds=60.0)
    input_endpoint, publish_endpoint = f"ipc://{tmp_path}/in", f"ipc://{tmp_path}/out"
    db = tmp_path / "onair.db"
    live = processes.start("live", "tools.live", stdout=subprocess.DEVNULL)
    worker = processes.start_worker("worker", input_endpoint, publish_endpoint)
    ready = processes.wait_ready("worker", worker)
    ready_file = processes.ready_file("worker")
    assert set(ready) == set(READY_KEYS) and ready["pid"] == worker.pid
    assert ready["input_endpoint"] == input_endpoint
    assert ready["publish_endpoint"] == publish_endpoint
    subscribe = processes.start(
        "subscribe", "tools.subscribe", "--endpoint", publish_endpoint, "--json",
        "--timeout", str(DEADLINE_S), stdout=subprocess.PIPE,
    )  # fmt: skip
    record = processes.start(
        "record", "tools.record", "--db", str(db), "--endpoint", publish_endpoint,
        "--commit-interval", "3600",
    )  # fmt: skip
    streamer = processes.start(
        "streamer", "streamer", "--file", wav, "--endpoint", input_endpoint, "--stream-id", "sd",
    )  # fmt: skip
    # Busy: updates flow to subscribe and record; live shows tags from its own children.
    assert subscribe.stdout is not None
    assert subscribe.stdout.readline(), processes.log("subscribe")
    wait_until(lambda: live_ready(live), "tools.live's worker and streamer")
    live_children = children_of(live.pid)
    assert len(live_children) >= 2, "tools.live should run a worker and a streamer"
    time.sleep(2.0)  # the recorder has buffered updates (its commit interval is an hour)
    times = {
        "streamer (SIGTERM)": stop(streamer, signal.SIGTERM),
        "tools.subscribe (SIGTERM)": stop(subscribe, signal.SIGTERM),
        "tools.record (SIGTERM)": stop(record, signal.SIGTERM),
        "worker (SIGTERM)": stop(worker, signal.SIGTERM),
        "tools.live (SIGINT)": stop(live, signal.SIGINT),
    }
    print("\nshutdown times: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    for name, seconds in times.items():
        assert seconds < EXIT_BOUND_S, (name, seconds)
    for process in (streamer, subscribe, record, worker, live):
        assert process.returncode == 0, process.args
    assert not [pid for pid in live_children if alive(pid)], "tools.live left children"
    assert not ready_file.exists(), "the worker left its ready file behind"
    log = processes.log("record")
    assert "Traceback" not in log
    final = [line for line in log.splitlines() if "recorder status" in line][-1]
    fields = dict(item.split("=") for item in final.split("recorder status ")[1].split())
    assert int(fields["received"]) > 0
    assert fields["written"] == fields["received"] and fields["dropped"] == "0", final
    assert count_rows(db) == int(fields["written"])


def live_ready(live: subprocess.Popen[bytes]) -> bool:
    """tools.live is busy once its worker is ready and its streamer runs (two children)."""
    if live.poll() is not None:
        pytest.fail("tools.live exited early")
    kids = children_of(live.pid)
    return len(kids) >= 2
