"""The as-run log (issue 14 item 4): a real worker, a real recorder, real audio.

A real in-process worker (the session's MSD_musicnn, Silero VAD) tags a scripted
programme sent on its input socket, with a streamer's titles: synthesized techno
(the model's ``electronic`` family), piano (``ambient``), espeak-ng talk, dead air,
techno, a source outage (a sequence gap with the streamer's ``source_down`` and
``source_up``) and piano again.
A real :class:`monitor.recorder.Recorder` records it into SQLite, and the as-run
log built from that file must have one row per played item with the boundaries
where they were played.  Every wait is on what arrived, never on how long it took.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import soxr
from helpers import Harness, new_rng, wait_until, worker_config

from config import RecordConfig
from inference import Worker
from model.placement import SPEECH_SHARE_AT_FLIP
from monitor import asrun as asrun_lib
from monitor.asrun import AsRunSettings, StreamWindows, load_asrun, segment_stream
from monitor.families import DEFAULT_FAMILIES
from monitor.recorder import Recorder
from monitor.store import open_database, read_events
from protocol import Event, TagUpdate, encode_event
from tagstream.errors import ExitStatus
from tools import report as report_cli

SR = 16000
#: The worker's hop (inference.hop_seconds) and block length of the test's sender.
HOP_S = 0.496
BLOCK = 1600
#: Upper bound of the waits on the worker (tagging 80 s of audio on a loaded 2-core CI).
WAIT_S = 600.0
STREAM = "fm:asrun"


# -- the programme ----------------------------------------------------------------------------


def seconds(sec: float) -> np.ndarray:
    return np.arange(int(sec * SR)) / SR


def techno(rng: np.random.Generator, sec: float) -> np.ndarray:
    """Four-on-the-floor kick, off-beat hats and a gated saw bass (``electronic``)."""
    t = seconds(sec)
    y = np.zeros_like(t)
    for i in range(int(sec / 0.5)):  # kick, 120 bpm
        start, k = int(i * 0.5 * SR), np.arange(int(0.2 * SR)) / SR
        part = y[start : start + len(k)]
        part += (np.sin(2 * np.pi * (50 + 100 * np.exp(-k * 30)) * k) * np.exp(-k * 15))[
            : len(part)
        ]
    for i in range(int(sec / 0.25)):  # hats between the kicks
        start, n = int((i * 0.25 + 0.125) * SR), int(0.05 * SR)
        part = y[start : start + n]
        part += (0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.01 * SR)))[: len(part)]
    y += 0.3 * (2 * ((55 * t) % 1.0) - 1) * (np.sin(2 * np.pi * 2 * t) > 0)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def piano(sec: float) -> np.ndarray:
    """Soft decaying notes with a few harmonics, a new one every 0.6 s (``ambient``)."""
    y = np.zeros(int(sec * SR))
    notes = (261.6, 329.6, 392.0, 523.3, 440.0, 349.2, 293.7, 392.0)
    for i in range(int(sec / 0.6)):
        start = int(i * 0.6 * SR)
        k = np.arange(min(int(2.0 * SR), len(y) - start)) / SR
        for harmonic, amplitude in ((1, 1.0), (2, 0.4), (3, 0.2), (4, 0.1)):
            y[start : start + len(k)] += (
                amplitude * np.sin(2 * np.pi * notes[i % len(notes)] * harmonic * k)
            ) * np.exp(-2.5 * k)
    return (0.2 * y / np.abs(y).max()).astype(np.float32)


def talk(sec: float) -> np.ndarray:
    """espeak-ng reading a presenter's link, over a quiet room."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; install.sh --dev)")
    text = (
        "Good evening and welcome back to the late show. That was a lovely piece of music, "
        "and in a moment we will hear from our guest about the festival this weekend, "
        "where tickets are still available at the door and online."
    )
    wav = subprocess.run(
        ["espeak-ng", "-s", "160", "--stdout", text], capture_output=True, check=True, timeout=60
    ).stdout
    y, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    y = 0.5 * soxr.resample(y, rate, SR).astype(np.float32)
    y = np.tile(y, int(np.ceil(sec * SR / len(y))))[: int(sec * SR)]
    return y + (np.random.default_rng(5).standard_normal(len(y)) * 3e-4).astype(np.float32)


def dead_air(rng: np.random.Generator, sec: float) -> np.ndarray:
    """Hiss at -70 dBFS: a transmitter with nothing on it."""
    return (rng.standard_normal(int(sec * SR)) * 10 ** (-70 / 20)).astype(np.float32)


# -- a recorder on a real worker ---------------------------------------------------------------


class RecorderThread:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.thread = threading.Thread(target=recorder.run, daemon=True)

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self.recorder

    def __exit__(self, *exc: object) -> None:
        self.recorder.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "Recorder.run() did not return after stop()"
        self.recorder.close()


def join_recorder(harness: Harness, recorder: Recorder) -> None:
    """Send short probe streams until the recorder has received one of their updates.

    PUB drops what it publishes before a subscription arrives; what is sent after a
    probe's update reached the recorder reaches it too.
    """
    probe = np.zeros(int(3.2 * SR), dtype=np.float32)
    for attempt in range(100):
        harness.send_audio(probe, stream=f"recorder-probe:{attempt}", block=2 * SR)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if recorder.received:
                return
            time.sleep(0.05)
    pytest.fail("the recorder never received a probe update")


def last_end_s(db: Path, stream: str) -> float:
    connection = open_database(db, read_only=True)
    try:
        row = connection.execute("SELECT max(end_s) FROM updates WHERE stream = ?", (stream,))
        value = row.fetchone()[0]
    finally:
        connection.close()
    return -1.0 if value is None else float(value)


def send_event(
    harness: Harness, stream: str, kind: str, at_s: float, t0: float, **fields: object
) -> None:
    """A streamer's source event, on the same socket as the stream's audio."""
    event = Event(stream, kind, time=t0 + at_s, at_s=at_s, fields=fields)
    harness.send(encode_event(event, topic=False))


Played = list[tuple[str, str, float, float]]


