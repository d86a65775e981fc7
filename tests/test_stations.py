"""A station heard through its network stream: real Icecast, real streamer, real worker.

A jazz recording from ``../shared/music`` (evaluation audio, never tuned on) is served
by Debian's ``icecast2`` fed by FFmpeg; ``python -m streamer --url`` follows it and the
worker's updates, read through :class:`protocol.subscriber.Subscriber`, must say
``jazz`` and ``music``.  Skips where icecast2, ffmpeg or ``../shared/music`` is absent.
"""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, Collector, Processes, alive, children_of, free_port, wait_until
from icecast import Icecast, needs_icecast

from tagstream.errors import ExitStatus

JAZZ = ROOT.parent / "shared" / "music" / "bensound" / "bensound-thejazzpiano.mp3"

pytestmark = needs_icecast
#: Bound on each wait of the station-file test: five stations' start-up (one ffmpeg each)
#: and three streams' windows on a loaded 2-core machine.
LOADED_S = 300.0


@pytest.mark.skipif(
    not JAZZ.is_file(),
    reason="../shared/music not found (real music for evaluation; absent on a fresh clone)",
)
def test_a_jazz_station_is_tagged_jazz_through_url(
    run_worker: object, processes: Processes, tmp_path: Path
) -> None:

    icecast = Icecast()
    collector = None
    try:
        icecast.start_source(JAZZ)
        collector = Collector(run_worker(), "jazz-fm")  # type: ignore[operator]
        processes.start(
            "streamer", "streamer", "--url", icecast.url,
            "--endpoint", collector.harness.worker.input_endpoint, "--stream-id", "jazz-fm",
        )  # fmt: skip
        wait_until(
            lambda: len(collector.updates()) >= 20,
            lambda: f"20 updates; streamer log: {processes.log('streamer')[-2000:]}",
        )
        tagged = collector.updates()
        music = [u for u in tagged if u.content == "music"]
        assert len(music) >= 0.9 * len(tagged), [u.content for u in tagged]
        mean = np.mean([u.probabilities for u in music], axis=0)
        top = [tagged[0].tags[i] for i in np.argsort(-mean)[:3]]
        assert top[0] == "jazz", top
        assert all(-40.0 < (u.level_dbfs or -120.0) < 0.0 for u in music)
    finally:
        if collector is not None:
            collector.close()
        icecast.close()


def test_a_station_file_keeps_every_station_tagged_while_one_source_restarts(
    run_worker: object, processes: Processes, tmp_path: Path
) -> None:
    """Three Icecast mounts, one ``--stations`` streamer, one worker: killing one source
    drops only that station (``source_down``/``source_up`` for it alone) while the other
    two keep their updates coming, and its own updates return after the restart.  Two
    more stations fail throughout (nothing listens at their URL; no such sound card)
    and are retried on their own without stopping anyone."""
    import soundfile
    from helpers import music, new_rng

    wav = tmp_path / "music.wav"
    soundfile.write(wav, music(new_rng(), 12.0), 16000)
    names = ("alpha", "bravo", "charlie")
    icecast = Icecast()
    sources = {}
    collectors: dict[str, Collector] = {}
    try:
        for name in names:
            icecast.start_source(wav, mount=f"/{name}.mp3")
            sources[name], icecast.source = icecast.source, None
        harness = run_worker()  # type: ignore[operator]
        for name in names:
            collectors[name] = Collector(harness, name)
        stations = tmp_path / "stations.toml"
        stations.write_text(
            "".join(
                f'[[station]]\nid = "{name}"\nurl = "http://127.0.0.1:{icecast.port}/{name}.mp3"\n'
                "reconnect_initial_seconds = 0.2\nreconnect_max_seconds = 1\n\n"
                for name in names
            )
            + f'[[station]]\nid = "ghost"\nurl = "http://127.0.0.1:{free_port()}/none.mp3"\n'
            + "reconnect_initial_seconds = 0.2\nreconnect_max_seconds = 1\n\n"
            + '[[station]]\nid = "unplugged"\ndevice = "hw:97"\n'
        )
        streamer = processes.start(
            "streamer", "streamer", "--stations", str(stations),
            "--endpoint", harness.worker.input_endpoint,
        )  # fmt: skip

        def counts() -> dict[str, int]:
            return {name: len(c.updates()) for name, c in collectors.items()}

        def seen() -> str:
            kinds = {
                n: [e.event for e in c.messages if hasattr(e, "event")]
                for n, c in collectors.items()
            }
            return f"updates {counts()}, events {kinds}; log: {processes.log('streamer')[-3000:]}"

        wait_until(lambda: min(counts().values()) >= 5, seen, timeout_s=LOADED_S)
        sources["bravo"].kill()
        sources["bravo"].wait()
        wait_until(lambda: collectors["bravo"].events("source_down"), seen, timeout_s=LOADED_S)
        # While bravo is down, the others keep being tagged.
        during = counts()
        wait_until(
            lambda: all(counts()[n] >= during[n] + 5 for n in ("alpha", "charlie")),
            seen,
            timeout_s=LOADED_S,
        )
        assert not collectors["bravo"].events("source_up"), "bravo's source is still dead"
        icecast.start_source(wav, mount="/bravo.mp3")
        sources["bravo"], icecast.source = icecast.source, None
        wait_until(lambda: collectors["bravo"].events("source_up"), seen, timeout_s=LOADED_S)
        up = collectors["bravo"].events("source_up")[0]
        wait_until(
            lambda: any(u.end_s > up.at_s for u in collectors["bravo"].updates()),
            seen,
            timeout_s=LOADED_S,
        )
        decoders = children_of(streamer.pid)
        assert sum("ffmpeg" in command for command in decoders.values()) == len(names)
        streamer.send_signal(signal.SIGTERM)
        assert streamer.wait(timeout=60) == ExitStatus.OK, seen()
        assert not [pid for pid in decoders if alive(pid)], "decoders left running"
    finally:
        for collector in collectors.values():
            collector.close()
        for process in sources.values():
            process.kill()
            process.wait()
        icecast.close()
    for name in ("alpha", "charlie"):
        kinds = [e.event for e in collectors[name].messages if hasattr(e, "event")]
        assert "source_down" not in kinds and "source_up" not in kinds, (name, kinds)
    [down] = collectors["bravo"].events("source_down")
    assert down.at_s <= up.at_s
    log = processes.log("streamer")
    assert "stream dropped url=http://127.0.0.1" in log and "bravo.mp3" in log
    assert log.count("station unavailable stream=unplugged") >= 2, "retried on its own"
    assert log.count("none.mp3 reason=") >= 2, "the dead URL is retried on its own"


