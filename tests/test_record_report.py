"""The recorder, its store and the report (``monitor`` and ``tools.record``/``tools.report``).

Real sockets, real SQLite, real subprocesses and signals.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import logging
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from helpers import assert_same_update, wait_until

from config import RecordConfig
from monitor import report, store
from monitor.recorder import Recorder
from monitor.store import RecordWriter, open_database, write_updates
from protocol import TagUpdate, encode_update
from tagstream.errors import ExitStatus
from tools import record as record_cli
from tools import report as report_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
TAGS = ("rock", "pop", "jazz", "ambient")
MODEL = "test-model"
#: 2024-06-01T00:00:00Z, the start of an hour and of a UTC day.
T0 = 1_717_200_000.0
#: Upper bound of every wait in this file (none of them is an assertion on time).
WAIT_S = 20.0


def random_update(
    rng: np.random.Generator, *, seq: int, stream: str = "studio", n_tags: int = 50
) -> TagUpdate:
    return TagUpdate(
        stream=stream,
        seq=seq,
        start_s=0.5 * seq,
        end_s=0.5 * seq + 3.0,
        model=MODEL,
        tags=tuple(f"tag{i}" for i in range(n_tags)),
        probabilities=rng.random(n_tags, dtype=np.float32),
        smoothed=rng.random(n_tags, dtype=np.float32),
        capture_time=1.7e9 + seq + 0.125,
        received_time=1.7e9 + seq + 0.25,
        published_time=time.time(),
        gaps=seq % 3,
        dropped=seq % 5,
    )


class Publisher:
    """A worker stand-in: an XPUB socket (a PUB that also sees subscriptions) on tcp.

    Waiting for the subscription message removes the slow-joiner race: what is
    published after :meth:`wait_for_subscriber` reaches the subscriber.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.socket = context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 100_000)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"

    def wait_for_subscriber(self, process: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.socket.poll(100, zmq.POLLIN):
                assert self.socket.recv()[:1] == b"\x01"  # a subscription, not an unsubscription
                return
            if process is not None and process.poll() is not None:
                break
        pytest.fail("the recorder never subscribed")

    def publish(self, update: TagUpdate) -> None:
        self.socket.send_multipart(encode_update(update))

    def close(self) -> None:
        self.socket.close(linger=0)


def count_rows(db_path: Path) -> int:
    with sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True) as connection:
        return int(connection.execute("SELECT count(*) FROM updates").fetchone()[0])


def recorded_seqs(db_path: Path) -> list[int]:
    connection = sqlite3.connect(db_path)
    try:
        return [row[0] for row in connection.execute("SELECT seq FROM updates ORDER BY seq")]
    finally:
        connection.close()