@pytest.fixture(scope="module")
def programme_db(
    tagger: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Played]]:
    """One recorded run of the programme: (database, [(kind, family, start_s, end_s)])."""
    rng = new_rng()
    before_outage = [
        ("music", "electronic", techno(rng, 16.0)),
        ("music", "ambient", piano(16.0)),
        ("speech", "", talk(14.0)),
        ("silence", "", dead_air(rng, 12.0)),
        ("music", "electronic", techno(rng, 12.0)),
    ]
    outage_s = 10.0
    after_outage = piano(12.0)
    played: Played = []
    position = 0.0
    for kind, family, y in before_outage:
        played.append((kind, family, position, position + len(y) / SR))
        position += len(y) / SR
    played.append(("outage", "", position, position + outage_s))
    played.append(("music", "ambient", position + outage_s, position + outage_s + 12.0))

    db = tmp_path_factory.mktemp("asrun") / "onair.db"
    worker = Worker(worker_config(), tagger=tagger)
    worker.start()
    worker.run_in_thread()
    harness = Harness(worker)
    stream = STREAM
    try:
        recorder = Recorder(
            db, [worker.publish_endpoint], settings=RecordConfig(commit_interval_seconds=0.2)
        )
        with RecorderThread(recorder):
            join_recorder(harness, recorder)
            # Capture times as a file sent faster than real time has them (ahead of the
            # worker's clock), so that a busy worker never sheds its windows as stale.
            t0 = time.time() + 600.0
            blocks = 0
            for (kind, family, start_s, _), (*_, y) in zip(played, before_outage, strict=False):
                if kind == "music":  # a title, as a streamer reads it from the station
                    send_event(
                        harness, stream, "now_playing", start_s, t0, title=f"{family} {start_s:g}"
                    )
                blocks += harness.send_audio(
                    y, stream=stream, block=BLOCK, end=False,
                    start_time=t0 + start_s, first_seq=blocks,
                )  # fmt: skip
            down_s = blocks * BLOCK / SR
            send_event(
                harness, stream, "source_down", down_s, t0, reason="stall: no audio for 10.0 s"
            )
            # The streamer's block index jumps by the outage: a sequence gap to the worker.
            first_seq = blocks + round(outage_s * SR / BLOCK)
            up_s = down_s + outage_s
            harness.send_audio(
                after_outage[:BLOCK], stream=stream, block=BLOCK, end=False,
                start_time=t0 + up_s, first_seq=first_seq,
            )  # fmt: skip
            send_event(harness, stream, "source_up", up_s, t0, outage_s=outage_s)
            harness.send_audio(
                after_outage[BLOCK:], stream=stream, block=BLOCK,
                start_time=t0 + up_s + BLOCK / SR, first_seq=first_seq + 1,
            )  # fmt: skip
            end_s = played[-1][3]
            wait_until(
                lambda: last_end_s(db, stream) >= end_s - HOP_S,
                lambda: f"the last window recorded (at {last_end_s(db, stream):.1f} s)",
                timeout_s=WAIT_S,
            )
            wait_until(
                lambda: recorder.events_received >= 7 and recorder.writer.pending == 0,
                "the events recorded",
                timeout_s=WAIT_S,
            )
    finally:
        harness.close()
        worker.close()
    yield db, played


def test_the_recorder_stores_the_workers_events(
    programme_db: tuple[Path, Played],
) -> None:
    db, played = programme_db
    connection = open_database(db, read_only=True)
    try:
        events = list(read_events(connection, stream=STREAM))
    finally:
        connection.close()
    kinds = [e.event for e in events]
    for kind in (
        "content_change", "silence_start", "silence_end", "now_playing", "source_down", "source_up",
    ):  # fmt: skip
        assert kind in kinds, kinds
    titles = [(e.at_s, e.fields["title"]) for e in events if e.event == "now_playing"]
    music = [p for p in played[:5] if p[0] == "music"]
    assert titles == [(pytest.approx(p[2], abs=0.01), f"{p[1]} {p[2]:g}") for p in music]
    silence = played[3]
    [start] = [e for e in events if e.event == "silence_start"]
    assert start.fields["silence_since_s"] == pytest.approx(silence[2], abs=0.2)
    [down] = [e for e in events if e.event == "source_down"]
    assert down.fields == {"reason": "stall: no audio for 10.0 s"}
    assert all(e.stream == STREAM and e.time > 0 for e in events)


def test_the_as_run_log_has_one_row_per_played_item(
    programme_db: tuple[Path, Played],
) -> None:
    db, played = programme_db
    log = load_asrun(db, stream=STREAM)
    rows = log.entries
    assert [(r.kind, r.family) for r in rows] == [(k, f) for k, f, *_ in played], rows
    for row, (kind, family, start_s, _) in zip(rows, played[:5], strict=False):
        assert row.title == f"{family} {start_s:g}" or kind != "music", row
    for row, (kind, *_) in zip(rows, played, strict=True):
        assert row.windows > 0 or kind == "outage"
    # Rows meet: each ends where the next begins.
    for before, after in itertools.pairwise(rows):
        assert before.audio_end_s == pytest.approx(after.audio_start_s, abs=1e-6)
    boundaries = [(p[3], r.audio_end_s) for p, r in zip(played[:-1], rows[:-1], strict=True)]
    # Techno -> piano (the families' scores, then the strongest change of sound near
    # them), piano -> talk (the content decision's flip and the tags' ramp, then the
    # same), into and out of dead air and the outage: within one hop of the audio.
    for index in (0, 1, 2, 3, 4, 5):
        true_s, found_s = boundaries[index]
        assert abs(found_s - true_s) <= HOP_S, (index, boundaries)
    # The two changes of sound are placed to the frame, not the hop (without the
    # spectral change the techno -> piano change lands 0.49 s into the piano).
    for index in (0, 1):
        true_s, found_s = boundaries[index]
        assert abs(found_s - true_s) <= 0.1, (index, boundaries)
    # Wall clock: the audio's own times (the sender's capture times).
    assert rows[-1].start_time - rows[0].start_time == pytest.approx(
        rows[-1].audio_start_s - rows[0].audio_start_s, abs=0.5
    )
    [incident] = log.dead_air
    silence = played[3]
    assert incident.duration_s == pytest.approx(silence[3] - silence[2], abs=HOP_S)
    assert set(log.family_seconds) == {"electronic", "ambient"}
    for family in ("electronic", "ambient"):
        played_s = sum(e - s for k, f, s, e in played if f == family)
        assert log.family_seconds[family] == pytest.approx(played_s, abs=4 * HOP_S), family


def test_report_cli_writes_the_as_run_log_and_takes_since_minus_7d(
    programme_db: tuple[Path, Played], tmp_path: Path
) -> None:
    db, played = programme_db
    out, err = io.StringIO(), io.StringIO()
    status = report_cli.main(
        ["--db", str(db), "--stream", STREAM, "--since", "-7d", "--until", "-0s",
         "--out", str(tmp_path), "--as-run", "-"],
        stdout=out, stderr=err,
    )  # fmt: skip
    assert status == ExitStatus.OK, err.getvalue()
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == asrun_lib.ASRUN_COLUMNS
    assert [(r["kind"], r["family"]) for r in rows] == [(k, f) for k, f, *_ in played]
    assert "Dead-air incidents: 1" in err.getvalue()
    dead = list(csv.DictReader((tmp_path / "dead_air.csv").open()))
    assert len(dead) == 1 and float(dead[0]["duration_s"]) > 11.0
    assert (tmp_path / "report.png").stat().st_size > 0
    assert not (tmp_path / "asrun.csv").exists()  # it went to stdout


# -- the segmentation on its own ----------------------------------------------------------------


def windows_of(labels: list[tuple[str, str]], *, hop_s: float = 0.5) -> StreamWindows:
    """Windows whose content and family scores say ``labels`` [(content, family)] one by one."""
    n = len(labels)
    names = DEFAULT_FAMILIES.names
    scores = np.full((n, len(names)), 0.05, dtype=np.float32)
    for i, (_, family) in enumerate(labels):
        if family:
            scores[i, names.index(family)] = 0.6
    content = np.array([c for c, _ in labels], dtype=object)
    start = np.arange(n) * hop_s
    return StreamWindows(
        stream="s", start_s=start, end_s=start + 3.0, capture_time=1e9 + start + 3.0,
        content=content, p_music=(content == "music").astype(float),
        p_speech=(content == "speech").astype(float), change_at_s=np.full(n, np.nan),
        change_strength=np.full(n, np.nan), change_speech=np.full(n, np.nan),
        family_scores=scores,
        tag_probabilities=scores.copy(), tags=names,
    )  # fmt: skip


