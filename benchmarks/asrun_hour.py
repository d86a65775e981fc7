"""The as-run log of a scripted programme: items played against rows found (issue 14).

    .venv/bin/python -m benchmarks.asrun_hour [--minutes 60] [--music DIR] [--db PATH]

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
* how often a music row's family is the one its genre maps to;
* the baseline measured in the same run: the report's dominant-tag segments
  (:func:`monitor.report.build_report`) per item played.

Skips (exit 0) when the music folder or espeak-ng is absent.  An hour takes
23 minutes on the loaded 2-core AMD EPYC (2.7x real time); ``--minutes`` shortens it.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import cpu_description, load_description

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


def programme(music: Path, minutes: float, rng: np.random.Generator) -> list[dict]:
    """Items in order: {kind, family, title, audio} (an outage item has no audio)."""
    by_genre: dict[str, list[Path]] = {}
    with (music / "labels.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["label"] in GENRE_FAMILY and row["path"].startswith("gtzan/"):
                by_genre.setdefault(row["label"], []).append(music / row["path"])
    genres = sorted(by_genre)
    items: list[dict] = []
    total_s, talk_i, previous_family, outage_done = 0.0, 0, "", False
    target_s = minutes * 60.0
    while total_s < target_s:
        genre = genres[int(rng.integers(len(genres)))]
        if GENRE_FAMILY[genre] == previous_family:
            continue
        clips = rng.choice(len(by_genre[genre]), size=int(rng.integers(1, 4)), replace=False)
        audio = np.concatenate([read_clip(by_genre[genre][int(i)]) for i in clips])
        title = f"{genre} {len(items)}"
        items.append(item("music", GENRE_FAMILY[genre], title=title, audio=audio))
        previous_family = GENRE_FAMILY[genre]
        total_s += len(audio) / SR
        step = len(items) % 4
        if step == 1:
            speech = espeak(TALK[talk_i % len(TALK)])
            talk_i += 1
            items.append(item("speech", audio=speech))
            total_s += len(speech) / SR
            previous_family = ""
        elif step == 3:
            hiss = rng.standard_normal(int(float(rng.uniform(12, 20)) * SR)) * 10 ** (-70 / 20)
            items.append(item("silence", audio=hiss.astype(np.float32)))
            total_s += len(hiss) / SR
            previous_family = ""
        if not outage_done and total_s >= target_s / 2:
            items.append(item("outage", seconds=30.0))
            outage_done = True
            previous_family = ""
    if not outage_done:
        items.insert(len(items) - 1, item("outage", seconds=30.0))
    return items


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.asrun_hour", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the programme (60)")
    parser.add_argument("--music", type=Path, default=MUSIC, help="the shared music folder")
    parser.add_argument(
        "--db", type=Path, help="keep the recording here (default: a temporary file)"
    )
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument(
        "--list", action="store_true", help="also list the items played and the rows found"
    )
    args = parser.parse_args(argv)
    if not (args.music / "labels.csv").is_file():
        print(f"skipped: {args.music} is absent (real-music checks need ../shared/music)")
        return 0
    if shutil.which("espeak-ng") is None:
        print("skipped: espeak-ng is not installed (apt-get install espeak-ng)")
        return 0
    from monitor.asrun import load_asrun
    from monitor.report import build_report

    print(cpu_description())
    print(load_description())
    rng = np.random.default_rng(args.seed)
    items = programme(args.music, args.minutes, rng)
    folder = Path(tempfile.mkdtemp(prefix="asrun-hour-"))
    db = args.db or folder / "hour.db"
    started = time.monotonic()
    played = play(items, db)
    took = time.monotonic() - started
    log = load_asrun(db, stream="fm:hour")
    rows = log.entries
    baseline = [s for s in build_report(db, stream="fm:hour").segments]

    # Boundaries: each played boundary against the nearest row boundary.
    found = np.array([r.audio_start_s for r in rows[1:]])
    errors: dict[str, list[float]] = {}
    for before, after in itertools.pairwise(played):
        kinds = {before[0], after[0]}
        what = (
            "silence/outage edge" if kinds & {"silence", "outage"}
            else "music <-> speech" if kinds == {"music", "speech"}
            else "family change"
        )  # fmt: skip
        true_s = after[2]
        nearest = float(found[np.argmin(np.abs(found - true_s))]) if found.size else np.nan
        errors.setdefault(what, []).append(nearest - true_s)
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
    print(f"programme: {audio_s / 60:.1f} min of audio, {len(played)} items ({counts})")
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
    print(f"{'kinds and families as played':38s}{'yes' if same_sequence else 'no':>14s}{'':>14s}")
    print()
    print(
        f"{'boundary error (found - played)':38s}{'n':>5s}{'median s':>10s}{'|max| s':>10s}"
        f"{'<= 1 hop':>10s}"
    )
    hop = 0.496
    for what, values in errors.items():
        v = np.array(values)
        print(f"{what:38s}{len(v):>5d}{np.median(v):>10.2f}{np.max(np.abs(v)):>10.2f}"
              f"{np.mean(np.abs(v) <= hop + 1e-9) * 100:>9.0f}%")  # fmt: skip
    if kinds_match:
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
    print(load_description())
    print(f"recording: {db}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
