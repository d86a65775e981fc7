"""A station heard through its network stream: real Icecast, real streamer, real worker.

A jazz recording from ``../shared/music`` (evaluation audio, never tuned on) is served
by Debian's ``icecast2`` fed by FFmpeg; ``python -m streamer --url`` follows it and the
worker's updates, read through :class:`protocol.subscriber.Subscriber`, must say
``jazz`` and ``music``.  Skips where icecast2, ffmpeg or ``../shared/music`` is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, Collector, Processes, wait_until
from icecast import Icecast, needs_icecast

JAZZ = ROOT.parent / "shared" / "music" / "bensound" / "bensound-thejazzpiano.mp3"

pytestmark = needs_icecast


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