def test_a_flickering_family_stays_one_row_with_hysteresis() -> None:
    # rock and metal alternate window by window, within the hysteresis margin
    labels = [("music", "rock")] * 10
    w = windows_of(labels)
    w.family_scores[:, DEFAULT_FAMILIES.names.index("metal")] = np.where(
        np.arange(len(labels)) % 2, 0.62, 0.52
    )
    rows = segment_stream(w, settings=AsRunSettings(min_segment_seconds=0, family_hysteresis=0.1))
    assert [r.family for r in rows] == ["rock"]
    rows = segment_stream(w, settings=AsRunSettings(min_segment_seconds=0, family_hysteresis=0.0))
    assert len(rows) == 10  # without hysteresis: every window a row


@pytest.mark.parametrize(("min_segment_seconds", "expected"), [
    (0.0, ["music", "speech", "music"]),
    (2.0, ["music", "speech", "music"]),
    (5.0, ["music"]),
])  # fmt: skip
def test_runs_shorter_than_min_segment_seconds_join_a_neighbour(
    min_segment_seconds: float, expected: list[str]
) -> None:
    labels = (
        [("music", "jazz-blues-soul")] * 20
        + [("speech", "")] * 6
        + [("music", "jazz-blues-soul")] * 20
    )
    rows = segment_stream(windows_of(labels), settings=AsRunSettings(min_segment_seconds))
    assert [r.kind for r in rows] == expected


def talk_between_music(talk_start_s: float, talk_end_s: float) -> StreamWindows:
    """Talk between music, seen through 3 s windows, without ``change_at_s``.

    The classifier calls a window speech once the measured share of it is speech
    (``SPEECH_SHARE_AT_FLIP``: less when the speech is at the window's start) and the
    tags move from the music's to the talk's profile in proportion to the talk's
    share of the window, as a model that pools over its window does.
    """
    hop_s, window_s = HOP_S, 2.992
    start = np.arange(int(100 / hop_s)) * hop_s
    end = start + window_s
    talk = np.clip(np.minimum(end, talk_end_s) - np.maximum(start, talk_start_s), 0, None)
    share = talk / window_s
    # A window holding the talk's start has the speech at its end, and the other way round.
    flip = np.where(
        start < talk_start_s,
        SPEECH_SHARE_AT_FLIP["end"],
        SPEECH_SHARE_AT_FLIP["start"],
    )
    p_speech = 1 / (1 + np.exp(-(share - flip) / 0.03))
    names = DEFAULT_FAMILIES.names
    music_logits = np.where(np.arange(len(names)) == names.index("rock"), 2.0, -3.0)
    talk_logits = np.full(len(names), -4.0)
    logits = music_logits + share[:, None] * (talk_logits - music_logits)
    probabilities = (1 / (1 + np.exp(-logits))).astype(np.float32)
    return StreamWindows(
        stream="s", start_s=start, end_s=end, capture_time=1e9 + end,
        content=np.where(p_speech >= 0.5, "speech", "music").astype(object),
        p_music=1 - p_speech, p_speech=p_speech, change_at_s=np.full(len(start), np.nan),
        change_strength=np.full(len(start), np.nan), change_speech=np.full(len(start), np.nan),
        family_scores=probabilities,
        tag_probabilities=probabilities, tags=names,
    )  # fmt: skip


@pytest.mark.parametrize("talk_start_s", [40.0, 40.17, 40.38])
def test_a_content_change_is_placed_from_the_window_geometry(talk_start_s: float) -> None:
    """Talk from ``talk_start_s`` for 30 s between music (:func:`talk_between_music`).

    Both changes must land on the audio, not on the flip's window centre (0.2-0.7 s away).
    """
    talk_end_s = talk_start_s + 30.0
    rows = segment_stream(talk_between_music(talk_start_s, talk_end_s))
    assert [r.kind for r in rows] == ["music", "speech", "music"], rows
    assert rows[1].audio_start_s == pytest.approx(talk_start_s, abs=0.1), rows
    assert rows[1].audio_end_s == pytest.approx(talk_end_s, abs=0.1), rows


@pytest.mark.parametrize("talk_start_s", [40.0, 40.17, 40.38])
def test_a_content_change_moves_to_the_strongest_spectral_change_near_it(
    talk_start_s: float,
) -> None:
    """Windows that report where their sound changes (``change_at_s``) place it exactly.

    Every window reports a weak change at its centre; those whose middle second holds
    the talk's start or end report that, stronger; and a still stronger change 1.6 s
    before the talk (a drum break) is out of reach (``CHANGE_SNAP_SECONDS``).
    """
    talk_end_s = talk_start_s + 30.0
    w = talk_between_music(talk_start_s, talk_end_s)
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0
    for at_s, strength in ((talk_start_s, 3.0), (talk_end_s, 3.0), (talk_start_s - 1.6, 9.0)):
        middle = np.abs(w.centres - at_s) <= 0.5
        w.change_at_s[middle], w.change_strength[middle] = at_s, strength
    rows = segment_stream(w)
    assert [r.kind for r in rows] == ["music", "speech", "music"], rows
    assert rows[1].audio_start_s == pytest.approx(talk_start_s, abs=1e-9), rows
    assert rows[1].audio_end_s == pytest.approx(talk_end_s, abs=1e-9), rows
    assert rows[0].audio_end_s == rows[1].audio_start_s


def test_where_the_speech_probability_changes_outweighs_a_stronger_spectral_change() -> None:
    """A crash 0.6 s before the talk changes the spectrum more than the splice does.

    Only the windows' ``change_speech`` (the speech probability rises at the talk's
    start and falls at its end) makes the splices the strongest changes near the
    estimates: ranked as the worker chose them (``CHANGE_SPEECH_WEIGHT``), the rows
    start and end there; a recording without ``change_speech`` takes the crashes.
    """
    w = talk_between_music(40.0, 70.0)
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0
    w.change_speech[:] = 0.0
    for at_s, strength, speech in ((39.4, 3.0, 0.0), (40.0, 2.5, 0.8), (70.0, 2.5, -0.8)):
        middle = np.abs(w.centres - at_s) <= 0.5
        w.change_at_s[middle], w.change_strength[middle] = at_s, strength
        w.change_speech[middle] = speech
    rows = segment_stream(w)
    assert [r.kind for r in rows] == ["music", "speech", "music"], rows
    assert (rows[1].audio_start_s, rows[1].audio_end_s) == (40.0, 70.0), rows
    w.change_speech[:] = np.nan  # a worker that did not say
    rows = segment_stream(w)
    assert rows[1].audio_start_s == pytest.approx(39.4, abs=1e-9), rows


def test_a_change_to_talk_looks_further_later_than_one_to_music() -> None:
    """A quiet song end makes the flip to talk early, so that change looks 1.5 s later.

    The only strong changes lie 1.2 s after each true change: the one after the
    change to talk is taken (``CHANGE_SNAP_LATER_TO_TALK_SECONDS``), the one after
    the change back to music is not (``CHANGE_SNAP_SECONDS``).
    """
    w = talk_between_music(40.0, 70.0)
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0
    for at_s in (41.2, 71.2):
        middle = np.abs(w.centres - at_s) <= 0.5
        w.change_at_s[middle], w.change_strength[middle] = at_s, 3.0
    rows = segment_stream(w)
    assert [r.kind for r in rows] == ["music", "speech", "music"], rows
    assert rows[1].audio_start_s == pytest.approx(41.2, abs=1e-9), rows
    assert rows[1].audio_end_s != pytest.approx(71.2, abs=0.2), rows
    assert rows[1].audio_end_s == pytest.approx(70.0, abs=1.0), rows


