"""The recorder on a full disk says what is true (issue 12 item 5).

* Started on a really full file system (a 512 KiB tmpfs, mounted in a private user
  and mount namespace with ``unshare -Urm``, filled to ENOSPC) over an intact
  recording, ``python -m tools.record`` says the disk is full and that the recording
  is intact, not "not a usable recording database".
* While commits keep failing, with some going through now and then (a disk that is
  full but for what a checkpoint or the retention pass frees), the writer does not
  announce "database writes work again" after each one that went through; it says so
  once, when commits have gone through for ``RECOVERY_SECONDS`` without a failure.
  SQLite's own "database or disk is full" is made with ``max_page_count``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from monitor.store import RECOVERY_SECONDS, RecordWriter, open_database
from protocol import TagUpdate

REPO_ROOT = Path(__file__).resolve().parents[1]


def update(rng: np.random.Generator, seq: int) -> TagUpdate:
    return TagUpdate(
        stream="fm", seq=seq, start_s=0.5 * seq, end_s=0.5 * seq + 3.0, model="m",
        tags=tuple(f"tag{i}" for i in range(50)),
        probabilities=rng.random(50, dtype=np.float32), smoothed=rng.random(50, dtype=np.float32),
        capture_time=1.7e9 + seq, received_time=1.7e9 + seq, published_time=1.7e9 + seq,
    )  # fmt: skip


# The part that runs inside the namespace: mount, record, fill the disk, start the recorder.
DRIVER = textwrap.dedent(
    """
    import json, os, subprocess, sys
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from monitor.store import open_database, write_updates
    from protocol import TagUpdate

    mnt = sys.argv[1]
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", mnt],
                          capture_output=True, text=True)
    if done.returncode:
        print(json.dumps({"skip": "cannot mount a tmpfs: " + done.stderr.strip()}))
        sys.exit(0)
    db = os.path.join(mnt, "onair.db")
    rng = np.random.default_rng(1)
    connection = open_database(db)
    write_updates(connection, [
        TagUpdate(stream="fm", seq=i, start_s=0.5 * i, end_s=0.5 * i + 3, model="m",
                  tags=("a", "b"), probabilities=rng.random(2, dtype=np.float32),
                  smoothed=rng.random(2, dtype=np.float32), capture_time=1.7e9 + i,
                  received_time=1.7e9 + i, published_time=1.7e9 + i)
        for i in range(20)
    ])
    connection.close()
    fd = os.open(os.path.join(mnt, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        full = exc.strerror
    os.close(fd)
    record = subprocess.run(
        [sys.executable, "-m", "tools.record", "--db", db, "--endpoint", "tcp://127.0.0.1:9"],
        capture_output=True, text=True, timeout=120, cwd=sys.argv[2],
    )
    probe = __import__("sqlite3").connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    rows = probe.execute("SELECT count(*) FROM updates").fetchone()[0]
    probe.close()
    print(json.dumps({"full": full, "status": record.returncode, "stderr": record.stderr,
                      "rows": rows}))
    """
)


def test_recorder_started_on_a_full_disk_says_the_disk_is_full(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a small tmpfs in a private namespace")
    try:
        allowed = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"unshare -Urm cannot run here: {exc}")
    if allowed.returncode:
        pytest.skip(
            "unprivileged user namespaces are off here (unshare -Urm: "
            f"{allowed.stderr.decode().strip()}); a full disk needs a tmpfs of its own"
        )
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        ["unshare", "-Urm", sys.executable, str(driver), str(mnt), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    assert result["full"] == "No space left on device"
    lines = result["stderr"].strip().splitlines()
    assert result["status"] == 3, result
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "the disk is full" in lines[0] and "the recording in it is intact" in lines[0]
    assert "not a usable recording database" not in lines[0]
    assert result["rows"] == 20  # and so it is


def test_a_disk_that_stays_full_is_never_said_to_work_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, rng: np.random.Generator
) -> None:
    now = [1000.0]
    writer = RecordWriter(tmp_path / "full.db", clock=lambda: now[0])
    connection = writer.connection
    assert connection is not None
    for seq in range(5):
        writer.add(update(rng, seq), recorded_time=time.time())
    assert writer.flush() == 5
    pages = connection.execute("PRAGMA page_count").fetchone()[0]

    def disk_full(full: bool) -> None:
        connection.execute(f"PRAGMA max_page_count = {pages if full else 1_073_741_823}")

    caplog.set_level(logging.INFO, logger="monitor")
    seq = 5
    # Two minutes of a nearly full disk: every other commit fails, the others go through.
    for round_ in range(24):
        full = round_ % 2 == 0
        disk_full(full)
        for _ in range(200 if full else 1):
            writer.add(update(rng, seq), recorded_time=time.time())
            seq += 1
        writer.flush()
        now[0] += 5.0
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "work again" in m], messages
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, errors  # one line a minute: at 0 s and at 60 s
    assert "database or disk is full" in errors[0]
    assert "commits_failed=6 commits_ok=6" in errors[1], errors[1]
    # Space again: said once, after RECOVERY_SECONDS of commits without a failure.
    disk_full(False)
    caplog.clear()
    for _ in range(int(RECOVERY_SECONDS / 5.0) + 4):
        writer.add(update(rng, seq), recorded_time=time.time())
        seq += 1
        assert writer.flush() == 1
        now[0] += 5.0
    again = [r.getMessage() for r in caplog.records if "work again" in r.getMessage()]
    assert len(again) == 1, again
    writer.close()
    connection = open_database(tmp_path / "full.db", read_only=True)
    try:
        stored = connection.execute("SELECT count(*) FROM updates").fetchone()[0]
    finally:
        connection.close()
    assert stored == writer.written


def test_an_intact_recording_opens_without_a_write(tmp_path: Path) -> None:
    """Opening an up-to-date recording for writing writes nothing (no WAL frame appended)."""
    db = tmp_path / "onair.db"
    open_database(db).close()
    before = db.read_bytes()
    connection = open_database(db)
    try:
        wal = Path(f"{db}-wal")
        assert not wal.exists() or wal.stat().st_size == 0
    finally:
        connection.close()
    assert db.read_bytes() == before