class RecorderThread:
    """Runs Recorder.run() in a thread and keeps what it raised."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.recorder.run()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def __enter__(self) -> RecorderThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.recorder.stop()
        self.thread.join(timeout=WAIT_S)
        assert not self.thread.is_alive(), "Recorder.run() did not return after stop()"
        self.recorder.close()
        if self.error is not None:
            raise self.error


# ---------------------------------------------------------------------------
# Recorder: library
# ---------------------------------------------------------------------------


def test_recorder_records_every_update_exactly(
    tmp_path: Path, context: zmq.Context[zmq.Socket[bytes]], rng: np.random.Generator
) -> None:
    db_path = tmp_path / "rec.db"
    publisher = Publisher(context)
    recorder = Recorder(
        db_path,
        [publisher.endpoint],
        settings=RecordConfig(commit_interval_seconds=0.1),
        context=context,
    )
    sent = [random_update(rng, seq=i, stream=("studio", "kitchen")[i % 2]) for i in range(300)]
    try:
        with RecorderThread(recorder):
            publisher.wait_for_subscriber()
            for update in sent:
                publisher.publish(update)
            wait_until(lambda: count_rows(db_path) == len(sent), "all updates committed")
    finally:
        publisher.close()
    assert recorder.writer.written == len(sent)
    assert recorder.writer.dropped == 0
    connection = open_database(db_path, read_only=True)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        got = list(store.read_updates(connection))
        assert store.read_tag_sets(connection) == {1: (MODEL, sent[0].tags)}
        blob_sizes = connection.execute(
            "SELECT DISTINCT length(probabilities), length(smoothed) FROM updates"
        ).fetchall()
    finally:
        connection.close()
    assert blob_sizes == [(4 * 50, 4 * 50)]
    want = sorted(sent, key=lambda u: (u.stream, u.published_time))
    assert len(got) == len(want)
    for got_update, want_update in zip(got, want, strict=True):
        assert_same_update(got_update, want_update)


def test_recorder_survives_a_full_disk(
    tmp_path: Path,
    context: zmq.Context[zmq.Socket[bytes]],
    rng: np.random.Generator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SQLITE_FULL (here from max_page_count): one error line, the batch counted, no crash."""
    publisher = Publisher(context)
    recorder = Recorder(
        tmp_path / "full.db",
        [publisher.endpoint],
        # No timed commit while the test runs: every update is still pending when the
        # recorder stops, so the one final commit is the batch that cannot fit. (With
        # a short interval a loaded machine could commit the first few rows alone,
        # and those fit in the pages the database already has.)
        settings=RecordConfig(commit_interval_seconds=3600.0),
        context=context,
    )
    connection = recorder.writer.connection
    assert connection is not None
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")  # "database or disk is full"
    sent = 200
    caplog.set_level(logging.INFO, logger="monitor")
    try:
        with RecorderThread(recorder):
            publisher.wait_for_subscriber()
            for seq in range(sent):
                publisher.publish(random_update(rng, seq=seq))
            wait_until(lambda: recorder.writer.pending == sent, "every update received")
    finally:
        publisher.close()
    assert recorder.writer.dropped == sent
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "database or disk is full" in errors[0] and "total_dropped=" in errors[0]
    assert recorder.writer.written == 0
    assert recorder.writer.failed_commits >= 1
    # The same writer works again once there is space.
    writer = RecordWriter(tmp_path / "full.db")
    writer.add(random_update(rng, seq=sent), recorded_time=time.time())
    assert writer.flush() == 1
    writer.close()
    assert recorded_seqs(tmp_path / "full.db") == [sent]


def old_and_new_updates(rng: np.random.Generator, now: float) -> list[TagUpdate]:
    updates = []
    for seq, age_days in enumerate([45.0, 31.0, 30.01, 29.99, 2.0, 0.0]):
        update = random_update(rng, seq=seq)
        updates.append(dataclasses.replace(update, published_time=now - age_days * 86_400.0))
    return updates


def test_retention_deletes_rows_older_than_retention_days(
    tmp_path: Path, context: zmq.Context[zmq.Socket[bytes]], rng: np.random.Generator
) -> None:
    now = T0 + 100 * 86_400.0
    db_path = tmp_path / "old.db"
    connection = open_database(db_path)
    write_updates(connection, old_and_new_updates(rng, now))
    connection.close()
    recorder = Recorder(
        db_path,
        [f"ipc://{tmp_path}/nobody.sock"],  # nothing publishes: retention only
        settings=RecordConfig(retention_days=30.0),
        context=context,
        clock=lambda: now,
    )
    with RecorderThread(recorder):  # run() starts with a retention pass
        wait_until(lambda: count_rows(db_path) == 3, "the retention pass")
    assert recorded_seqs(db_path) == [3, 4, 5]


@pytest.mark.parametrize("batch_rows", [1, 2, 5000])
def test_delete_older_than_in_batches(
    tmp_path: Path, rng: np.random.Generator, batch_rows: int
) -> None:
    now = T0
    connection = open_database(tmp_path / "old.db")
    write_updates(connection, old_and_new_updates(rng, now))
    deleted = store.delete_older_than(connection, now - 10 * 86_400.0, batch_rows=batch_rows)
    connection.close()
    assert deleted == 4
    assert recorded_seqs(tmp_path / "old.db") == [4, 5]


def test_retention_days_zero_keeps_everything(
    tmp_path: Path, context: zmq.Context[zmq.Socket[bytes]], rng: np.random.Generator
) -> None:
    db_path = tmp_path / "keep.db"
    connection = open_database(db_path)
    write_updates(connection, old_and_new_updates(rng, T0))
    connection.close()
    recorder = Recorder(
        db_path,
        [f"ipc://{tmp_path}/nobody.sock"],
        settings=RecordConfig(retention_days=0.0),
        context=context,
        clock=lambda: T0,
    )
    assert recorder.apply_retention() == 0
    recorder.close()
    recorder.close()  # safe twice
    assert recorded_seqs(db_path) == list(range(6))


# ---------------------------------------------------------------------------
# Recorder: the real command in a subprocess
# ---------------------------------------------------------------------------