@pytest.mark.parametrize(
    ("heard_until_s", "title_s", "expected_s"),
    [
        (76.0, 70.3, 70.0),  # a song's first 6 s heard as talk; its title 0.3 s late
        (76.0, None, None),  # no title: the boundary stays where the classifier flipped
        (70.0, 74.0, 70.0),  # title 4 s late: the splice the sound placed stays
        (76.0, 45.0, None),  # a title early in the talk names the talk, not the song
    ],
)
def test_a_talk_music_boundary_moves_to_a_near_title_where_the_sound_changes(
    heard_until_s: float, title_s: float | None, expected_s: float | None
) -> None:
    """Talk 40-70 s, then a song; the classifier hears talk until ``heard_until_s``.

    The windows report a strong change of sound at 40 s and 70 s (the splices) and
    weak ones everywhere else; ``None`` expected: the boundary stays within reach of
    ``heard_until_s`` (the snap to the strongest nearby change, here a weak one).
    """
    w = talk_between_music(40.0, heard_until_s)
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0
    for at_s in (40.0, 70.0):
        middle = np.abs(w.centres - at_s) <= 0.5
        w.change_at_s[middle], w.change_strength[middle] = at_s, 3.0
    titles = [_title(0.0, "A - One")] + ([_title(title_s, "B - Two")] if title_s else [])
    rows = segment_stream(w, titles)
    assert [r.kind for r in rows] == ["music", "speech", "music"], rows
    assert rows[1].audio_start_s == pytest.approx(40.0, abs=1e-9), rows
    if expected_s is None:
        assert rows[1].audio_end_s == pytest.approx(heard_until_s, abs=1.0), rows
    else:
        assert rows[1].audio_end_s == pytest.approx(expected_s, abs=1e-9), rows
    assert rows[1].audio_end_s == rows[2].audio_start_s
    assert sum(r.windows for r in rows) == len(w)


def test_a_change_of_family_moves_to_a_near_title_where_the_sound_changes() -> None:
    """Two songs back to back, the second from 30 s; the families' scores change about
    1.7 s early (the first song's quiet end heard as the second's family), beyond the
    snap's reach of the splice.  The windows report a strong change of sound at 30 s,
    where the second song's title comes, and weak ones elsewhere."""
    labels = [("music", "rock")] * 54 + [("music", "pop")] * 60
    w = windows_of(labels)
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0
    middle = np.abs(w.centres - 30.0) <= 0.5
    w.change_at_s[middle], w.change_strength[middle] = 30.0, 3.0
    rows = segment_stream(w, [_title(0.0, "A - One"), _title(30.0, "B - Two")])
    assert [(r.kind, r.family, r.title) for r in rows] == [
        ("music", "rock", "A - One"), ("music", "pop", "B - Two")
    ], rows  # fmt: skip
    assert rows[0].audio_end_s == rows[1].audio_start_s == pytest.approx(30.0, abs=1e-9), rows
    assert sum(r.windows for r in rows) == len(w)
    assert rows[0].windows == int(np.searchsorted(w.centres, 30.0))  # windows split there too


def test_a_title_change_well_inside_speech_splits_it() -> None:
    """A song heard as talk all through (rap) after the talk: its title is the boundary."""
    w = windows_of([("music", "rock")] * 60 + [("speech", "")] * 120 + [("music", "pop")] * 60)
    talk_s = w.centres[60] - HOP_S / 2  # about 30 s: where the speech windows begin
    titles = [_title(0.0, "A - One"), _title(talk_s + 25.0, "B - Rap"), _title(95.0, "C - Two")]
    rows = segment_stream(w, titles)
    assert [(r.kind, r.title) for r in rows] == [
        ("music", "A - One"), ("speech", ""), ("speech", "B - Rap"), ("music", "C - Two"),
    ]  # fmt: skip
    assert rows[2].audio_start_s == talk_s + 25.0
    # Within min_segment_seconds of the talk's start it names the talk: no split.
    titles[1] = _title(talk_s + 5.0, "B - Rap")
    assert [r.kind for r in segment_stream(w, titles)] == ["music", "speech", "music"]


def test_a_title_change_inside_music_splits_it_and_names_the_rows() -> None:
    w = windows_of([("music", "pop")] * 100)  # 50 s of pop
    titles = [
        Event("s", "now_playing", time=1e9, at_s=0.0, fields={"title": "A - One"}),
        Event("s", "now_playing", time=1e9 + 25, at_s=25.0, fields={"title": "B - Two"}),
    ]
    rows = segment_stream(w, titles)
    assert [(r.title, r.audio_start_s, r.audio_end_s) for r in rows] == [
        ("A - One", 0.0, 25.0), ("B - Two", 25.0, w.end_s[-1]),
    ]  # fmt: skip


def _title(at_s: float, title: str) -> Event:
    return Event("s", "now_playing", time=1e9 + at_s, at_s=at_s, fields={"title": title})


def test_a_title_at_a_rows_edge_makes_no_row_without_windows() -> None:
    """With ``min_segment_seconds`` 0 a title a hop before a boundary splits nothing off."""
    w = windows_of([("music", "rock")] * 40 + [("speech", "")] * 40)
    boundary_title = _title(float(w.centres[40]) - 0.25, "B - Two")
    rows = segment_stream(
        w, [_title(0.0, "A - One"), boundary_title], settings=AsRunSettings(min_segment_seconds=0)
    )
    assert [r.kind for r in rows] == ["music", "speech"], rows
    assert all(r.windows >= 1 for r in rows), rows


@pytest.mark.parametrize(
    ("title_item_seconds", "expected"),
    [
        (900.0, [("music", "rock", "A - One"), ("music", "pop", "B - Two")]),
        (0.0, [("music", "rock", "A - One"), ("music", "metal", "A - One"),
               ("music", "pop", "B - Two")]),
        (50.0, [("music", "rock", "A - One"), ("music", "metal", "A - One"),
                ("music", "pop", "B - Two")]),
    ],
)  # fmt: skip
def test_music_rows_under_one_tracks_title_join(
    title_item_seconds: float, expected: list[tuple[str, str, str]]
) -> None:
    """A 60 s track heard as rock then metal is one row, while its title lasts one track.

    Rock scores higher over the whole track (40 s against 20 s).  Under a title that
    stays longer than ``title_item_seconds`` (a show's name) nothing joins.
    """
    labels = [("music", "rock")] * 80 + [("music", "metal")] * 40 + [("music", "pop")] * 60
    w = windows_of(labels)
    titles = [_title(0.0, "A - One"), _title(30.0, "A - One"), _title(60.0, "B - Two")]
    rows = segment_stream(w, titles, settings=AsRunSettings(title_item_seconds=title_item_seconds))
    assert [(r.kind, r.family, r.title) for r in rows] == expected, rows
    assert rows[0].audio_start_s == 0.0 and rows[-1].audio_end_s == w.end_s[-1]
    if len(rows) == 2:
        # where the family changed (window centres: 61.25 s), not where the title did
        assert rows[0].audio_end_s == rows[1].audio_start_s == pytest.approx(61.25, abs=0.01)


