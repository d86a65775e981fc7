"""Per-stream metrics of a real worker, scraped over HTTP (issue 14, item 3).

A real worker (the session's MSD_musicnn and its content classifier) is fed synthesized
audio by the test's PUSH socket (:class:`helpers.Harness`), block by block as a live source
would send it, with dead air in the middle; its ``/metrics`` is scraped over real HTTP and
parsed with ``prometheus_client``'s parser.  Every wait is on what the scrape shows, never
on how long anything took.  The same scrape is the reference for the metric names that
``deploy/prometheus/alerts.yml`` and ``deploy/grafana/tagstream.json`` use.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import DEADLINE_S, ROOT, Harness, frames_of, free_port, music, wait_until
from prometheus_client.parser import text_string_to_metric_families

from config import ConfigError, load_config
from inference import Worker
from monitor.families import DEFAULT_FAMILIES
from protocol import EVENT_KINDS, EndOfStream, TagUpdate, decode_published, encode_audio, encode_end

SR = 16000
#: Dead air after this much quiet (``content.silence_seconds``; more than one 3 s window, so
#: the window that makes it known is quiet all through).
SILENCE_S = 4.0
#: ``inference.idle_timeout_seconds``: long enough that a stream the test feeds is never
#: evicted between two of its blocks on a loaded machine.
IDLE_S = 30.0
#: What the test feeds per step: half a second of audio, as a live source sends it.
STEP_S = 0.5
#: Most audio seconds sent ahead of the worker's last update: one 3 s window and a hop more.
LEAD_S = 4.0
TAGS = ("rock", "female vocalists", "Hip-Hop")
DASHBOARD = ROOT / "deploy" / "grafana" / "tagstream.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"

#: The sample names of a metric family of each type: ``name`` + suffix.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def noise_at(rng: np.random.Generator, seconds: float, dbfs: float) -> np.ndarray:
    """White noise whose RMS level is ``dbfs`` (as tests/test_events.py: hiss on dead air)."""
    rms = 10 ** (dbfs / 20) / np.sqrt(2)
    return (rng.standard_normal(int(seconds * SR)) * rms).astype(np.float32)


def scrape(base: str) -> tuple[Samples, set[str]]:
    """``({(sample name, sorted labels): value}, metric and sample names)`` of ``/metrics``."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    got: Samples = {}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        # A family is exported with its # TYPE line even before it has samples.
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        for s in family.samples:
            names.add(s.name)
            got[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return got, names


def of_stream(got: Samples, name: str, stream: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``name``'s samples of ``stream``, keyed by their other labels."""
    return {
        tuple(kv for kv in labels if kv[0] != "stream"): value
        for (sample, labels), value in got.items()
        if sample == name and ("stream", stream) in labels
    }


#: The one series a stream keeps after its sender ended it.
ENDED = "tagstream_stream_ended_timestamp_seconds"


def streams_in(got: Samples) -> set[str]:
    """Streams with live series (an ended stream's end timestamp not counted)."""
    return {
        value
        for (sample, labels), _ in got.items()
        if sample.startswith("tagstream_stream_") and sample != ENDED
        for key, value in labels
        if key == "stream"
    }


class LiveFeed:
    """One stream fed block by block, as a live source: consecutive ``seq``, captured now.

    A live source sends no faster than the worker tags (a real one sends in real time);
    :meth:`caught_up` says when the worker's updates (read from the harness's SUB socket)
    have come within :data:`LEAD_S` of the audio sent, so the test never builds a backlog
    the worker would shed on a loaded machine.
    """

    def __init__(self, harness: Harness, stream: str) -> None:
        self.harness = harness
        self.stream = stream
        self.seq = 0
        self.sent_s = 0.0
        self.published_s = 0.0

    def caught_up(self) -> bool:
        while self.harness.sub.poll(0):
            message = decode_published(self.harness.sub.recv_multipart())
            if isinstance(message, TagUpdate) and message.stream == self.stream:
                self.published_s = max(self.published_s, message.end_s)
        return self.sent_s - self.published_s < LEAD_S

    def send(self, y: np.ndarray) -> None:
        [frame] = frames_of(
            y,
            stream=self.stream,
            block=len(y),
            start_time=time.time() - len(y) / SR,
            first_seq=self.seq,
        )
        self.harness.send(encode_audio(frame))
        self.seq += 1
        self.sent_s += len(y) / SR

    def end(self) -> None:
        self.harness.send(encode_end(EndOfStream(stream=self.stream, seq=self.seq)))


@pytest.fixture
def metrics_worker(tagger: object) -> Iterator[tuple[Harness, str]]:
    """An in-process worker serving /metrics, and its harness (joined)."""
    port = free_port()
    config = load_config(
        overrides={
            "inference.input_endpoint": "tcp://127.0.0.1:*",
            "inference.publish_endpoint": "tcp://127.0.0.1:*",
            "inference.idle_timeout_seconds": IDLE_S,
            "content.silence_seconds": SILENCE_S,
            "metrics.worker_port": port,
            "metrics.stream_tags": list(TAGS),
        }
    )
    worker = Worker(config, tagger=tagger)
    harness: Harness | None = None
    try:
        worker.start()
        worker.run_in_thread()
        harness = Harness(worker)
        yield harness, f"http://127.0.0.1:{port}"
    finally:
        if harness is not None:
            harness.close()
        worker.close()


def feed_until(
    feed: LiveFeed,
    audio: Callable[[], np.ndarray],
    base: str,
    condition: Callable[[Samples], bool],
    what: str,
) -> Samples:
    """Send ``audio()`` step by step until a scrape meets ``condition``; return that scrape."""
    seen: list[Samples] = [{}]

    def step() -> bool:
        if feed.caught_up():
            feed.send(audio())
        seen[0] = scrape(base)[0]
        return condition(seen[0])

    def say() -> str:
        return f"{what}; last scrape of {feed.stream}: " + repr(
            {k: v for k, v in seen[0].items() if ("stream", feed.stream) in k[1]}
        )

    wait_until(step, say, interval_s=0.1)
    return seen[0]


def test_a_streams_series_follow_music_dead_air_and_go_when_it_ends_or_is_evicted(
    metrics_worker: tuple[Harness, str], rng: np.random.Generator
) -> None:
    harness, base = metrics_worker
    # Streams that churn: the harness's probe streams came and ended before this point.
    assert not any(s.startswith("probe:") for s in streams_in(scrape(base)[0]))

    # A stream that stops sending without an end: evicted after IDLE_S, its series with it.
    idle = LiveFeed(harness, "idle")
    idle.send(music(rng, 4.0))
    wait_until(lambda: "idle" in streams_in(scrape(base)[0]), "the idle stream's series")

    fm = LiveFeed(harness, "fm")
    content = "tagstream_stream_content"
    silent = "tagstream_stream_silent"

    def playing_music(got: Samples) -> bool:
        return of_stream(got, content, "fm").get((("content", "music"),)) == 1.0

    got = feed_until(fm, lambda: music(rng, STEP_S), base, playing_music, "fm playing music")
    assert of_stream(got, content, "fm") == {
        (("content", "music"),): 1.0,
        (("content", "speech"),): 0.0,
        (("content", "silence"),): 0.0,
    }
    assert of_stream(got, silent, "fm") == {(): 0.0}
    [level] = of_stream(got, "tagstream_stream_level_dbfs", "fm").values()
    assert -40.0 < level < 0.0  # music() peaks near -6 dBFS
    [updated] = of_stream(got, "tagstream_stream_last_update_timestamp_seconds", "fm").values()
    assert abs(updated - time.time()) < DEADLINE_S  # a Unix time, not an age
    families = of_stream(got, "tagstream_stream_family_score", "fm")
    assert {dict(k)["family"] for k in families} == set(DEFAULT_FAMILIES.names)
    assert all(0.0 <= v <= 1.0 for v in families.values()) and max(families.values()) > 0.0
    tags = of_stream(got, "tagstream_stream_tag_probability", "fm")
    assert {dict(k)["tag"] for k in tags} == set(TAGS)  # the configured tags, no others
    assert all(0.0 <= v <= 1.0 for v in tags.values())
    # A family's score is the largest smoothed probability among its tags.
    assert families[(("family", "rock"),)] >= tags[(("tag", "rock"),)]
    assert families[(("family", "hip-hop"),)] >= tags[(("tag", "Hip-Hop"),)]
    assert of_stream(got, "tagstream_stream_events_total", "fm") == {
        (("event", kind),): 0.0 for kind in EVENT_KINDS
    }
    # How far behind fm the worker tags, and what it shed for that: the update's own
    # behind_s and shed (audio the worker had beyond the window; none shed before the bound).
    [behind] = of_stream(got, "tagstream_stream_behind_seconds", "fm").values()
    [shed] = of_stream(got, "tagstream_stream_shed_windows_total", "fm").values()
    assert behind >= 0.0 and shed >= 0.0

    # Dead air: hiss at -65 dBFS, below content.silence_dbfs (-50), until the worker says so.
    def dead_air(got: Samples) -> bool:
        return of_stream(got, silent, "fm") == {(): 1.0}

    got = feed_until(fm, lambda: noise_at(rng, STEP_S, -65.0), base, dead_air, "dead air on fm")
    assert of_stream(got, content, "fm")[(("content", "silence"),)] == 1.0
    [level] = of_stream(got, "tagstream_stream_level_dbfs", "fm").values()
    assert -68.0 < level < -62.0
    events = of_stream(got, "tagstream_stream_events_total", "fm")
    assert events[(("event", "silence_start"),)] == 1.0
    assert events[(("event", "silence_end"),)] == 0.0

    # Music again: out of dead air, one silence_end.
    def back_on_air(got: Samples) -> bool:
        return of_stream(got, silent, "fm") == {(): 0.0} and playing_music(got)

    got = feed_until(fm, lambda: music(rng, STEP_S), base, back_on_air, "fm back on air")
    events = of_stream(got, "tagstream_stream_events_total", "fm")
    assert events[(("event", "silence_start"),)] == 1.0
    assert events[(("event", "silence_end"),)] == 1.0
    [later] = of_stream(got, "tagstream_stream_last_update_timestamp_seconds", "fm").values()
    assert later >= updated

    # The end: every series of fm goes (its last windows, published after it, make none)
    # but its end time, after its last update: an end on purpose, not a lost stream.
    fm.end()
    wait_until(lambda: "fm" not in streams_in(scrape(base)[0]), "fm's series to go at its end")
    harness.barrier(rng)  # the windows fm had waiting are published by now
    got = scrape(base)[0]
    assert "fm" not in streams_in(got)
    assert got[("tagstream_worker_streams_ended_total", ())] >= 1
    [ended_at] = of_stream(got, ENDED, "fm").values()
    assert later <= ended_at <= time.time()
    # The idle stream was evicted (it has sent nothing for a while): its series went, and
    # it has no end time (it was lost, not ended).
    wait_until(lambda: "idle" not in streams_in(scrape(base)[0]), "the idle stream's eviction")
    got = scrape(base)[0]
    assert got[("tagstream_worker_streams_evicted_total", ())] >= 1
    assert not of_stream(got, ENDED, "idle")


def used_names(text: str) -> set[str]:
    return set(re.findall(r"\b(tagstream_\w+)", text))


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and query variables."""
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
            queries.append(variable["query"]["query"])
    return queries


def test_the_alert_rules_and_the_dashboard_use_only_what_a_real_worker_exports(
    metrics_worker: tuple[Harness, str], rng: np.random.Generator
) -> None:
    harness, base = metrics_worker
    feed = LiveFeed(harness, "names")

    def everything(got: Samples) -> bool:
        return bool(of_stream(got, "tagstream_stream_content", "names")) and (
            got.get(("tagstream_worker_latency_seconds_count", ()), 0) > 0
        )

    feed_until(feed, lambda: music(rng, STEP_S), base, everything, "a stream's series")
    got, exported = scrape(base)
    labels = {key for _, sample_labels in got for key, _ in sample_labels}
    # Labels Prometheus adds (job, instance) or PromQL uses (le, the histogram's buckets).
    labels |= {"job", "instance", "le"}

    rules = RULES.read_text()
    assert used_names(rules) <= exported, used_names(rules) - exported
    assert "tagstream_stream_silent" in used_names(rules)
    assert "tagstream_stream_last_update_timestamp_seconds" in used_names(rules)

    dashboard = json.loads(DASHBOARD.read_text())
    queries = dashboard_queries(dashboard)
    used = set().union(*map(used_names, queries))
    assert used <= exported, used - exported
    # Every per-stream metric has a panel (a counter by its sample name, ``_total``).
    per_stream = {n for n in exported if n.startswith("tagstream_stream_")}
    assert not {n for n in per_stream if n not in used and f"{n}_total" not in used}
    # Label names in selectors and groupings are labels the worker's series carry.
    for query in queries:
        named = set(re.findall(r"(\w+)\s*=~?\s*\"", query))
        for grouping in re.findall(r"\bby\s*\(([^)]*)\)", query):
            named |= {g.strip() for g in grouping.split(",") if g.strip()}
        assert named <= labels, (query, named - labels)


def test_stream_tags_the_model_lacks_stop_the_worker_at_start_with_one_line(
    tagger: object, tmp_path: Path
) -> None:
    overrides = {"metrics.worker_port": free_port(), "metrics.stream_tags": ["rock", "hip-hop"]}
    worker = Worker(load_config(overrides=overrides), tagger=tagger)
    try:
        with pytest.raises(ConfigError) as caught:
            worker.start()
    finally:
        worker.close()
    assert str(caught.value) == (
        "metrics.stream_tags: 'hip-hop' is not one of the model's tags (did you mean \"Hip-Hop\"?)"
    )
    # The command says so in one line, exit status 2, before any model loads.
    config = tmp_path / "config.toml"
    config.write_text(f'[metrics]\nworker_port = {free_port()}\nstream_tags = ["rock", "rock"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "inference", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: metrics.stream_tags: 'rock' is listed twice; list it once"
    )