def start_recorder(
    tmp_path: Path, db_path: Path, endpoint: str, *flags: str
) -> subprocess.Popen[bytes]:
    config = tmp_path / "config.toml"
    config.write_text('[logging]\nlevel = "INFO"\n')
    stderr = (tmp_path / "recorder.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.record",
            "--db",
            str(db_path),
            "--endpoint",
            endpoint,
            "--config",
            str(config),
            *flags,
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    stderr.close()
    return process


def recorder_log(tmp_path: Path) -> str:
    return (tmp_path / "recorder.log").read_text(errors="replace")


def test_kill_9_keeps_every_committed_row(
    tmp_path: Path, context: zmq.Context[zmq.Socket[bytes]], rng: np.random.Generator
) -> None:
    db_path = tmp_path / "killed.db"
    publisher = Publisher(context)
    process = start_recorder(tmp_path, db_path, publisher.endpoint, "--commit-interval", "0.2")
    stop = threading.Event()

    def publish_steadily() -> None:
        for seq in range(5000):  # bounded: at most ~25 s
            if stop.is_set():
                return
            publisher.publish(random_update(rng, seq=seq))
            stop.wait(0.005)

    publishing = threading.Thread(target=publish_steadily, daemon=True)
    try:
        publisher.wait_for_subscriber(process)
        publishing.start()
        wait_until(lambda: count_rows(db_path) >= 100, "100 committed rows")
        committed_before_kill = set(recorded_seqs(db_path))
        process.kill()  # SIGKILL, mid-stream
        process.wait(timeout=WAIT_S)
    finally:
        stop.set()
        publishing.join(timeout=WAIT_S)
        if process.poll() is None:
            process.kill()
            process.wait()
        publisher.close()
    assert process.returncode == -signal.SIGKILL
    connection = sqlite3.connect(db_path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        connection.close()
    seqs = recorded_seqs(db_path)
    assert committed_before_kill <= set(seqs)
    # Whole transactions only, and nothing lost between subscription and the last commit.
    assert seqs == list(range(len(seqs)))


def test_sigterm_commits_every_buffered_update(
    tmp_path: Path, context: zmq.Context[zmq.Socket[bytes]], rng: np.random.Generator
) -> None:
    db_path = tmp_path / "term.db"
    publisher = Publisher(context)
    # A commit interval longer than the test: every row comes from the shutdown commit.
    process = start_recorder(tmp_path, db_path, publisher.endpoint, "--commit-interval", "3600")
    sent = [random_update(rng, seq=seq) for seq in range(150)]
    try:
        publisher.wait_for_subscriber(process)
        for update in sent:
            publisher.publish(update)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        publisher.close()
    log = recorder_log(tmp_path)
    assert returncode == 0, log
    assert "Traceback" not in log
    assert "written=150 dropped=0" in log
    connection = open_database(db_path, read_only=True)
    try:
        got = list(store.read_updates(connection))
    finally:
        connection.close()
    assert len(got) == len(sent)
    for got_update, want_update in zip(got, sent, strict=True):
        assert_same_update(got_update, want_update)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--retention-days", "-1"],
            "error: record.retention_days: must be 0 or more, got -1.0",
        ),
        (
            ["--commit-interval", "0"],
            "error: record.commit_interval_seconds: must be greater than 0, got 0.0",
        ),
    ],
)
def test_record_cli_rejects_bad_flags(tmp_path: Path, flags: list[str], message: str) -> None:
    err = io.StringIO()
    status = record_cli.main(["--db", str(tmp_path / "x.db"), *flags], stderr=err)
    assert status == ExitStatus.USAGE
    assert err.getvalue().strip() == message


def test_record_cli_unusable_database_is_one_line(tmp_path: Path) -> None:
    not_a_db = tmp_path / "junk.db"
    not_a_db.write_bytes(b"this is not an sqlite file at all" * 100)
    err = io.StringIO()
    status = record_cli.main(["--db", str(not_a_db), "--endpoint", "tcp://127.0.0.1:1"], stderr=err)
    assert status == ExitStatus.UNAVAILABLE
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {not_a_db}: ")


# ---------------------------------------------------------------------------
# Report on a synthetic recording
# ---------------------------------------------------------------------------