def test_a_song_heard_partly_as_talk_is_one_row_under_its_title() -> None:
    """A rap heard as talk, music, talk and music again is one music row under its title.

    The talk after it (still under its title, before the next one) stays a row, and so
    does the talk before it.  Without the title rule, or with a splice (a strong change
    of sound) in a piece heard as talk, the pieces stay as heard.
    """
    labels = (
        [("music", "rock")] * 60  # A: 0-30 s
        + [("speech", "")] * 60  # talk: 30-60 s
        + [("speech", "")] * 30 + [("music", "hip-hop")] * 30  # B: 60-75 s talk, 75-90 s music
        + [("speech", "")] * 24 + [("music", "hip-hop")] * 36  # 90-102 s talk, 102-120 s music
        + [("speech", "")] * 60  # talk after B: 120-150 s
        + [("music", "pop")] * 60  # C: 150-180 s
    )  # fmt: skip
    w = windows_of(labels)
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0  # the beat goes on: no splice inside B
    for at_s in (30.0, 60.0, 120.0, 150.0):  # the splices around the talk
        w.change_strength[np.abs(w.centres - at_s) <= 0.3] = 3.0
    titles = [_title(0.0, "A - One"), _title(60.0, "B - Rap"), _title(150.0, "C - Two")]
    rows = segment_stream(w, titles)
    assert [(r.kind, r.family) for r in rows] == [
        ("music", "rock"), ("speech", ""), ("music", "hip-hop"), ("speech", ""), ("music", "pop"),
    ], rows  # fmt: skip
    assert [r.title for r in rows if r.kind == "music"] == ["A - One", "B - Rap", "C - Two"]
    assert rows[2].audio_start_s == 60.0
    assert rows[2].audio_end_s == rows[3].audio_start_s == pytest.approx(120.0, abs=0.5)
    assert sum(r.windows for r in rows) == len(w)
    heard = ["music", "speech", "speech", "music", "speech", "music", "speech", "music"]
    unjoined = segment_stream(w, titles, settings=AsRunSettings(title_item_seconds=0))
    assert [r.kind for r in unjoined] == heard, unjoined
    w.change_strength[np.abs(w.centres - 96.0) <= 0.3] = 3.0  # a splice at 96 s: talk
    rows = segment_stream(w, titles)
    assert [r.kind for r in rows] == ["music", "speech", "music", "speech", "music", "speech",
                                      "music"], rows  # fmt: skip
    assert rows[2].audio_start_s == 60.0 and rows[2].audio_end_s == pytest.approx(90.0, abs=0.5)


def test_a_short_link_between_splices_is_a_row_and_a_flicker_is_not() -> None:
    """8 s of talk between two songs, shorter than ``min_segment_seconds``.

    With a splice (a strong change of sound) at each end it is a presenter's link and
    keeps its row; heard without one it is the classifier flickering inside music.
    """
    labels = [("music", "rock")] * 60 + [("speech", "")] * 16 + [("music", "pop")] * 60
    w = windows_of(labels)
    w.p_speech[60:76], w.p_music[60:76] = 0.9, 0.1  # heard as talk, but not surely
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0
    assert [r.kind for r in segment_stream(w)] == ["music", "music"]
    talk_s = (w.centres[60] - HOP_S / 2, w.centres[76] - HOP_S / 2)
    for at_s in talk_s:
        w.change_strength[np.abs(w.centres - at_s) <= 0.3] = 3.0
    rows = segment_stream(w)
    assert [(r.kind, r.family) for r in rows] == [("music", "rock"), ("speech", ""),
                                                  ("music", "pop")], rows  # fmt: skip
    assert rows[1].audio_start_s == pytest.approx(talk_s[0], abs=0.5)
    assert rows[1].audio_end_s == pytest.approx(talk_s[1], abs=0.5)
    w.change_strength[np.abs(w.centres - talk_s[1]) <= 0.3] = 1.0  # a splice at one end only
    assert [r.kind for r in segment_stream(w)] == ["music", "music"]


def test_voice_flickers_between_splices_do_not_join_a_song_into_the_talk_before_it() -> None:
    """9.5 s of talk (20 windows, surely speech), then a song whose voice enters with
    strong changes of sound: heard as talk for one window, then for three, 5 s apart.

    Those runs have a splice in each half, but fewer windows than fit in one window's
    length: flickers, not links.  Kept, they would join the song's first 11 s to the
    talk, and the talk's start would then be placed at their end.
    """
    labels = (
        [("music", "hip-hop")] * 60 + [("speech", "")] * 20 + [("music", "jazz-blues-soul")] * 13
        + [("speech", "")] + [("music", "jazz-blues-soul")] * 9 + [("speech", "")] * 3
        + [("music", "jazz-blues-soul")] * 60
    )  # fmt: skip
    w = windows_of(labels, hop_s=HOP_S)
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0
    # splices at the talk's ends, strong changes of sound at each flicker's
    for k in (60, 80, 93, 94, 103, 106):
        w.change_strength[np.abs(w.centres - (w.centres[k] - HOP_S / 2)) <= 0.3] = 3.0
    rows = segment_stream(w)
    assert [(r.kind, r.family) for r in rows] == [("music", "hip-hop"), ("speech", ""),
                                                  ("music", "jazz-blues-soul")], rows  # fmt: skip
    assert rows[1].audio_start_s == pytest.approx(w.centres[60] - HOP_S / 2, abs=HOP_S)
    assert rows[1].audio_end_s == pytest.approx(w.centres[80] - HOP_S / 2, abs=HOP_S)


def test_talk_at_the_end_of_the_recording_is_a_row_however_short() -> None:
    # 4 s of talk closing the recording: the recording cut it, so it is not merged away
    labels = [("music", "jazz-blues-soul")] * 40 + [("speech", "")] * 8
    rows = segment_stream(windows_of(labels), settings=AsRunSettings(min_segment_seconds=10))
    assert [r.kind for r in rows] == ["music", "speech"]
    labels = [("speech", "")] * 8 + [("music", "jazz-blues-soul")] * 40
    rows = segment_stream(windows_of(labels), settings=AsRunSettings(min_segment_seconds=10))
    assert [r.kind for r in rows] == ["speech", "music"]


def test_talk_cut_by_an_outage_is_a_row_however_short() -> None:
    # music, 4 s of talk, then the source is lost for 30 s, then music again
    labels = [("music", "pop")] * 40 + [("speech", "")] * 8 + [("music", "pop")] * 40
    w = windows_of(labels)
    w.start_s[48:] += 30.0
    w.end_s[48:] += 30.0
    rows = segment_stream(w, settings=AsRunSettings(min_segment_seconds=10))
    assert [r.kind for r in rows] == ["music", "speech", "outage", "music"], rows
    # the same talk in the middle of a stretch is too short to be a row (4 s: no 3 s
    # window lies wholly in it, so none is sure of it)
    w = windows_of(labels)
    w.p_speech[40:48], w.p_music[40:48] = 0.9, 0.1
    rows = segment_stream(w, settings=AsRunSettings(min_segment_seconds=10))
    assert [r.kind for r in rows] == ["music"], rows


