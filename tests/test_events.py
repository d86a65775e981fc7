"""Content per update and the worker's events, with real parts (issue 13, items 4, 5 and 7).

A real worker (the session's MSD_musicnn, Silero VAD through ONNX Runtime) tags audio
sent by the test's PUSH socket or by a real ``python -m streamer``; a real Icecast
(Debian's ``icecast2``, fed by FFmpeg) serves the station for the source tests.  Every
assertion is on audio time (``at_s``) or on what arrived, never on how long it took.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from helpers import (
    DEADLINE_S,
    Collector,
    Harness,
    Processes,
    events,
    frames_of,
    music,
    updates,
    wait_until,
)
from icecast import Icecast, needs_icecast

from inference.content import ContentSettings, ContentStream
from inference.windows import AcceptResult
from protocol import Event, TagUpdate, decode_published

SR = 16000
#: The defaults the events are tested against ([content] and [inference]).
SILENCE_SECONDS = 10.0
HOP_S = 0.5


def noise_at(rng: np.random.Generator, seconds: float, dbfs: float) -> np.ndarray:
    """White noise whose RMS level is ``dbfs`` (the AES17 dBFS of model.content)."""
    rms = 10 ** (dbfs / 20) / np.sqrt(2)
    return (rng.standard_normal(int(seconds * SR)) * rms).astype(np.float32)


def messages_of(harness: Harness, stream: str, *, until_end_s: float) -> list[TagUpdate | Event]:
    """Everything the worker publishes for ``stream`` until an update ends at ``until_end_s``."""
    found: list[TagUpdate | Event] = []
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if not harness.sub.poll(100):
            continue
        message = decode_published(harness.sub.recv_multipart())
        if message.stream != stream:
            continue
        found.append(message)
        if isinstance(message, TagUpdate) and message.end_s >= until_end_s - 1e-6:
            return found
    raise AssertionError(f"no update of {stream} reached {until_end_s} s; got {len(found)}")


def check_dead_air(messages: list[Any], *, quiet_from_s: float, audio_back_s: float) -> None:
    """One silence_start within silence_seconds + 1 s, one silence_end within one hop."""
    [start] = events(messages, "silence_start")
    [end] = events(messages, "silence_end")
    assert SILENCE_SECONDS <= start.at_s - quiet_from_s <= SILENCE_SECONDS + 1.0, start
    assert abs(start.fields["silence_since_s"] - quiet_from_s) <= 0.2, start
    assert start.fields["level_dbfs"] < start.fields["threshold_dbfs"] == -50.0
    assert 0.0 <= end.at_s - audio_back_s <= HOP_S, end
    assert end.fields["duration_s"] == pytest.approx(audio_back_s - quiet_from_s, abs=0.2)
    assert messages.index(start) < messages.index(end)
    # Each event follows the update of the window that made it known.
    before_start = [u for u in updates(messages[: messages.index(start)])]
    assert before_start and before_start[-1].end_s >= start.at_s


def test_updates_carry_content_and_level_and_dead_air_makes_events(
    run_worker: Callable[..., Harness], rng: np.random.Generator
) -> None:
    harness = run_worker()
    # 8 s of music, 13 s of hiss at -65 dBFS (dead air on a real transmitter), 6 s of music.
    y = np.concatenate([music(rng, 8.0), noise_at(rng, 13.0, -65.0), music(rng, 6.0)])
    harness.send_audio(y, stream="dead-air", block=1600)
    messages = messages_of(harness, "dead-air", until_end_s=26.4)

    check_dead_air(messages, quiet_from_s=8.0, audio_back_s=21.0)
    tagged = updates(messages)
    assert all(u.content is not None and u.level_dbfs is not None for u in tagged)
    quiet = [u for u in tagged if u.start_s >= 8.05 and u.end_s <= 20.95]
    loud = [u for u in tagged if u.end_s <= 7.95 or u.start_s >= 21.05]
    assert quiet and loud
    assert {u.content for u in quiet} == {"silence"}
    assert all(-67.0 < u.level_dbfs < -63.0 for u in quiet)  # type: ignore[operator]
    assert {u.content for u in loud} == {"music"}
    # Where each window's sound changes most: in its middle second; silence says nothing.
    assert all(u.change_at_s is None and u.change_strength is None for u in quiet)
    assert all(u.change_speech is None for u in quiet)
    for u in loud:
        assert u.change_at_s is not None and u.change_strength is not None, u
        assert u.change_speech is not None and -1.0 <= u.change_speech <= 1.0, u
        middle = 0.5 * (u.start_s + u.end_s)
        assert abs(u.change_at_s - middle) <= 0.5 + 0.02 and u.change_strength >= 0.0, u
    # A window whose middle second holds the dead air's start finds it there.
    edge = [u for u in tagged if abs(0.5 * (u.start_s + u.end_s) - 8.0) <= 0.4]
    assert edge and all(u.change_at_s is not None for u in edge), edge
    assert all(abs(u.change_at_s - 8.0) <= 0.05 for u in edge), edge  # type: ignore[operator]
    for u in tagged:
        assert set(u.content_probabilities or {}) == {"music", "speech", "silence"}
        assert max(u.content_probabilities, key=u.content_probabilities.get) == u.content  # type: ignore[arg-type, union-attr]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_talk_after_music_is_one_content_change(
    run_worker: Callable[..., Harness], rng: np.random.Generator, tmp_path: Path
) -> None:
    wav = tmp_path / "talk.wav"
    text = (
        "Good evening and welcome back to the late show. That was a lovely piece of music, "
        "and in a moment we will hear from our guest about the festival this weekend, "
        "where tickets are still available at the door and online."
    )
    subprocess.run(
        ["espeak-ng", "-s", "150", "-w", str(wav), text], check=True, capture_output=True
    )
    speech, rate = soundfile.read(wav, dtype="float32")
    from model.audio import Resampler

    speech = Resampler(rate, SR).push(speech) if rate != SR else speech
    speech = np.tile(speech, 2)[: int(14 * SR)] * 0.5
    y = np.concatenate([music(rng, 10.0), speech.astype(np.float32), music(rng, 3.2)])
    harness = run_worker()
    harness.send_audio(y, stream="talk", block=1600)
    messages = messages_of(harness, "talk", until_end_s=len(y) / SR - 0.6)
    changes = events(messages, "content_change")
    assert changes, [u.content for u in updates(messages)]
    first = changes[0]
    assert (first.fields["previous"], first.fields["content"]) == ("music", "speech")
    assert abs(first.at_s - 10.0) <= HOP_S, first  # placed as the as-run log places it
    # Hysteresis: no flicker back and forth within the talk.
    assert len([c for c in changes if c.at_s < 24.0]) == 1, changes


# -- through a real streamer ------------------------------------------------------------------


@pytest.fixture
def collect(run_worker: Callable[..., Harness]) -> Iterator[Callable[[str], Collector]]:
    """``collect(stream) -> Collector`` on one in-process worker (``collector.harness``)."""
    harness = run_worker()
    made: list[Collector] = []

    def start(stream: str) -> Collector:
        made.append(Collector(harness, stream))
        return made[-1]

    yield start
    for collector in made:
        collector.close()


def test_audio_before_an_outage_stays_for_the_classifier(rng: np.random.Generator) -> None:
    """An outage (a sequence gap too long to fill) jumps the audio clock by 40 s; the
    windows before it, still waiting for the classifier, keep their audio (the ring
    holds 30 s of audio, not 30 s of timeline: they were classified as music, with no
    probabilities, before)."""
    stream = ContentStream("s", ContentSettings())
    frames = frames_of(music(rng, 5.0), stream="s", block=8000)
    for frame in frames:
        stream.accept(frame, AcceptResult.ACCEPTED)
    after = frames_of(music(rng, 1.0), stream="s", block=8000, first_seq=len(frames) + 80)
    stream.accept(after[0], AcceptResult.GAP_RESET)  # 80 blocks of 0.5 s missing
    before = stream.samples(2.0, 5.0)
    assert before is not None and np.abs(before).max() > 0.0
    assert stream.samples(45.0, 45.5) is not None  # the audio after the outage
    # Bounded by audio held: 60 s more push the 5 s before the outage out.
    late = frames_of(music(rng, 60.0), stream="s", block=8000, first_seq=after[0].seq + 1)
    for frame in late:
        stream.accept(frame, AcceptResult.ACCEPTED)
    assert stream.samples(2.0, 5.0) is None


def windows_over(
    changes: list[tuple[float, str]], *, end_s: float, speech_at_flip: dict[str, float]
) -> list[TagUpdate]:
    """Updates of 3 s windows a hop apart over content that changes at ``changes``
    ((audio time, new content), from music at 0 s), as a classifier and a tagger see it.

    A window is called speech once the share of it that is speech reaches
    ``speech_at_flip["end"]`` (the speech at its end) or ``["start"]`` (at its start);
    the tags move from the music's to the talk's profile with the talk's share of the
    window; a window whose middle second holds a change reports it there (strength 3),
    the others report a weak change (0.3) at their centre.
    """
    window_s, names = 2.992, ("rock", "pop", "jazz")
    bounds = [0.0] + [at for at, _ in changes] + [end_s]
    kinds = ["music"] + [kind for _, kind in changes]
    out = []
    for seq, start in enumerate(np.arange(0.0, end_s - window_s, HOP_S)):
        end = start + window_s
        talk = sum(
            max(0.0, min(end, b) - max(start, a))
            for a, b, kind in zip(bounds, bounds[1:], kinds, strict=False)
            if kind == "speech"
        )
        share = talk / window_s
        inside = [a for a, _ in changes if start < a < end]
        at_end = bool(inside) and kinds[bounds.index(inside[0])] == "speech"
        flip = speech_at_flip["end"] if at_end else speech_at_flip["start"]
        p_speech = float(1 / (1 + np.exp(-(share - flip) / 0.03)))
        centre = start + window_s / 2
        near = [a for a in inside if abs(a - centre) <= 0.5]
        music_logits = np.array([2.0, -1.0, -3.0])
        logits = music_logits + share * (-4.0 - music_logits)
        out.append(
            TagUpdate(
                stream="s",
                seq=seq,
                start_s=float(start),
                end_s=float(end),
                model="m",
                tags=names,
                probabilities=1 / (1 + np.exp(-logits)),
                smoothed=np.zeros(3),
                capture_time=1e9 + end,
                received_time=1e9 + end,
                published_time=1e9 + end,
                content="speech" if p_speech >= 0.5 else "music",
                content_probabilities={
                    "music": round(1 - p_speech, 4),
                    "speech": round(p_speech, 4),
                    "silence": 0.0,
                },
                change_at_s=near[0] if near else centre,
                change_strength=3.0 if near else 0.3,
                change_speech=0.0,
            )
        )
    return out


@pytest.mark.parametrize("talk_s", [40.0, 40.17, 40.38])
def test_a_content_change_is_placed_where_the_content_changed(talk_s: float) -> None:
    """The classifier hears the talk late (a quiet start: speech once 0.7 of a window
    is), so the first window it calls speech is centred 0.6 s or more after the talk
    began; the event is placed on the change of sound at the talk's start instead, as
    the as-run log places it (model.placement), both ways."""
    music_s = talk_s + 30.0
    stream = ContentStream("s", ContentSettings())
    found = [
        event
        for update in windows_over(
            [(talk_s, "speech"), (music_s, "music")],
            end_s=talk_s + 60.0,
            speech_at_flip={"end": 0.7, "start": 0.39},
        )
        if (event := stream.content_event(update, now=0.0)) is not None
    ]
    assert [(e.fields["previous"], e.fields["content"]) for e in found] == [
        ("music", "speech"), ("speech", "music"),
    ], found  # fmt: skip
    assert found[0].at_s == pytest.approx(talk_s, abs=0.01), found
    assert found[1].at_s == pytest.approx(music_s, abs=0.01), found


def test_content_after_dead_air_keeps_no_windows_from_before_it() -> None:
    """Talk after a silence: no window before the silence places it (the as-run log
    cuts there too), so ``at_s`` is the middle of the talk's first window; the windows
    a stream keeps for placing stay bounded however long the content lasts."""
    stream = ContentStream("s", ContentSettings())
    updates_ = windows_over(
        [(600.0, "speech")], end_s=640.0, speech_at_flip={"end": 0.49, "start": 0.39}
    )
    quiet = range(1190, 1205)  # windows ending 598 s ... 605 s: silent
    found = []
    for update in updates_:
        if update.seq in quiet:
            update = dataclasses.replace(update, content="silence")
        event = stream.content_event(update, now=0.0)
        found += [event] if event is not None else []
        assert len(stream._recent) <= (4.0 + 2 * 3.0 + 9.0) / HOP_S + 2
    assert len(found) == 1, found
    first_talk = next(u for u in updates_ if u.seq > quiet[-1] and u.content == "speech")
    assert found[0].at_s == pytest.approx(0.5 * (first_talk.start_s + first_talk.end_s), abs=1e-3)


def test_dead_air_through_the_streamer(
    collect: Any, processes: Processes, rng: np.random.Generator, tmp_path: Path
) -> None:
    wav = tmp_path / "dead_air.wav"
    y = np.concatenate([music(rng, 6.0), noise_at(rng, 12.0, -70.0), music(rng, 5.0)])
    soundfile.write(wav, y, SR, subtype="FLOAT")
    collector = collect("file:dead-air")
    harness = collector.harness
    streamer = processes.start(
        "streamer", "streamer", "--file", str(wav), "--fast",
        "--endpoint", harness.worker.input_endpoint, "--stream-id", "file:dead-air",
    )  # fmt: skip
    wait_until(
        lambda: any(u.end_s >= 22.4 for u in collector.updates()),
        lambda: f"updates up to 22.4 s; streamer log: {processes.log('streamer')[-1500:]}",
    )
    assert streamer.wait(timeout=DEADLINE_S) == 0
    check_dead_air(list(collector.messages), quiet_from_s=6.0, audio_back_s=18.0)


@needs_icecast
def test_station_source_down_up_and_title_reach_subscribers(
    collect: Any, processes: Processes, rng: np.random.Generator, tmp_path: Path
) -> None:

    wav = tmp_path / "station.wav"
    soundfile.write(wav, music(rng, 20.0), SR)
    icecast = Icecast()
    try:
        icecast.start_source(wav)
        collector = collect("station")
        harness = collector.harness
        processes.start(
            "streamer", "streamer", "--url", icecast.url,
            "--endpoint", harness.worker.input_endpoint, "--stream-id", "station",
        )  # fmt: skip

        def log() -> str:
            return f"streamer log: {processes.log('streamer')[-2000:]}"

        wait_until(lambda: len(collector.updates()) >= 4, lambda: "updates; " + log())
        assert collector.updates()[-1].content == "music"

        icecast.set_title("Miles Ahead - Blue Room")
        [title] = wait_until(lambda: collector.events("now_playing"), lambda: "title; " + log())
        assert title.fields["title"] == "Miles Ahead - Blue Room"
        assert title.at_s >= 0.0

        icecast.kill_source()
        [down] = wait_until(lambda: collector.events("source_down"), lambda: "down; " + log())
        assert down.fields["reason"]
        assert not collector.events("source_up")
        icecast.start_source(wav)
        [up] = wait_until(lambda: collector.events("source_up"), lambda: "up; " + log())
        assert up.at_s > down.at_s and up.fields["outage_s"] > 0
        # Tags come back after the outage, on the same audio timeline.
        wait_until(
            lambda: any(u.start_s >= up.at_s for u in collector.updates()),
            lambda: "updates after source_up; " + log(),
        )
    finally:
        icecast.close()


# -- recorded, reported, shown ----------------------------------------------------------------


def content_update(
    seq: int, content: str, dominant: str, *, published_time: float, stream: str = "fm"
) -> TagUpdate:
    tags = ("jazz", "rock", "pop")
    smoothed = np.array([0.8 if t == dominant else 0.1 for t in tags], dtype=np.float32)
    share = {"music": 0.05, "speech": 0.05, "silence": 0.05}
    share[content] = 0.9
    return TagUpdate(
        stream=stream, seq=seq, start_s=0.5 * seq, end_s=0.5 * seq + 3.0, model="m", tags=tags,
        probabilities=smoothed, smoothed=smoothed, capture_time=published_time,
        received_time=published_time, published_time=published_time, content=content,
        content_probabilities=share, level_dbfs=-70.0 if content == "silence" else -18.0,
        change_at_s=None if content == "silence" else 0.5 * seq + 1.5,
        change_strength=None if content == "silence" else 0.25 * seq,
        change_speech=None if content == "silence" else 0.5 if content == "speech" else -0.125,
    )  # fmt: skip


def test_the_store_keeps_content_and_events_and_the_report_counts_music_only(
    tmp_path: Path,
) -> None:
    from monitor.report import build_report, format_report, write_segments_csv
    from monitor.store import open_database, read_events, read_updates, write_events
    from monitor.store import write_updates as store_updates

    t0 = 1_750_000_000.0
    plan = ["music"] * 10 + ["speech"] * 6 + ["silence"] * 4 + ["music"] * 10
    # Speech windows look like rock to the tagger: they must not count as rock.
    updates_in = [
        content_update(i, c, "jazz" if c == "music" else "rock", published_time=t0 + 0.5 * i)
        for i, c in enumerate(plan)
    ]
    title = Event("fm", "now_playing", time=t0 + 1, at_s=1.0, fields={"title": "So What"})
    db = tmp_path / "rec.db"
    connection = open_database(db)
    store_updates(connection, updates_in)
    write_events(connection, [title])
    stored = list(read_updates(connection))
    assert [u.content for u in stored] == plan
    assert stored[12].content_probabilities == pytest.approx(
        {"music": 0.05, "speech": 0.9, "silence": 0.05}
    )
    assert stored[18].level_dbfs == -70.0
    assert stored[18].change_at_s is None and stored[18].change_strength is None
    assert (stored[12].change_at_s, stored[12].change_strength) == (7.5, 3.0)
    assert (stored[12].change_speech, stored[2].change_speech) == (0.5, -0.125)
    assert stored[18].change_speech is None
    assert list(read_events(connection)) == [title]
    connection.close()

    report = build_report(db)
    assert report.updates == 20  # music windows only
    assert report.content_updates == {"music": 20, "speech": 6, "silence": 4}
    assert report.tags[0] == "jazz" and report.total_share[0] == 1.0
    assert [(s.label, s.updates) for s in report.segments] == [
        ("jazz", 10), ("[speech]", 6), ("[silence]", 4), ("jazz", 10),
    ]  # fmt: skip
    assert "speech 20.0% (6)" in format_report(report)
    write_segments_csv(report, tmp_path / "segments.csv")
    rows = (tmp_path / "segments.csv").read_text().splitlines()
    assert rows[0].endswith(",content") and rows[2].endswith(",speech")


def test_a_version_1_recording_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    from monitor.store import SCHEMA_VERSION, open_database, read_updates, write_updates

    db = tmp_path / "v1.db"
    old = sqlite3.connect(db)
    old.executescript(
        """
        CREATE TABLE tags (id INTEGER PRIMARY KEY, model TEXT NOT NULL, tags_json TEXT NOT NULL,
            UNIQUE (model, tags_json));
        CREATE TABLE updates (id INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL,
            published_time REAL NOT NULL, received_time REAL NOT NULL, capture_time REAL NOT NULL,
            recorded_time REAL NOT NULL, start_s REAL NOT NULL, end_s REAL NOT NULL,
            model TEXT NOT NULL, tags_id INTEGER NOT NULL REFERENCES tags (id),
            gaps INTEGER NOT NULL, dropped INTEGER NOT NULL, probabilities BLOB NOT NULL,
            smoothed BLOB NOT NULL);
        INSERT INTO tags VALUES (1, 'm', '["jazz", "rock", "pop"]');
        INSERT INTO updates VALUES (1, 'fm', 0, 1.0, 1.0, 1.0, 1.0, 0.0, 3.0, 'm', 1, 0, 0,
            zeroblob(12), zeroblob(12));
        PRAGMA user_version = 1;
        """
    )
    old.close()
    reader = open_database(db, read_only=True)  # read as it is
    [before] = read_updates(reader)
    assert before.content is None
    reader.close()
    writer = open_database(db)
    assert writer.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    write_updates(writer, [content_update(1, "speech", "rock", published_time=2.0)])
    assert [u.content for u in read_updates(writer)] == [None, "speech"]
    assert [u.change_at_s for u in read_updates(writer)] == [None, 2.0]
    writer.close()


@pytest.mark.parametrize(
    "columns", [("change_at_s", "change_strength", "change_speech"), ("change_speech",)]
)
def test_a_version_2_recording_without_the_change_columns_gains_them(
    tmp_path: Path, columns: tuple[str, ...]
) -> None:
    """A file written before ``change_at_s`` (or ``change_speech``): read as it is,
    upgraded when written to."""
    from monitor.store import open_database, read_updates, write_updates

    db = tmp_path / "v2.db"
    writer = open_database(db)
    write_updates(writer, [content_update(0, "music", "jazz", published_time=1.0)])
    for name in columns:
        writer.execute(f"ALTER TABLE updates DROP COLUMN {name}")
    writer.close()
    reader = open_database(db, read_only=True)
    [before] = read_updates(reader)
    assert before.content == "music" and before.change_speech is None
    assert (before.change_at_s is None) == ("change_at_s" in columns)
    reader.close()
    writer = open_database(db)
    write_updates(writer, [content_update(1, "music", "jazz", published_time=2.0)])
    stored = list(read_updates(writer))
    assert stored[1].change_at_s == 2.0 and stored[1].change_speech == -0.125
    first = (stored[0].change_at_s, stored[0].change_strength)
    assert first == ((None, None) if "change_at_s" in columns else (1.5, 0.0))
    writer.close()


def test_the_dashboards_model_shows_content_level_title_and_alarms() -> None:
    from monitor.history import DashboardModel

    model = DashboardModel()
    model.add_event(Event("fm", "source_down", time=1.0, at_s=0.0, fields={"reason": "eof"}))
    assert model["fm"].source_down and model["fm"].latest is None
    model.add_event(Event("fm", "source_up", time=2.0, at_s=5.0, fields={"outage_s": 4.0}))
    model.add(content_update(0, "silence", "jazz", published_time=3.0))
    model.add_event(
        Event(
            "fm", "silence_start", time=4.0, at_s=10.0,
            fields={"silence_since_s": 0.0, "level_dbfs": -70.0, "threshold_dbfs": -50.0},
        )
    )  # fmt: skip
    model.add_event(Event("fm", "now_playing", time=5.0, at_s=11.0, fields={"title": "Take Five"}))
    status = model["fm"].status_json()
    assert status["content"] == "silence" and status["level_dbfs"] == -70.0
    assert status["title"] == "Take Five"
    assert status["silent"] and not status["source_down"]
    assert [e["event"] for e in status["events"]] == [
        "source_down", "source_up", "silence_start", "now_playing",
    ]  # fmt: skip


def test_the_terminal_dashboard_shows_content_title_and_dead_air() -> None:
    import io

    from rich.console import Console

    from monitor.history import DashboardModel
    from tools.dashboard import render_dashboard

    model = DashboardModel()
    model.add_event(Event("only-events", "source_down", time=1.0, at_s=0.0, fields={"reason": "x"}))
    model.add(content_update(0, "silence", "jazz", published_time=3.0))
    model.add_event(Event("fm", "now_playing", time=5.0, at_s=1.0, fields={"title": "Take Five"}))
    model.add_event(
        Event(
            "fm", "silence_start", time=4.0, at_s=10.0,
            fields={"silence_since_s": 0.0, "level_dbfs": -70.0, "threshold_dbfs": -50.0},
        )
    )  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=120).print(render_dashboard(model))
    text = out.getvalue()
    assert "silence -70.0 dBFS" in text and "Take Five" in text and "DEAD AIR" in text
    assert "SOURCE DOWN" in text  # the stream that has events only


def test_tools_subscribe_prints_events_as_json_lines_beside_the_updates(
    run_worker: Callable[..., Harness], rng: np.random.Generator
) -> None:
    import io
    import json

    from tools import subscribe

    harness = run_worker()
    out = io.StringIO()
    argv = ["--endpoint", harness.worker.publish_endpoint, "--json", "--events", "--timeout", "8"]
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(subscribe.main(argv, stdout=out)))
    thread.start()
    probe = np.zeros(int(3.2 * SR), dtype=np.float32)
    wait_until(
        lambda: harness.send_audio(probe, stream="probe") and out.getvalue(),
        "tools.subscribe printing the probe's updates",
        interval_s=0.5,
    )
    y = np.concatenate([music(rng, 4.0), noise_at(rng, 12.0, -70.0), music(rng, 4.0)])
    harness.send_audio(y, stream="cli")
    thread.join(timeout=DEADLINE_S)
    assert status == [3]  # no update for --timeout seconds once the stream has ended
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    mine = [line for line in lines if line["stream"] == "cli"]
    events_seen = [line for line in mine if "event" in line]
    assert [e["event"] for e in events_seen] == ["silence_start", "silence_end"]
    start = events_seen[0]
    assert set(start) == {
        "stream", "event", "time", "at_s", "silence_since_s", "level_dbfs", "threshold_dbfs",
    }  # fmt: skip
    assert all("content" in line and "level_dbfs" in line for line in mine if "seq" in line)