def synthetic_update(*, stream: str, seq: int, published_time: float, dominant: str) -> TagUpdate:
    """Smoothed: ``dominant`` 0.7, others 0.1.  Raw: ambient 0.9, others 0.05 (a decoy)."""
    smoothed = np.full(len(TAGS), 0.1, dtype=np.float32)
    smoothed[TAGS.index(dominant)] = 0.7
    raw = np.full(len(TAGS), 0.05, dtype=np.float32)
    raw[TAGS.index("ambient")] = 0.9
    return TagUpdate(
        stream=stream,
        seq=seq,
        start_s=30.0 * seq,
        end_s=30.0 * seq + 3.0,
        model=MODEL,
        tags=TAGS,
        probabilities=raw,
        smoothed=smoothed,
        capture_time=published_time - 0.2,
        received_time=published_time - 0.1,
        published_time=published_time,
    )


def studio_dominant(i: int) -> str:
    return "rock" if i < 90 else "pop" if i < 180 else "jazz"


@pytest.fixture
def synthetic_db(tmp_path: Path) -> Path:
    """studio: 240 updates every 30 s over two hours (rock x90, pop x90, jazz x60).
    kitchen: 20 rock updates in hour 0, every 60 s, with an 11-minute silence after 10."""
    updates = [
        synthetic_update(
            stream="studio", seq=i, published_time=T0 + 30.0 * i, dominant=studio_dominant(i)
        )
        for i in range(240)
    ]
    updates += [
        synthetic_update(
            stream="kitchen", seq=j, published_time=T0 + 15 + 60.0 * j, dominant="rock"
        )
        for j in [*range(10), *range(20, 30)]
    ]
    db_path = tmp_path / "synthetic.db"
    connection = open_database(db_path)
    write_updates(connection, updates[::2])  # two transactions, interleaved times
    write_updates(connection, updates[1::2])
    connection.close()
    return db_path


def shares(rep: report.TagReport, row: np.ndarray) -> dict[str, float]:
    return {tag: float(row[rep.tags.index(tag)]) for tag in TAGS}


@pytest.mark.parametrize("chunk_rows", [7, 100_000])
def test_report_hourly_and_daily_shares(synthetic_db: Path, chunk_rows: int) -> None:
    rep = report.build_report(synthetic_db, stream="studio", tz=dt.UTC, chunk_rows=chunk_rows)
    assert rep.updates == 240 and rep.streams == ("studio",)
    np.testing.assert_array_equal(rep.hour_starts, [T0, T0 + 3600])
    np.testing.assert_array_equal(rep.hour_updates, [120, 120])
    assert shares(rep, rep.hour_share[0]) == {
        "rock": 0.75,
        "pop": 0.25,
        "jazz": 0.0,
        "ambient": 0.0,
    }
    assert shares(rep, rep.hour_share[1]) == {"rock": 0.0, "pop": 0.5, "jazz": 0.5, "ambient": 0.0}
    # Mean of the raw probabilities (the decoy), not of the smoothed ones.
    mean = shares(rep, rep.hour_mean[1])
    assert mean == pytest.approx({"rock": 0.05, "pop": 0.05, "jazz": 0.05, "ambient": 0.9})
    assert rep.days == (dt.date(2024, 6, 1),)
    assert shares(rep, rep.day_share[0]) == {
        "rock": 0.375,
        "pop": 0.375,
        "jazz": 0.25,
        "ambient": 0.0,
    }
    assert set(rep.tags[:2]) == {"rock", "pop"} and rep.tags[2:] == ("jazz", "ambient")


@pytest.mark.parametrize("chunk_rows", [7, 100_000])
def test_report_segments(synthetic_db: Path, chunk_rows: int) -> None:
    rep = report.build_report(synthetic_db, tz=dt.UTC, chunk_rows=chunk_rows)
    got = [(s.stream, s.start_time, s.end_time, s.tag, s.updates) for s in rep.segments]
    assert got == [
        # the silence of 11 minutes (> gap_seconds=60) splits kitchen's rock run
        ("kitchen", T0 + 15, T0 + 15 + 540, "rock", 10),
        ("kitchen", T0 + 15 + 1200, T0 + 15 + 1740, "rock", 10),
        ("studio", T0, T0 + 30 * 89, "rock", 90),
        ("studio", T0 + 30 * 90, T0 + 30 * 179, "pop", 90),
        ("studio", T0 + 30 * 180, T0 + 30 * 239, "jazz", 60),
    ]
    jazz = rep.segments[-1]
    assert (jazz.audio_start_s, jazz.audio_end_s) == (30.0 * 180, 30.0 * 239 + 3.0)
    # All streams together: kitchen's 20 rock updates join studio's hour 0.
    np.testing.assert_array_equal(rep.hour_updates, [140, 120])
    assert shares(rep, rep.hour_share[0])["rock"] == pytest.approx(110 / 140)