def test_short_talk_the_classifier_is_sure_of_is_a_row_without_splices() -> None:
    """8 s of talk between two songs that end and begin softly (no splice reported).

    Its middle windows lie wholly in the talk and are surely speech: a presenter's link.
    The same run heard less surely is the classifier flickering inside music.
    """
    labels = [("music", "rock")] * 60 + [("speech", "")] * 16 + [("music", "pop")] * 60
    w = windows_of(labels)
    w.p_speech[60:76] = [0.6, 0.8, 0.95] + [1.0] * 10 + [0.95, 0.8, 0.6]
    w.p_music[60:76] = 1.0 - w.p_speech[60:76]
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0
    rows = segment_stream(w)
    assert [r.kind for r in rows] == ["music", "speech", "music"], rows
    assert rows[1].audio_start_s == pytest.approx(w.centres[60] - HOP_S / 2, abs=1.0)
    assert rows[1].audio_end_s == pytest.approx(w.centres[76] - HOP_S / 2, abs=1.0)
    w.p_speech[63:73] = 0.97  # heard as talk throughout, never surely
    w.p_music[63:73] = 0.03
    assert [r.kind for r in segment_stream(w)] == ["music", "music"]
    w.p_speech[63:73] = [1.0] * 6 + [0.9] + [1.0] * 3  # sure, but only 3 s at a time
    w.p_music[63:73] = 1.0 - w.p_speech[63:73]
    assert [r.kind for r in segment_stream(w)] == ["music", "music"]


@pytest.mark.parametrize(
    "argv",
    [["--since", "-7d"], ["--since=-7d"], ["--since", "-36h", "--until", "-1.5h"]],
)
def test_relative_times_are_values_not_options(argv: list[str]) -> None:
    joined = report_cli.join_time_values(["--db", "x", *argv, "--utc"])
    args = report_cli.build_parser().parse_args(joined)
    assert args.since.startswith("-") and args.utc
    assert report_cli.join_time_values(["--top", "-3"]) == ["--top", "-3"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--min-segment-seconds", "-1"], "report.min_segment_seconds"),
        (["--family-hysteresis", "1.5"], "report.family_hysteresis"),
        (["--title-item-seconds", "-5"], "report.title_item_seconds"),
        (["--since", "-7x"], "--since: '-7x' is not an ISO time"),
    ],
)
def test_report_cli_bad_as_run_flags_are_one_line(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    db = tmp_path / "empty.db"
    open_database(db).close()
    err = io.StringIO()
    status = report_cli.main(["--db", str(db), *flags], stdout=io.StringIO(), stderr=err)
    lines = err.getvalue().strip().splitlines()
    assert status == ExitStatus.USAGE, err.getvalue()
    assert len(lines) == 1 and message in lines[0], lines


#: Unix time of audio time 0 in the recordings made below.
T0_RECORDED = 1_750_000_000.0


def recorded_window(
    seq: int, start_s: float, content: str = "music", *, late_s: float = 0.0, **fields: Any
) -> TagUpdate:
    """One update of stream "fm" as the recorder stores it: a 3 s window from ``start_s``
    (rock 0.7, pop 0.1), published ``late_s`` after its last sample was captured."""
    p = np.array([0.7, 0.1], dtype=np.float32)
    end = T0_RECORDED + start_s + 3.0
    return TagUpdate(
        stream="fm", seq=seq, start_s=start_s, end_s=start_s + 3.0, model="m",
        tags=("rock", "pop"), probabilities=p, smoothed=p, capture_time=end, received_time=end,
        published_time=end + late_s, content=content,
        content_probabilities={"music": float(content == "music"), "speech": 0.0,
                               "silence": float(content == "silence")},
        level_dbfs=-20.0, **fields,
    )  # fmt: skip


def test_dead_air_cut_short_by_an_outage_ends_where_the_source_went_down(tmp_path: Path) -> None:
    from monitor.store import write_events, write_updates

    t0 = T0_RECORDED
    window = recorded_window

    # 20 s of music, 15 s of dead air, the source down for 30 s, then 20 s of music.
    starts = [0.5 * i for i in range(int(17 / 0.5) + 1)]  # windows of 0 .. 20 s
    starts += [20.0 + 0.5 * i for i in range(int(12 / 0.5) + 1)]  # silent windows 20 .. 35 s
    starts += [65.0 + 0.5 * i for i in range(int(17 / 0.5) + 1)]  # after the outage
    updates = [window(i, s, "silence" if 20 <= s < 65 else "music") for i, s in enumerate(starts)]
    events = [
        Event("fm", "silence_start", time=t0 + 30, at_s=30.0,
              fields={"silence_since_s": 20.0, "level_dbfs": -70.0, "threshold_dbfs": -50.0}),
        Event("fm", "source_down", time=t0 + 35, at_s=35.0, fields={"reason": "stall"}),
        Event("fm", "source_up", time=t0 + 65, at_s=65.0, fields={"outage_s": 30.0}),
        Event("fm", "silence_end", time=t0 + 65.1, at_s=65.1,
              fields={"duration_s": 45.1, "level_dbfs": -20.0}),
    ]  # fmt: skip
    db = tmp_path / "rec.db"
    connection = open_database(db)
    write_updates(connection, updates)
    write_events(connection, events)
    connection.close()
    log = load_asrun(db)
    assert [(r.kind, r.audio_start_s, r.audio_end_s) for r in log.entries][1:3] == [
        ("silence", 20.0, 35.0), ("outage", 35.0, 65.0),
    ]  # fmt: skip
    [incident] = log.dead_air
    assert (incident.audio_start_s, incident.audio_end_s) == (20.0, 35.0)
    assert incident.duration_s == 15.0


@pytest.mark.parametrize("shed", [True, False])
def test_audio_the_worker_shed_is_untagged_not_an_outage(tmp_path: Path, shed: bool) -> None:
    """A worker too far behind sheds windows: a hole in the timeline, but the audio came.

    The as-run log called every hole an outage of the source, so a station whose worker
    was overloaded (or that was not among its priority streams) got outages it never
    had.  Across this hole the stream's ``shed`` count goes up by the windows missing.
    """
    from monitor.store import read_updates, write_updates

    def window(seq: int, start_s: float, shed_so_far: int) -> TagUpdate:
        behind_s = 6.0 if shed_so_far else 0.1
        return recorded_window(
            seq, start_s, late_s=6.0, dropped=shed_so_far, shed=shed_so_far, behind_s=behind_s
        )

    # 20 s of music tagged, the windows from 17.5 s to 31.5 s shed (29), music again.
    first = [window(i, 0.5 * i, 0) for i in range(35)]  # windows 0 .. 17 s
    after = [window(64 + i, 32.0 + 0.5 * i, 29 if shed else 0) for i in range(35)]
    db = tmp_path / "rec.db"
    connection = open_database(db)
    write_updates(connection, first + after)
    [recorded] = [u for u in read_updates(connection) if u.seq == 64]
    connection.close()
    assert (recorded.shed, recorded.behind_s) == ((29, 6.0) if shed else (0, 0.1))
    log = load_asrun(db)
    hole = "untagged" if shed else "outage"  # without the count: audio lost on the way
    assert [(r.kind, r.audio_start_s, r.audio_end_s) for r in log.entries] == [
        ("music", 0.0, 20.0), (hole, 20.0, 32.0), ("music", 32.0, 52.0),
    ]  # fmt: skip
    assert log.entries[1].windows == 0 and not log.dead_air
    assert log.kind_seconds()[hole] == pytest.approx(12.0)
    from monitor.report import format_asrun

    header = format_asrun(log, dt.UTC).splitlines()[0]
    assert ("untagged 0.2 min" in header) == shed and ("untagged" in header) == shed, header


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        ([("speech", "")] * 40, [("music", "rock"), ("speech", "")]),  # a fade's tail, then talk
        ([("music", "rock")] * 40, [("music", "rock")]),  # a rest inside one piece
        ([("music", "jazz-blues-soul")] * 40, [("music", "rock"), ("music", "jazz-blues-soul")]),
    ],
)
def test_a_short_quiet_between_two_sounds_is_a_gap_not_a_row(
    after: list[tuple[str, str]], expected: list[tuple[str, str]]
) -> None:
    """7 s of quiet the worker did not report: the row before runs on to where sound resumes."""
    w = windows_of([("music", "rock")] * 40 + [("silence", "")] * 8 + after)
    resumes = w.end_s[47] + 0.25  # half a hop after the last quiet window
    rows = segment_stream(w, settings=AsRunSettings(min_segment_seconds=10.0))
    assert [(r.kind, r.family) for r in rows] == expected
    assert rows[0].audio_end_s == pytest.approx(resumes if len(rows) == 2 else w.end_s[-1])
    assert sum(r.windows for r in rows) == len(w)
    # With a shorter minimum, or reported as dead air, the quiet keeps its row.
    rows = segment_stream(w, settings=AsRunSettings(min_segment_seconds=3.0))
    assert [r.kind for r in rows][:3] == ["music", "silence", after[0][0]]
    reported = Event("s", "silence_start", time=1e9 + 25.0, at_s=25.0,
                     fields={"silence_since_s": w.start_s[40] - 0.25, "level_dbfs": -70.0,
                             "threshold_dbfs": -50.0})  # fmt: skip
    rows = segment_stream(w, [reported], settings=AsRunSettings(min_segment_seconds=10.0))
    assert [r.kind for r in rows][:3] == ["music", "silence", after[0][0]]