def test_a_stations_silence_settings_apply_to_its_stream_in_the_worker(
    tagger: object, tmp_path: Path
) -> None:
    """``[content] stations``: one station's threshold (-40 dBFS, 3 s) against the default
    (-50 dBFS, 10 s) on the same audio: 5 s of hiss at -45 dBFS is dead air for it alone."""
    from helpers import Harness, events, music, new_rng, updates

    from config import InferenceConfig, load_config
    from inference import Worker
    from protocol import TagUpdate, decode_published

    stations = tmp_path / "stations.toml"
    stations.write_text(
        '[[station]]\nid = "talk"\nurl = "http://radio.example/talk.mp3"\n'
        "silence_dbfs = -40\nsilence_seconds = 3\n"
    )
    overrides: dict[str, object] = {
        "inference.input_endpoint": "tcp://127.0.0.1:*",
        "inference.publish_endpoint": "tcp://127.0.0.1:*",
        "content.stations": str(stations),
    }
    if any(f.name == "max_window_age_seconds" for f in dataclasses.fields(InferenceConfig)):
        # The audio is sent at once, not live: every window is wanted, however late.
        overrides["inference.max_window_age_seconds"] = 0.0
    config = load_config(overrides=overrides)
    rng = new_rng()
    hiss = (rng.standard_normal(5 * 16000) * 10 ** (-45 / 20) / np.sqrt(2)).astype(np.float32)
    y = np.concatenate([music(rng, 4.0), hiss, music(rng, 3.5)])
    worker = Worker(config, tagger=tagger)
    worker.start()
    worker.run_in_thread()
    harness = Harness(worker)
    found: dict[str, list[object]] = {"talk": [], "other": []}
    try:
        for stream in found:
            harness.send_audio(y, stream=stream, block=1600)

        def done() -> bool:
            while harness.sub.poll(100):
                message = decode_published(harness.sub.recv_multipart())
                if message.stream in found:
                    found[message.stream].append(message)
            return all(
                any(isinstance(m, TagUpdate) and m.end_s >= 12.4 for m in messages)
                for messages in found.values()
            )

        wait_until(
            done,
            lambda: f"updates up to 12.5 s; got {[len(v) for v in found.values()]}",
            timeout_s=600,  # two streams' windows on a loaded 2-core machine
        )
    finally:
        harness.close()
        worker.close()
    [start] = events(found["talk"], "silence_start")
    [end] = events(found["talk"], "silence_end")
    assert start.fields["threshold_dbfs"] == -40.0
    assert 7.0 <= start.at_s <= 8.0, start
    assert 0.0 <= end.at_s - 9.0 <= 0.5, end
    assert not events(found["other"], "silence_start"), "-45 dBFS is not silence at -50"

    def hiss_only(messages: list[object]) -> set[str | None]:
        return {u.content for u in updates(messages) if u.start_s >= 4.05 and u.end_s <= 8.95}

    assert hiss_only(found["talk"]) == {"silence"}
    assert "silence" not in hiss_only(found["other"])