def test_report_time_range(synthetic_db: Path) -> None:
    rep = report.build_report(synthetic_db, since=T0 + 3600, until=T0 + 7200, tz=dt.UTC)
    assert rep.updates == 120
    np.testing.assert_array_equal(rep.hour_starts, [T0 + 3600])
    assert [s.tag for s in rep.segments] == ["pop", "jazz"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_report_cli_writes_table_png_and_csv(synthetic_db: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["--db", str(synthetic_db), "--stream", "studio", "--out", str(out_dir)]
    status = report_cli.main([*argv, "--top", "3", "--utc"], stdout=stdout, stderr=stderr)
    assert status == ExitStatus.OK, stderr.getvalue()
    text = stdout.getvalue()
    assert "Per hour" in text and "2024-06-01 01:00" in text and " 75.0% 0.05" in text
    assert png_size(out_dir / "report.png") == (1200, 500)
    with (out_dir / "hourly.csv").open(newline="") as fh:
        hourly = list(csv.DictReader(fh))
    assert [row["hour_start"] for row in hourly] == [
        "2024-06-01T00:00:00+00:00",
        "2024-06-01T01:00:00+00:00",
    ]
    assert [row["updates"] for row in hourly] == ["120", "120"]
    assert float(hourly[0]["share:rock"]) == 0.75 and float(hourly[1]["share:jazz"]) == 0.5
    assert float(hourly[1]["mean:pop"]) == pytest.approx(0.05)
    assert float(hourly[0]["share:other"]) == 0.0  # top 3 = rock, pop, jazz
    assert hourly[0]["dominant_tag"] == "rock"
    with (out_dir / "segments.csv").open(newline="") as fh:
        segments = list(csv.DictReader(fh))
    assert [(row["tag"], row["updates"]) for row in segments] == [
        ("rock", "90"),
        ("pop", "90"),
        ("jazz", "60"),
    ]
    assert segments[0]["start"] == "2024-06-01T00:00:00.000+00:00"
    assert float(segments[0]["duration_s"]) == 30.0 * 89


def error_lines(stderr: io.StringIO) -> list[str]:
    return stderr.getvalue().strip().splitlines()


def test_report_missing_corrupt_and_empty_are_one_line_errors(
    synthetic_db: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.db"
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00garbage" * 1000)
    cases = [
        (["--db", str(missing)], ExitStatus.UNAVAILABLE, "no such database"),
        (["--db", str(corrupt)], ExitStatus.UNAVAILABLE, "not"),
        (["--db", str(synthetic_db), "--stream", "attic"], ExitStatus.UNAVAILABLE, "no updates"),
        (
            ["--db", str(synthetic_db), "--since", "2030-01-01T00:00+00:00"],
            ExitStatus.UNAVAILABLE,
            "no updates",
        ),
        (["--db", str(synthetic_db), "--since", "yesterday"], ExitStatus.USAGE, "--since"),
    ]
    for argv, expected_status, fragment in cases:
        stdout, stderr = io.StringIO(), io.StringIO()
        argv = [*argv, "--out", str(tmp_path / "out")]
        status = report_cli.main(argv, stdout=stdout, stderr=stderr)
        lines = error_lines(stderr)
        assert status == expected_status, (argv, lines)
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert not missing.exists()  # the report never creates a database
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-24h", T0 - 86_400),
        ("-7d", T0 - 7 * 86_400),
        ("-30m", T0 - 1800),
        ("-1.5h", T0 - 5400),
        ("2024-06-01T00:00:00+00:00", T0),
        ("2024-06-01T02:00+02:00", T0),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert report.parse_time(text, now=T0) == expected


def test_parse_time_without_offset_is_local() -> None:
    naive = dt.datetime(2024, 6, 1, 12, 0)
    assert report.parse_time("2024-06-01T12:00") == naive.astimezone().timestamp()


def test_report_reads_while_a_recorder_holds_the_database(
    synthetic_db: Path, tmp_path: Path, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    recorder = Recorder(synthetic_db, [f"ipc://{tmp_path}/nobody.sock"], context=context)
    try:
        rep = report.build_report(synthetic_db, stream="studio", tz=dt.UTC)
    finally:
        recorder.close()
    assert rep.updates == 240
    assert os.path.exists(synthetic_db)