def test_silence_on_both_sides_of_an_outage_is_two_silences() -> None:
    """Music, dead air, the source lost for 20 s (a hole in the timeline), dead air, music."""
    before = [("music", "rock")] * 20 + [("silence", "")] * 15
    after = [("silence", "")] * 15 + [("music", "rock")] * 20
    first, second = windows_of(before), windows_of(after)
    shift = first.end_s[-1] + 20.0 - second.start_s[0]
    joined = StreamWindows(
        "s", np.concatenate([first.start_s, second.start_s + shift]),
        np.concatenate([first.end_s, second.end_s + shift]),
        np.concatenate([first.capture_time, second.capture_time + shift]),
        np.concatenate([first.content, second.content]),
        np.concatenate([first.p_music, second.p_music]),
        np.concatenate([first.p_speech, second.p_speech]),
        np.concatenate([first.change_at_s, second.change_at_s + shift]),
        np.concatenate([first.change_strength, second.change_strength]),
        np.concatenate([first.change_speech, second.change_speech]),
        np.concatenate([first.family_scores, second.family_scores]),
        np.concatenate([first.tag_probabilities, second.tag_probabilities]),
        first.tags,
    )  # fmt: skip
    rows = segment_stream(joined)
    assert [r.kind for r in rows] == ["music", "silence", "outage", "silence", "music"]
    outage = rows[2]
    assert (outage.audio_start_s, outage.audio_end_s) == (first.end_s[-1], first.end_s[-1] + 20.0)
    assert sum(r.windows for r in rows) == len(joined)


@pytest.mark.parametrize("talk_first", [False, True])
def test_a_link_placed_past_the_silence_beside_it_is_no_row(talk_first: bool) -> None:
    """A song's last bars heard as talk just before dead air (or its first just after).

    The short speech run has a strong change in each half, so it stays as a link; but
    the change at the silence's edge is the strongest one near its boundary with the
    song, so that boundary lands at or past the edge.  It holds no audio: no row, and
    no row ends before it starts (two scripted hours had such a row).
    """
    song = [("music", "rock")] * 40
    quiet = [("silence", "")] * 30
    labels = song + [("speech", "")] * 6 + quiet
    if talk_first:
        labels = quiet + [("speech", "")] * 6 + song
    w = windows_of(labels)
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0
    w.change_strength[w.content == "silence"] = np.nan
    talk = np.flatnonzero(w.content == "speech")
    if talk_first:
        edge = float(w.end_s[talk[0] - 1]) + 0.25  # where the quiet ends
        w.change_at_s[talk[:-1]], w.change_strength[talk[:-1]] = edge - 0.05, 3.6  # it starts
        w.change_at_s[talk[-1]], w.change_strength[talk[-1]] = w.centres[talk[-1]] + 0.25, 2.6
        w.p_speech[talk[-1]], w.p_music[talk[-1]] = 0.51, 0.49  # barely talk: flips early
    else:
        edge = float(w.start_s[talk[-1] + 1]) - 0.25  # where the quiet begins
        w.change_at_s[talk[0]], w.change_strength[talk[0]] = w.centres[talk[0]] - 0.25, 2.6
        w.change_at_s[talk[1:]], w.change_strength[talk[1:]] = edge, 3.6  # it stops
    rows = segment_stream(w)
    assert all(r.audio_end_s > r.audio_start_s for r in rows), rows
    expected = ["silence", "music"] if talk_first else ["music", "silence"]
    assert [r.kind for r in rows] == expected, rows
    assert sum(r.windows for r in rows) == len(w)
    assert rows[0].audio_end_s == pytest.approx(edge, abs=0.1)


def test_a_family_row_shorter_than_a_hop_joins_the_music_beside_it() -> None:
    """A song after talk: its first window still holds the end of the talk, so another
    family leads there, and placing the family change moves it to 0.18 s after the
    talk's end (a tuning programme, ``--clips 3`` seed 42, had such a row).  Less than
    a hop is no row the windows can tell; it joins the song, not the talk."""
    runs = [
        ("speech", "", 0, 45, None),
        ("music", "electronic", 46, 46, 23.0),
        ("music", "ambient", 47, 190, 23.18),
    ]
    pieces = asrun_lib._without_empty_rows(runs, [0.0, 23.0, 23.18, 97.0], 0.5)
    assert pieces == [("speech", "", 0.0, 23.0, 0, 45), ("music", "ambient", 23.0, 97.0, 46, 190)]
    # a hop or more stays a row
    runs[2] = ("music", "ambient", 47, 190, 23.5)
    pieces = asrun_lib._without_empty_rows(runs, [0.0, 23.0, 23.5, 97.0], 0.5)
    assert [p[1] for p in pieces] == ["", "electronic", "ambient"]


