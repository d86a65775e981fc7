"""The as-run log of a scripted programme: items played against rows found (issue 14).

    .venv/bin/python -m benchmarks.asrun_hour [--minutes 60] [--music DIR] [--db PATH]
    .venv/bin/python -m benchmarks.asrun_hour --tuning [--minutes 15] [--rap P]
        [--short-talk LOW HIGH] [--clips N] [--back-to-back P] [--db PATH]
    .venv/bin/python -m benchmarks.asrun_hour --replay --db PATH [--before REV]
        [--title-lag S] [--title-jitter J]

Builds a programme from real music (``../shared/music/gtzan``, evaluation use
only: one to three clips of one genre per music item, consecutive items of
different families), espeak-ng talk, dead air (hiss at -70 dBFS, longer than
``silence_seconds``) and one source outage (a sequence gap with the streamer's
``source_down``/``source_up``), each music item announced by a ``now_playing``
title.  It streams the programme through a real in-process worker (ONNX
Runtime backend; audio sent as fast as the worker takes it, at most 30 s
ahead of its updates), records the updates and events with a real
:class:`monitor.recorder.Recorder`, builds the as-run log
(:func:`monitor.asrun.load_asrun`) and prints:

* items played against rows found, and whether the kinds follow each other as played;
* boundary errors (found minus played, seconds), median and max, by kind of change;
* per kind played, the items whose longest-overlapping row is of their kind, and
  the music items whose family with the most seconds is the one their genre maps to;
* the baseline measured in the same run: the report's dominant-tag segments
  (:func:`monitor.report.build_report`) per item played;
* the live ``content_change`` events' ``at_s`` against the played music <-> talk
  changes: the recorded updates replayed through the worker's
  :class:`inference.content.ContentStream`, placed as now
  (:func:`model.placement.place_content_change`) and, as the baseline in the same
  run, at the middle of the new content's first window (the rule before).

``--tuning`` builds the same kind of programme from audio that may be tuned on
(``../shared`` is for evaluation only): Debian's wesnoth music (orchestral
excerpts cut mid-phrase, as GTZAN's clips are), the content classifier's
synthetic music (drums, bass and chords; a dense pop-like bed with synthetic
singing) and espeak-ng talk in several English voices and speeds, with room,
line and noise roughening (:mod:`training.tune_content`'s generators).  Its
music items have no genre, so only kinds and boundaries are measured; the
placement rules of :mod:`monitor.asrun` were chosen on it.  ``--rap P`` makes a
share ``P`` of its music items espeak-ng "rapping" over a loud beat, which the
content classifier often hears as talk (as it does real rap): the programme for
the rules that must cope with a song heard as talk.  ``--short-talk LOW HIGH``
makes the links LOW to HIGH seconds long, shorter than ``min_segment_seconds``
if so chosen.  ``--clips N`` makes each music item 1 to N pieces of one source
spliced hard, as the hour's items are 1-3 GTZAN clips of one genre.
``--back-to-back P`` (either programme) follows a share ``P`` of the music items
straight by the next song, with its title, without the talk or dead air between:
the hour otherwise has one such change, after the outage, and the tuning
programme none.  Their errors are the table's ``family change`` line (in the
tuning programme, whose music has no genres: any change between two songs).

``--title-lag S`` and ``--title-jitter J`` measure a station whose titles do
not come as its items start: each ``now_playing`` of the recording (of a copy;
with ``--replay`` too) is moved by ``S`` plus a uniform draw from ``-J .. J``
seconds, and the as-run log says whether it found the titles keeping time with
the audio (``monitor.asrun``'s log line).

``--db PATH`` keeps the recording and writes what was played next to it
(``PATH.played.json``); ``--replay --db PATH`` measures that recording again
without streaming, and ``--before REV`` adds the boundary errors of
``monitor/asrun.py`` as it was at git revision ``REV`` on the same windows
(``--replay --db hour.db --before b857ff3^``: the placement before and after
the music <-> talk rule, side by side).

Skips (exit 0) when the music folder (wesnoth's for ``--tuning``) or espeak-ng is
absent.  An hour takes 5-9 minutes on the 2-core AMD EPYC (7-12x real time);
``--minutes`` shortens it.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.common import ROOT, cpu_description, load_description, synthetic_music

if TYPE_CHECKING:
    from monitor.asrun import AsRunEntry

MUSIC = Path(__file__).resolve().parents[2] / "shared" / "music"
SR = 16000
BLOCK = 1600
#: The programme's music genres (GTZAN labels) and the family each should be found as.
GENRE_FAMILY = {
    "metal": "metal",
    "rock": "rock",
    "pop": "pop",
    "hiphop": "hip-hop",
    "jazz": "jazz-blues-soul",
    "country": "folk-country",
    "classical": "ambient",
    "blues": "jazz-blues-soul",
}
TALK = (
    "You are listening to tagstream radio. Coming up after the news, the weather for the "
    "weekend and the traffic on the ring road, where the roadworks continue until Friday.",
    "That was a favourite of ours. Thank you for all the messages this evening, keep them "
    "coming, and remember the phone lines are open until midnight.",
)
#: Audio sent at most this far ahead of the worker's latest update.
AHEAD_S = 30.0
#: One hop of the worker's windows here (config.toml's 0.5 s, in whole 16 ms frames).
HOP_S = 0.496


def read_clip(path: Path) -> np.ndarray:
    import soundfile
    import soxr

    y, rate = soundfile.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    return soxr.resample(y, rate, SR).astype(np.float32)


def espeak(text: str) -> np.ndarray:
    import soundfile
    import soxr

    wav = subprocess.run(
        ["espeak-ng", "-s", "160", "--stdout", text], capture_output=True, check=True, timeout=60
    ).stdout
    y, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    y = 0.5 * soxr.resample(y, rate, SR).astype(np.float32)
    return y + (np.random.default_rng(5).standard_normal(len(y)) * 3e-4).astype(np.float32)


def item(kind: str, family: str = "", *, title: str = "", **more: object) -> dict:
    """One played item: {kind, family, title} and its ``audio`` (an outage: its ``seconds``)."""
    return {"kind": kind, "family": family, "title": title, **more}


def programme(
    music: Path, minutes: float, rng: np.random.Generator, back_to_back: float = 0.0
) -> list[dict]:
    """Items in order: {kind, family, title, audio} (an outage item has no audio).

    ``back_to_back``: the share of music items followed straight by the next song
    (of another family), without the talk or dead air that would follow them.
    """
    by_genre: dict[str, list[Path]] = {}
    with (music / "labels.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["label"] in GENRE_FAMILY and row["path"].startswith("gtzan/"):
                by_genre.setdefault(row["label"], []).append(music / row["path"])
    genres = sorted(by_genre)
    talk_i = 0

    def next_items(items: list[dict]) -> list[dict]:
        nonlocal talk_i
        genre = genres[int(rng.integers(len(genres)))]
        if items and items[-1]["kind"] == "music" and GENRE_FAMILY[genre] == items[-1]["family"]:
            return []  # never two items of one family in a row
        clips = rng.choice(len(by_genre[genre]), size=int(rng.integers(1, 4)), replace=False)
        audio = np.concatenate([read_clip(by_genre[genre][int(i)]) for i in clips])
        new = [item("music", GENRE_FAMILY[genre], title=f"{genre} {len(items)}", audio=audio)]
        if back_to_back > 0 and rng.random() < back_to_back:
            return new
        step = (len(items) + 1) % 4
        if step == 1:
            new.append(item("speech", audio=espeak(TALK[talk_i % len(TALK)])))
            talk_i += 1
        elif step == 3:
            new.append(dead_air(rng))
        return new

    return running_order(minutes, next_items)


def dead_air(rng: np.random.Generator) -> dict:
    """12-20 s of hiss at -70 dBFS: longer than ``silence_seconds``, so dead air."""
    hiss = rng.standard_normal(int(float(rng.uniform(12, 20)) * SR)) * 10 ** (-70 / 20)
    return item("silence", audio=hiss.astype(np.float32))


def running_order(minutes: float, next_items: Callable[[list[dict]], list[dict]]) -> list[dict]:
    """``next_items(items so far)`` until ``minutes`` of audio, with one 30 s source outage
    once half of it is played (never the last item)."""
    items: list[dict] = []
    total_s, outage_done = 0.0, False
    target_s = minutes * 60.0
    while total_s < target_s:
        new = next_items(items)
        items.extend(new)
        total_s += sum(len(i["audio"]) for i in new) / SR
        if not outage_done and target_s / 2 <= total_s < target_s:
            items.append(item("outage", seconds=30.0))
            outage_done = True
    if not outage_done:
        items.insert(len(items) - 1, item("outage", seconds=30.0))
    return items


#: espeak-ng voices of the tuning talk (English, as the evaluation's presenter).
TUNING_VOICES = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en+f2", "en+m3", "en-us+f3")


def tuning_music(
    rng: np.random.Generator, rap: float = 0.0, *, kind: str | None = None
) -> tuple[str, np.ndarray]:
    """One music item that may be tuned on: (source, audio), 20-60 s.

    With probability ``rap`` it is espeak-ng "rapping" over a loud beat (the content
    classifier's training source it is weakest on: often heard as speech).  ``kind``
    ("rap", "wesnoth", "synthetic" or "song"): that source instead of one by chance.
    """
    from training.tune_content import _read_excerpt, dense_bed, singing, wesnoth_tracks

    if kind == "rap" or (kind is None and rap > 0 and rng.random() < rap):
        return "rap", tuning_rap(rng)
    seconds = float(rng.uniform(20, 60))
    if kind is None:
        kind = str(rng.choice(["wesnoth", "wesnoth", "wesnoth", "synthetic", "song"]))
    tracks = wesnoth_tracks()
    if kind == "wesnoth":
        y = _read_excerpt(tracks[int(rng.integers(len(tracks)))], seconds, rng)
        y = y / (np.abs(y).max() + 1e-9) * float(rng.uniform(0.3, 0.9))
    elif kind == "synthetic":
        y = 0.5 * synthetic_music(seconds, rng=rng)
    else:  # a dense bed with a synthetic voice singing over it
        track = _read_excerpt(tracks[int(rng.integers(len(tracks)))], seconds, rng)
        bed = dense_bed(track, seconds, rng)
        voice = singing(seconds, rng)
        y = bed / (np.abs(bed).max() + 1e-9) + float(rng.uniform(0.3, 0.8)) * voice
        y = 0.7 * y / (np.abs(y).max() + 1e-9)
    return str(kind), np.asarray(y, dtype=np.float32)


def tuning_rap(rng: np.random.Generator) -> np.ndarray:
    """espeak-ng sentences, fast, over a dense bed at -3 to +1 dB: 20-60 s of "rap"."""
    from training.tune_content import _mix, _read_excerpt, dense_bed, wesnoth_tracks

    seconds = float(rng.uniform(20, 60))
    voice_audio = _read_aloud(rng, seconds, rates=(180, 240), gaps=None)[: int(seconds * SR)]
    tracks = wesnoth_tracks()
    track = _read_excerpt(tracks[int(rng.integers(len(tracks)))], seconds, rng)
    y = _mix(voice_audio, dense_bed(track, seconds, rng), float(rng.uniform(-3, 1)))
    return (0.7 * y / (np.abs(y).max() + 1e-9)).astype(np.float32)


def tuning_talk(rng: np.random.Generator, short: tuple[float, float] | None = None) -> np.ndarray:
    """A presenter's link that may be tuned on: espeak-ng, whole sentences for 10-30 s.

    The voice, its speed and pitch, the room and the line are chosen by chance.
    ``short``: a link of that many seconds instead (low, high), cut mid-sentence.
    """
    from training.tune_content import _roughen

    seconds = float(rng.uniform(*(short or (10, 30))))
    y = _roughen(_read_aloud(rng, seconds, rates=(140, 190), gaps=(0, 4)), rng)
    if short:
        y = y[: int(seconds * SR)]
    return (0.5 * y / (np.abs(y).max() + 1e-9)).astype(np.float32)


def _read_aloud(
    rng: np.random.Generator,
    seconds: float,
    *,
    rates: tuple[int, int],
    gaps: tuple[int, int] | None,
) -> np.ndarray:
    """espeak-ng reading whole licence-text sentences for at least ``seconds``.

    One voice of :data:`TUNING_VOICES`, a words/min rate drawn from ``rates`` and a
    pitch, all by chance; each sentence's word gap (10 ms units) is drawn from
    ``gaps``, or 0 when ``gaps`` is None.
    """
    from training.tune_content import _sentences
    from training.tune_content import espeak as speak

    parts: list[np.ndarray] = []
    voice = str(rng.choice(TUNING_VOICES))
    rate, pitch = int(rng.integers(*rates)), int(rng.integers(30, 70))
    while sum(len(p) for p in parts) < seconds * SR:
        [text] = _sentences(rng, 1)
        gap = int(rng.integers(*gaps)) if gaps is not None else 0
        parts.append(speak(text, voice=voice, rate=rate, pitch=pitch, gap=gap))
    return np.concatenate(parts)


def tuning_programme(
    minutes: float,
    rng: np.random.Generator,
    rap: float = 0.0,
    short_talk: tuple[float, float] | None = None,
    clips: int = 1,
    back_to_back: float = 0.0,
) -> list[dict]:
    """:func:`programme`'s running order from audio that may be tuned on (no genres).

    ``rap``: the share of music items that are :func:`tuning_rap`; ``short_talk``: the
    links' lengths in seconds (:func:`tuning_talk`); ``clips``: each music item is 1 to
    ``clips`` pieces of one source spliced hard, as :func:`programme` plays 1-3 GTZAN
    clips of one genre under one title; ``back_to_back``: as :func:`programme`'s.
    """

    def next_items(items: list[dict]) -> list[dict]:
        source, audio = tuning_music(rng, rap)
        more = int(rng.integers(0, clips)) if clips > 1 else 0  # the same draws as before
        for _ in range(more):
            audio = np.concatenate([audio, tuning_music(rng, rap, kind=source)[1]])
        new = [item("music", title=f"{source} {len(items)}", audio=audio)]
        if back_to_back > 0 and rng.random() < back_to_back:
            return new
        step = (sum(1 for i in items if i["kind"] == "music") + 1) % 3
        if step in (1, 2):  # talk after two music items in three: the edges being tuned
            new.append(item("speech", audio=tuning_talk(rng, short_talk)))
        else:
            new.append(dead_air(rng))
        return new

    return running_order(minutes, next_items)


def fade_out(items: list[dict], seconds: float) -> None:
    """Fade out the last ``seconds`` of each music item that talk follows, as a presenter would.

    The gain falls as the square of a line from 1 to 0.02 (to -68 dB), where the talk cuts in.
    """
    for this, following in itertools.pairwise(items):
        if this["kind"] == "music" and following["kind"] == "speech" and seconds > 0:
            audio = this["audio"].copy()
            n = min(len(audio), int(seconds * SR))
            audio[len(audio) - n :] *= (np.linspace(1.0, 0.02, n) ** 2).astype(np.float32)
            this["audio"] = audio


def play(items: list[dict], db: Path) -> list[tuple[str, str, float, float]]:
    """Stream the items through a real worker into a recording; return what was played."""
    import zmq

    from config import RecordConfig, load_config
    from inference import Worker
    from model import load_tagger
    from monitor.recorder import Recorder
    from protocol import (
        AudioFrame,
        EndOfStream,
        Event,
        decode_published,
        encode_audio,
        encode_end,
        encode_event,
    )  # fmt: skip

    cfg = load_config(
        overrides={
            "inference.input_endpoint": "tcp://127.0.0.1:*",
            "inference.publish_endpoint": "tcp://127.0.0.1:*",
            "model.backend": "onnxruntime",
        }
    )
    tagger = load_tagger("MSD_musicnn", backend="onnxruntime")
    tagger.warm_up()
    worker = Worker(cfg, tagger=tagger)
    worker.start()
    worker.run_in_thread()
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(worker.input_endpoint)
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(worker.publish_endpoint)
    recorder = Recorder(
        db, [worker.publish_endpoint], settings=RecordConfig(commit_interval_seconds=0.5)
    )
    thread = threading.Thread(target=recorder.run, daemon=True)
    thread.start()
    # Capture times as a file sent faster than real time has them: ahead of the worker's
    # clock, so that a worker slower than real time here never sheds windows as stale.
    stream, t0, seq, position = "fm:hour", time.time() + 7200.0, 0, 0.0
    latest_end = [0.0]
    gaps: list[tuple[float, float]] = []  # (audio time it ends, seconds): no windows in it

    def drain(wait_ms: int) -> None:
        while sub.poll(wait_ms):
            message = decode_published(sub.recv_multipart())
            if message.stream == stream and hasattr(message, "end_s"):
                latest_end[0] = max(latest_end[0], message.end_s)
            wait_ms = 0

    # Join: probe streams until both the recorder and our SUB socket see an update.
    for attempt in range(200):
        probe = AudioFrame(
            f"probe:{attempt}", 0, t0, SR, 1, "f32", np.zeros((int(3.2 * SR), 1), np.float32)
        )
        push.send_multipart(encode_audio(probe))
        push.send_multipart(encode_end(EndOfStream(stream=f"probe:{attempt}", seq=1)))
        time.sleep(0.3)
        if recorder.received and sub.poll(0):
            break
    drain(0)

    def send(samples: np.ndarray) -> None:
        nonlocal seq, position
        for offset in range(0, len(samples), BLOCK):
            while position - latest_end[0] > AHEAD_S + sum(
                seconds for end, seconds in gaps if end > latest_end[0]
            ):
                drain(200)
            block = np.ascontiguousarray(samples[offset : offset + BLOCK, None])
            frame = AudioFrame(stream, seq, t0 + position, SR, 1, "f32", block)
            push.send_multipart(encode_audio(frame))
            seq += 1
            position += len(block) / SR
            drain(0)

    def event(kind: str, **fields: str | float) -> None:
        message = Event(stream, kind, time=t0 + position, at_s=position, fields=fields)
        push.send_multipart(encode_event(message, topic=False))

    played = []
    for item in items:
        start = position
        if item["kind"] == "outage":
            event("source_down", reason="benchmark outage")
            gap_blocks = round(item["seconds"] * SR / BLOCK)
            seq += gap_blocks
            position += gap_blocks * BLOCK / SR
            gaps.append((position, gap_blocks * BLOCK / SR))
            played.append(("outage", "", start, position))
            event("source_up", outage_s=item["seconds"])
            continue
        audio = item["audio"][: len(item["audio"]) // BLOCK * BLOCK]  # whole blocks
        if item["title"]:
            event("now_playing", title=item["title"])
        send(audio)
        played.append((item["kind"], item["family"], start, position))
    push.send_multipart(encode_end(EndOfStream(stream=stream, seq=seq)))
    while latest_end[0] < position - 3.6:
        drain(500)
    time.sleep(2.0)
    recorder.stop()
    thread.join()
    recorder.close()
    push.close(linger=0)
    sub.close(linger=0)
    context.term()
    worker.close()
    return played


def boundary_errors(
    played: list[tuple[str, str, float, float]], starts: np.ndarray
) -> dict[str, list[float]]:
    """Each played change against the nearest row start (found minus played, seconds), by kind."""
    errors: dict[str, list[float]] = {}
    for before, after in itertools.pairwise(played):
        kinds = {before[0], after[0]}
        what = (
            "silence/outage edge" if kinds & {"silence", "outage"}
            else f"{before[0]} -> {after[0]}" if kinds == {"music", "speech"}
            else "family change"
        )  # fmt: skip
        errors.setdefault(what, []).append(nearest_error(starts, after[2]))
    talk = errors.get("music -> speech", []) + errors.get("speech -> music", [])
    if talk:
        errors["music <-> speech"] = talk
    return errors


def nearest_error(starts: np.ndarray, true_s: float) -> float:
    """The row start nearest ``true_s`` minus ``true_s`` (seconds; NaN without rows)."""
    return float(starts[np.argmin(np.abs(starts - true_s))]) - true_s if starts.size else np.nan


def changes_missed(
    played: list[tuple[str, str, float, float]], starts: np.ndarray
) -> list[tuple[str, float]]:
    """The music <-> talk changes whose nearest row start is more than one hop away.

    Each: ("item K at T s: music -> speech", found minus played in seconds).
    """
    out = []
    for k, (before, after) in enumerate(itertools.pairwise(played), start=1):
        if {before[0], after[0]} != {"music", "speech"}:
            continue
        error = nearest_error(starts, after[2])
        if abs(error) > HOP_S + 1e-9:
            out.append((f"item {k} at {after[2]:8.2f} s: {before[0]} -> {after[0]}", error))
    return out


def items_found(
    played: list[tuple[str, str, float, float]], rows: Sequence[AsRunEntry]
) -> dict[str, tuple[int, int]]:
    """Per kind played: (items whose longest-overlapping row is of their kind, items).

    Music also gets ``"music family"``: items whose music family with the most seconds
    is the one their genre maps to (not for the tuning programme, whose music has none).
    """
    found: dict[str, list[int]] = {}
    for kind, family, start, end in played:
        seconds: dict[tuple[str, str], float] = {}
        for r in rows:
            overlap = min(end, r.audio_end_s) - max(start, r.audio_start_s)
            if overlap > 0:
                key = (r.kind, r.family if r.kind == "music" else "")
                seconds[key] = seconds.get(key, 0.0) + overlap
        by_kind: dict[str, float] = {}
        for (k, _), s in seconds.items():
            by_kind[k] = by_kind.get(k, 0.0) + s
        best_kind = max(by_kind, key=by_kind.__getitem__, default="")
        tally = found.setdefault(kind, [0, 0])
        tally[0] += best_kind == kind
        tally[1] += 1
        if kind == "music" and family:
            music = {f: s for (k, f), s in seconds.items() if k == "music"}
            best = max(music, key=music.__getitem__, default="")
            tally = found.setdefault("music family", [0, 0])
            tally[0] += best == family
            tally[1] += 1
    return {k: (v[0], v[1]) for k, v in found.items()}


def print_items_found(
    played: list[tuple[str, str, float, float]], rows: Sequence[AsRunEntry]
) -> None:
    print("items found as played (the row kind with the most of the item's seconds):")
    for kind, (right, total) in items_found(played, rows).items():
        print(f"  {kind:14s} {right:4d} of {total:4d}")
    print()


def flip_shares(db: Path, played: list[tuple[str, str, float, float]]) -> dict[str, list[float]]:
    """Speech share of the window where the content classifier's decision flips, per change.

    For each played music <-> talk change at ``T``, the windows within two window
    lengths of it that lie inside the two items: where ``p_speech / (p_music +
    p_speech)`` crosses 0.5 (best split and interpolation, as :mod:`model.placement`
    finds it), and how much of the window centred there is speech.  What
    :data:`model.placement.SPEECH_SHARE_AT_FLIP` was measured with.
    """
    from model.placement import place, speech_vs_music
    from monitor.asrun import read_stream_windows
    from monitor.store import open_database

    connection = open_database(db, read_only=True)
    try:
        timelines = read_stream_windows(connection, "fm:hour")
    finally:
        connection.close()
    shares: dict[str, list[float]] = {}
    for windows in timelines:
        window_s = float(np.median(windows.end_s - windows.start_s))
        share = speech_vs_music(windows)
        for before, after in itertools.pairwise(played):
            if {before[0], after[0]} != {"music", "speech"}:
                continue
            change_s = after[2]
            near = np.flatnonzero(
                (windows.end_s > change_s - 2 * window_s)
                & (windows.start_s < change_s + 2 * window_s)
                & (windows.start_s >= before[2])
                & (windows.end_s <= after[3])
            )
            if near.size < 4 or not np.all(np.diff(near) == 1):
                continue
            margin = 0.5 - share if before[0] == "music" else share - 0.5
            _, flip_s = place(margin, int(near[0]), int(near[-1]), windows.centres)
            after_change = (flip_s + window_s / 2 - change_s) / window_s
            speech = after_change if after[0] == "speech" else 1.0 - after_change
            shares.setdefault(f"{before[0]} -> {after[0]}", []).append(speech)
    return shares


def live_change_errors(
    db: Path, played: list[tuple[str, str, float, float]]
) -> dict[str, list[float]]:
    """The live ``content_change`` events' ``at_s`` against each played music <-> talk
    change (found minus played, seconds; the nearest event to the same content), with
    the recorded updates replayed through :class:`inference.content.ContentStream`:
    placed as the worker places them, and at the middle of the new content's first
    window, as it did before (the baseline)."""
    from inference.content import ContentSettings, ContentStream
    from monitor.store import open_database, read_updates

    class FirstWindow(ContentStream):
        def _change_at(self, *, to_speech: bool) -> float:
            return self._candidate_since

    connection = open_database(db, read_only=True)
    try:
        updates = sorted(read_updates(connection, stream="fm:hour"), key=lambda u: u.start_s)
    finally:
        connection.close()
    errors: dict[str, list[float]] = {}
    rules = {
        "first window's middle (before)": FirstWindow,
        "placed (model.placement)": ContentStream,
    }
    for rule, kind in rules.items():
        stream = kind("fm:hour", ContentSettings())
        found = [e for u in updates if (e := stream.content_event(u, now=0.0)) is not None]
        out = errors.setdefault(rule, [])
        for before, after in itertools.pairwise(played):
            if {before[0], after[0]} == {"music", "speech"}:
                at = np.array([e.at_s for e in found if e.fields["content"] == after[0]])
                out.append(nearest_error(at, after[2]))
    return errors


def move_titles(db: Path, lag_s: float, jitter_s: float, rng: np.random.Generator) -> Path:
    """A copy of recording ``db`` with each ``now_playing`` ``lag_s`` plus a uniform draw
    from ``-jitter_s .. jitter_s`` seconds later (audio and wall-clock time; none before
    the audio's start)."""
    import sqlite3

    copy = Path(tempfile.mkdtemp(prefix="asrun-titles-")) / db.name
    source, target = sqlite3.connect(db), sqlite3.connect(copy)
    try:
        source.backup(target)
        titles = list(target.execute("SELECT id, at_s FROM events WHERE event = 'now_playing'"))
        moves = lag_s + rng.uniform(-jitter_s, jitter_s, len(titles))
        moved = [
            max(0.0, at_s + float(m)) - at_s for (_, at_s), m in zip(titles, moves, strict=True)
        ]
        target.executemany(
            "UPDATE events SET at_s = at_s + ?, time = time + ? WHERE id = ?",
            [(m, m, i) for m, (i, _) in zip(moved, titles, strict=True)],
        )
        target.commit()
    finally:
        source.close()
        target.close()
    return copy


def asrun_at(revision: str) -> ModuleType:
    """``monitor/asrun.py`` as it was at a git ``revision`` of this checkout, as its own module."""
    source = subprocess.run(
        ["git", "show", f"{revision}:monitor/asrun.py"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    name = "asrun_at_" + "".join(c if c.isalnum() else "_" for c in revision)
    module = ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:monitor/asrun.py", "exec"), module.__dict__)
    return module


def print_errors(errors: dict[str, list[float]]) -> None:
    """The boundary errors' table: n, median, largest, and how many within 1 hop, 2 hops, 3 s."""
    print(
        f"{'boundary error (found - played)':38s}{'n':>5s}{'median s':>10s}{'|max| s':>10s}"
        f"{'<= 1 hop':>10s}{'<= 2 hops':>10s}{'<= 3 s':>8s}"
    )
    hop = HOP_S
    for what, values in errors.items():
        v = np.abs(np.array(values))
        print(f"{what:38s}{len(v):>5d}{np.median(values):>10.2f}{np.max(v):>10.2f}"
              f"{np.mean(v <= hop + 1e-9) * 100:>9.0f}%{np.mean(v <= 2 * hop + 1e-9) * 100:>9.0f}%"
              f"{np.mean(v <= 3.0) * 100:>7.0f}%")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.asrun_hour", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the programme (60)")
    parser.add_argument("--music", type=Path, default=MUSIC, help="the shared music folder")
    parser.add_argument(
        "--tuning",
        action="store_true",
        help="a programme that may be tuned on (wesnoth music, espeak-ng), not ../shared",
    )
    parser.add_argument(
        "--db", type=Path, help="keep the recording here (default: a temporary file)"
    )
    parser.add_argument(
        "--replay",
        action="store_true",
        help="measure the recording --db (and its .played.json) again without streaming",
    )
    parser.add_argument(
        "--before",
        metavar="REV",
        help="also measure monitor/asrun.py as at this git revision on the same recording",
    )
    parser.add_argument(
        "--fade-out",
        type=float,
        default=0.0,
        metavar="S",
        help="fade out the last S seconds of each music item before talk (0: cut)",
    )
    parser.add_argument(
        "--rap",
        type=float,
        default=0.0,
        metavar="P",
        help="--tuning: make this share of the music items espeak-ng rapping over a loud beat",
    )
    parser.add_argument(
        "--short-talk",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="--tuning: links of LOW to HIGH seconds, cut mid-sentence (default 10-30 s, whole "
        "sentences)",
    )
    parser.add_argument(
        "--clips",
        type=int,
        default=1,
        metavar="N",
        help="--tuning: each music item 1 to N pieces of one source spliced hard, as the hour "
        "splices 1-3 GTZAN clips (1)",
    )
    parser.add_argument(
        "--back-to-back",
        type=float,
        default=0.0,
        metavar="P",
        help="follow this share of the music items straight by the next song, without talk "
        "or dead air between (0)",
    )
    parser.add_argument(
        "--title-lag",
        type=float,
        default=0.0,
        metavar="S",
        help="measure with each title S seconds after its item starts (0)",
    )
    parser.add_argument(
        "--title-jitter",
        type=float,
        default=0.0,
        metavar="J",
        help="and a further -J .. J seconds, drawn for each title (0)",
    )
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument(
        "--list",
        action="store_true",
        help="also list the items played, the rows found and the music <-> talk changes more "
        "than one hop off",
    )
    args = parser.parse_args(argv)
    if args.replay and args.db is None:
        parser.error("--replay needs --db PATH (a recording this benchmark kept)")
    if not 0.0 <= args.rap <= 1.0 or (args.rap and not args.tuning):
        parser.error("--rap P needs --tuning and 0 <= P <= 1")
    if args.short_talk and not (args.tuning and 0.5 <= args.short_talk[0] <= args.short_talk[1]):
        parser.error("--short-talk LOW HIGH needs --tuning and 0.5 <= LOW <= HIGH")
    if args.clips < 1 or (args.clips > 1 and not args.tuning):
        parser.error("--clips N needs --tuning and N >= 1")
    if not 0.0 <= args.back_to_back < 1.0:
        parser.error("--back-to-back P needs 0 <= P < 1")
    if not args.title_jitter >= 0.0:
        parser.error("--title-jitter J needs J >= 0")
    from monitor.asrun import load_asrun
    from monitor.report import build_report

    print(cpu_description())
    print(load_description())
    if args.replay:
        db = args.db
        sidecar = json.loads(db.with_name(db.name + ".played.json").read_text())
        played = [tuple(p) for p in sidecar["played"]]
        took, tuning = float(sidecar["took_s"]), bool(sidecar["tuning"])
    else:
        if shutil.which("espeak-ng") is None:
            print("skipped: espeak-ng is not installed (apt-get install espeak-ng)")
            return 0
        rng = np.random.default_rng(args.seed)
        tuning = args.tuning
        if tuning:
            from tagstream.errors import UnavailableError
            from training.tune_content import wesnoth_tracks

            try:
                wesnoth_tracks()
            except UnavailableError as exc:
                print(f"skipped: {exc}")
                return 0
            items = tuning_programme(
                args.minutes,
                rng,
                args.rap,
                tuple(args.short_talk) if args.short_talk else None,
                args.clips,
                args.back_to_back,
            )
        else:
            if not (args.music / "labels.csv").is_file():
                print(f"skipped: {args.music} is absent (real-music checks need ../shared/music)")
                return 0
            items = programme(args.music, args.minutes, rng, args.back_to_back)
        fade_out(items, args.fade_out)
        folder = Path(tempfile.mkdtemp(prefix="asrun-hour-"))
        db = args.db or folder / "hour.db"
        started = time.monotonic()
        played = play(items, db)
        took = time.monotonic() - started
        sidecar = {"played": played, "took_s": took, "tuning": tuning}
        db.with_name(db.name + ".played.json").write_text(json.dumps(sidecar))
    if args.title_lag or args.title_jitter:
        db = move_titles(db, args.title_lag, args.title_jitter, np.random.default_rng(args.seed))
        print(f"titles moved by {args.title_lag:+.2f} s +- {args.title_jitter:.2f} s: {db}")
    said = logging.StreamHandler(sys.stdout)
    said.setFormatter(logging.Formatter("as-run log: %(message)s"))
    logging.getLogger("monitor.asrun").addHandler(said)
    logging.getLogger("monitor.asrun").setLevel(logging.INFO)
    log = load_asrun(db, stream="fm:hour")
    rows = log.entries
    baseline = [s for s in build_report(db, stream="fm:hour").segments]

    # Boundaries: each played boundary against the nearest row boundary.
    starts = np.array([r.audio_start_s for r in rows[1:]])
    errors = boundary_errors(played, starts)
    same_sequence = [(r.kind, r.family if r.kind == "music" else "") for r in rows] == [
        (k, f) for k, f, *_ in played
    ]
    kinds_match = [r.kind for r in rows] == [k for k, *_ in played]
    audio_s = played[-1][3]
    print()
    counts = ", ".join(
        f"{k} {sum(1 for p in played if p[0] == k)}"
        for k in ("music", "speech", "silence", "outage")
    )
    what = "tuning programme" if tuning else "programme"
    print(f"{what}: {audio_s / 60:.1f} min of audio, {len(played)} items ({counts})")
    print(f"streamed, tagged and recorded in {took:.0f} s ({audio_s / took:.1f}x real time)")
    print()
    print(f"{'':38s}{'as-run log':>14s}{'baseline':>14s}")  # baseline: report segments
    print(f"{'items played':38s}{len(played):>14d}{len(played):>14d}")
    print(f"{'rows / segments found':38s}{len(rows):>14d}{len(baseline):>14d}")
    print(
        f"{'found per item played':38s}{len(rows) / len(played):>14.2f}"
        f"{len(baseline) / len(played):>14.2f}"
    )
    print(f"{'kinds in the played order':38s}{'yes' if kinds_match else 'no':>14s}{'':>14s}")
    if not tuning:
        same = "yes" if same_sequence else "no"
        print(f"{'kinds and families as played':38s}{same:>14s}{'':>14s}")
    print()
    print_items_found(played, rows)
    print_errors(errors)
    print("\nlive content_change at_s against the music <-> talk changes (replayed):")
    print_errors(live_change_errors(db, played))
    if args.before:
        earlier = asrun_at(args.before).load_asrun(db, stream="fm:hour").entries
        print(
            f"\nthe as-run log of {args.before} on the same recording: {len(earlier)} rows "
            f"({len(earlier) / len(played):.2f} per item played)"
        )
        earlier_starts = np.array([r.audio_start_s for r in earlier[1:]])
        print_items_found(played, earlier)
        print_errors(boundary_errors(played, earlier_starts))
    if tuning:
        shares = flip_shares(db, played)
        print("\nspeech share of the window where the content decision flips (median, IQR):")
        both = list(itertools.chain.from_iterable(shares.values()))
        for what, values in [*shares.items(), ("both", both)]:
            q25, q50, q75 = np.quantile(values, [0.25, 0.5, 0.75])
            print(f"  {what:18s} n {len(values):3d}  {q50:.2f}  ({q25:.2f} .. {q75:.2f})")
    if kinds_match and not tuning:
        music = [(r, p) for r, p in zip(rows, played, strict=True) if p[0] == "music"]
        right = sum(1 for r, p in music if r.family == p[1])
        print(f"\nmusic rows with the family their genre maps to: {right} of {len(music)}")
        misses = statistics.multimode(
            [f"{p[1]} -> {r.family}" for r, p in music if r.family != p[1]] or ["none"]
        )
        print(f"most common family miss: {', '.join(misses)}")
    print(
        f"dead air incidents: {len(log.dead_air)} "
        f"(silences played: {sum(1 for p in played if p[0] == 'silence')})"
    )
    if args.list:
        print("\nplayed:")
        for kind, family, start, end in played:
            print(f"  {start:8.2f} {end:8.2f}  {kind:8s} {family}")
        print("found:")
        for r in rows:
            where = f"{r.audio_start_s:8.2f} {r.audio_end_s:8.2f}"
            print(f"  {where}  {r.kind:8s} {r.family:15s} {r.title}")
        print("music <-> talk changes more than one hop from the nearest row start:")
        for change, found_s in changes_missed(played, starts):
            print(f"  {change}  found {found_s:+.2f} s")
    print(load_description())
    print(f"recording: {db}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