def _talk_and_songs(
    song_splice_s: float = 250.0, *, last_family: str = "pop", drums: bool = True
) -> tuple[StreamWindows, list[float]]:
    """Five links of talk, each followed by a song (20 s of talk, 30 s of song from 20 s
    on), then a sixth song straight after the fifth (rock), at ``song_splice_s``.

    The windows report a strong change of sound (3.0) at each splice with talk, a
    weaker one (2.0) at the splice between the two songs and, with ``drums``, a
    stronger one (2.5) a second into the second song, where its drums come in; the
    families' scores change 0.8 s after that splice (to ``last_family``).  Returns the
    windows and the songs' starts.
    """
    starts = [20.0, 70.0, 120.0, 170.0, 220.0, song_splice_s]
    families = ["rock", "pop", "rock", "pop", "rock", last_family]
    hop_s = 0.5
    n = int((song_splice_s + 30.0 - 3.0) / hop_s) + 1
    centres = np.arange(n) * hop_s + 1.5

    def label(centre: float) -> tuple[str, str]:
        if centre >= song_splice_s + 0.8:
            return ("music", families[-1])
        k = int(np.searchsorted(starts[:-1], centre, side="right")) - 1
        if k < 0 or (centre >= starts[k] + 30.0 and k < len(starts) - 2):
            return ("speech", "")
        return ("music", families[k])

    w = windows_of([label(float(c)) for c in centres], hop_s=hop_s)
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0
    w.change_speech[:] = 0.0
    splices = [(s, 3.0) for s in starts[:-1]] + [(s + 30.0, 3.0) for s in starts[:-2]]
    splices += [(song_splice_s, 2.0)] + ([(song_splice_s + 1.0, 2.5)] if drums else [])
    for at_s, strength in splices:
        near = (np.abs(w.centres - at_s) <= 0.5) & (strength >= w.change_strength)
        w.change_at_s[near], w.change_strength[near] = at_s, strength
    return w, starts


@pytest.mark.parametrize(
    ("title_offsets", "expected_s"),
    [
        ([0.0] * 6, 250.0),  # sent as each item starts
        ([2.0] * 6, 250.0),  # all 2 s late: the lag is measured and taken out
        ([2.0, -1.5, 0.9, -2.2, 1.3, 0.2], 251.0),  # at random: the sound decides
    ],
)
def test_titles_that_keep_time_with_the_audio_place_the_change_between_two_songs(
    title_offsets: list[float], expected_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    """Titles that keep time with the audio (the same delay at every start of a song
    after talk) put the change between two songs at the splice, although a drum entry
    a second later changes the sound more; titles that do not keep time move nothing
    the sound placed, and the drum entry wins."""
    w, starts = _talk_and_songs()
    titles = [
        _title(at_s + offset, f"song {k}")
        for k, (at_s, offset) in enumerate(zip(starts, title_offsets, strict=True))
    ]
    with caplog.at_level(logging.INFO, logger="monitor.asrun"):
        rows = segment_stream(w, titles)
    keeps_time = expected_s == starts[-1]
    said = f"titles on s {'keep' if keeps_time else 'do not keep'} time with the audio"
    assert said in caplog.text
    if keeps_time:
        lag = f"{title_offsets[0]:+.2f} s from the start of the music they name (5 title changes"
        assert lag in caplog.text
    assert [r.kind for r in rows] == ["speech", "music"] * 5 + ["music"], rows
    assert [r.audio_start_s for r in rows[1:10:2]] == pytest.approx(starts[:-1], abs=1e-9)
    assert [r.title for r in rows if r.kind == "music"] == [f"song {k}" for k in range(6)]
    assert rows[-1].audio_start_s == pytest.approx(expected_s, abs=1e-9), rows
    assert sum(r.windows for r in rows) == len(w)


def test_a_row_split_at_a_title_that_strays_from_the_audio_is_split_at_the_splice() -> None:
    """Two rock songs back to back (no change of family) under titles that stray from
    the audio (2.2 s early to 2 s late at the starts after talk): the row is split at
    the strongest change of sound within twice the titles' spread of the title, not
    at the title, which comes 1.2 s late."""
    w, starts = _talk_and_songs(last_family="rock", drums=False)
    offsets = [2.0, -1.5, 0.9, -2.2, 1.3, 1.2]
    titles = [
        _title(at_s + offset, f"song {k}")
        for k, (at_s, offset) in enumerate(zip(starts, offsets, strict=True))
    ]
    rows = segment_stream(w, titles)
    talk_then_song = [("speech", ""), ("music", "rock"), ("speech", ""), ("music", "pop")]
    expected = talk_then_song * 2 + [("speech", ""), ("music", "rock"), ("music", "rock")]
    assert [(r.kind, r.family) for r in rows] == expected, rows
    assert [r.audio_start_s for r in rows[1:10:2]] == pytest.approx(starts[:-1], abs=1e-9)
    assert [r.title for r in rows if r.kind == "music"] == [f"song {k}" for k in range(6)]
    assert rows[-1].audio_start_s == pytest.approx(starts[-1], abs=1e-9), rows
    assert sum(r.windows for r in rows) == len(w)


def test_the_report_says_how_each_streams_titles_keep_time() -> None:
    from monitor.report import format_asrun

    timings = (
        asrun_lib.TitleTiming("fm", pairs=13, lag_s=2.01, spread_s=0.01),
        asrun_lib.TitleTiming("am", pairs=13, lag_s=-0.2, spread_s=0.9),
        asrun_lib.TitleTiming("dab", pairs=4, lag_s=0.0, spread_s=0.0),
        asrun_lib.TitleTiming("web", pairs=40, lag_s=1.5, spread_s=0.1, against="changes"),
    )
    assert [t.in_time for t in timings] == [True, False, False, True]
    assert [t.split_reach_s for t in timings] == [0.0, pytest.approx(1.8), 0.0, 0.0]
    log = asrun_lib.AsRun((), (), {}, AsRunSettings(), DEFAULT_FAMILIES, timings)
    text = format_asrun(log, dt.UTC)
    assert "titles on fm keep time with the audio, +2.01 s from the start" in text
    assert "titles on am do not keep time with the audio (13 title changes" in text
    assert "split at the strongest change of sound within 1.8 s of it" in text
    assert "(13 title changes near a start of music after talk or silence;" in text
    dab = "titles on dab: 4 title changes near a start of music after talk or silence, too few"
    assert dab in text
    assert "titles on web keep time with the audio, +1.50 s" in text
    assert "(40 title changes near a change of sound;" in text


def test_a_music_only_streams_titles_are_timed_against_the_changes_of_sound() -> None:
    """Eight songs back to back, no talk: titles 2 s late are timed against the strongest
    change of sound near each (the splice, 2.0), so the change into the last song,
    whose drums come in a second after its splice (2.5) and whose family the scores
    hear 0.8 s late, is placed at the splice."""
    songs, song_s, hop_s = 8, 30.0, 0.5
    starts = [k * song_s for k in range(songs)]
    centres = np.arange(int((songs * song_s - 3.0) / hop_s) + 1) * hop_s + 1.5
    families = ["rock", "pop"]
    w = windows_of(
        [("music", families[int((c - 0.8) // song_s) % 2]) for c in centres], hop_s=hop_s
    )
    w.change_at_s[:] = w.centres
    w.change_strength[:] = 1.0
    w.change_speech[:] = 0.0
    for at_s, strength in [(s, 2.0) for s in starts[1:]] + [(starts[-1] + 1.0, 2.5)]:
        near = (np.abs(w.centres - at_s) <= 0.5) & (strength >= w.change_strength)
        w.change_at_s[near], w.change_strength[near] = at_s, strength
    titles = [_title(at_s + 2.0, f"song {k}") for k, at_s in enumerate(starts)]
    rows, timing = asrun_lib._segment_stream(w, titles, AsRunSettings(), DEFAULT_FAMILIES)
    assert timing is not None and timing.against == "changes" and timing.in_time, timing
    assert timing.lag_s == pytest.approx(2.0)
    assert [r.kind for r in rows] == ["music"] * songs
    assert [r.title for r in rows] == [f"song {k}" for k in range(songs)]
    assert [r.audio_start_s for r in rows[1:]] == pytest.approx(starts[1:], abs=1e-9), rows
