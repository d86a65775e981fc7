"""Alerts: the rule engine driven with explicit time, the rules file's checks, real sinks
against a local HTTP receiver and a real command, and the command on a real worker.

Waits are bounded by generous deadlines that only turn a hang into a failure;
nothing asserts on how long anything took.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from helpers import DEADLINE_S, ROOT, Processes, audio_messages, wait_until

from config import ConfigError
from model.contract import MSD_TAGS
from monitor.alerts import (
    RULE_KINDS,
    Alert,
    AlertEngine,
    Rules,
    SinkSpec,
    load_rules,
    rules_from_toml,
)
from monitor.sinks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CommandSink,
    SinkSet,
    StdoutSink,
    WebhookSink,
    sign,
    verify,
)
from protocol import TagUpdate
from tools.alert import main as alert_main

SHARED_MUSIC = ROOT.parent / "shared" / "music"
T0 = 1_800_000_000.0  # wall-clock origin of the engine tests
SECRET = "correct horse battery staple"


def make_update(
    stream: str, seq: int, end_s: float, scores: dict[str, float] | None = None
) -> TagUpdate:
    values = np.zeros(len(MSD_TAGS), np.float32)
    for tag, score in (scores or {}).items():
        values[MSD_TAGS.index(tag)] = score
    return TagUpdate(
        stream=stream, seq=seq, start_s=max(0.0, end_s - 3.0), end_s=end_s, model="test",
        tags=MSD_TAGS, probabilities=values, smoothed=values,
        capture_time=T0 + end_s, received_time=T0 + end_s, published_time=T0 + end_s,
    )  # fmt: skip


def rules(text: str, **kwargs: Any) -> Rules:
    sink = '[[sink]]\nname = "console"\ntype = "stdout"\n'
    return rules_from_toml(tomllib.loads(sink + text), **kwargs)


class Feed:
    """Feed an engine one stream's updates every ``hop`` audio seconds, wall clock = T0 + audio."""

    def __init__(self, engine: AlertEngine, stream: str = "radio:one", hop: float = 0.5) -> None:
        self.engine, self.stream, self.hop = engine, stream, hop
        self.seq, self.end_s = 0, 3.0

    def play(self, seconds: float, scores: dict[str, float]) -> list[Alert]:
        alerts: list[Alert] = []
        for _ in range(round(seconds / self.hop)):
            update = make_update(self.stream, self.seq, self.end_s, scores)
            alerts += self.engine.on_update(update, now=T0 + self.end_s)
            self.seq, self.end_s = self.seq + 1, self.end_s + self.hop
        return alerts


# ---------------------------------------------------------------------------
# The engine, with explicit time
# ---------------------------------------------------------------------------


def test_threshold_fires_after_holding_for_its_duration_and_resolves() -> None:
    engine = AlertEngine(rules("""
[[rule]]
name = "metal"
kind = "threshold"
family = "metal"
at_least = 0.5
for_seconds = 30
quiet_seconds = 0
"""), start_time=T0)  # fmt: skip
    feed = Feed(engine)
    assert feed.play(20, {"heavy metal": 0.6}) == []
    assert feed.play(1, {"heavy metal": 0.4}) == []  # a dip restarts the clock
    assert feed.play(29.5, {"metal": 0.7, "heavy metal": 0.6}) == []
    (fired,) = feed.play(10, {"metal": 0.7})
    assert (fired.status, fired.rule, fired.stream) == ("firing", "metal", "radio:one")
    assert fired.at_s - fired.details["since_s"] == pytest.approx(30.0)
    assert fired.details == {
        "family": "metal", "score": pytest.approx(0.7), "at_least": 0.5, "at_most": 1.0,
        "for_seconds": 30.0, "since_s": fired.details["since_s"],
    }  # fmt: skip
    assert "metal 0.70" in fired.text
    (resolved,) = feed.play(5, {"rock": 0.8})
    assert resolved.status == "resolved" and resolved.details["score"] == pytest.approx(0.0)


def test_quiet_period_suppresses_repeats_and_their_resolutions() -> None:
    engine = AlertEngine(rules("""
[alerts]
quiet_seconds = 600
[[rule]]
name = "jazz"
kind = "threshold"
tag = "jazz"
at_least = 0.5
"""), start_time=T0)  # fmt: skip
    feed = Feed(engine)
    assert [a.status for a in feed.play(1, {"jazz": 0.9})] == ["firing"]
    assert [a.status for a in feed.play(1, {})] == ["resolved"]
    assert feed.play(1, {"jazz": 0.9}) == []  # within 600 s: suppressed ...
    assert feed.play(1, {}) == []  # ... and so is its resolution
    assert engine.suppressed == {"jazz": 1}
    feed.end_s += 600  # ten minutes of audio later (and of wall clock: now = T0 + end_s)
    assert [a.status for a in feed.play(1, {"jazz": 0.9})] == ["firing"]
    other = Feed(engine, stream="radio:two")  # the quiet period is per stream
    assert [a.status for a in other.play(1, {"jazz": 0.9})] == ["firing"]


def test_at_most_and_window_scores() -> None:
    engine = AlertEngine(rules("""
[[rule]]
name = "no rock"
kind = "threshold"
family = "rock"
at_most = 0.1
score = "window"
for_seconds = 2
"""), start_time=T0)  # fmt: skip
    feed = Feed(engine)
    assert feed.play(1, {"rock": 0.5}) == []
    (fired,) = feed.play(3, {"rock": 0.05})
    assert "<= 0.1" in fired.text


def test_a_family_change_fires_once_it_has_held() -> None:
    engine = AlertEngine(rules("""
[[rule]]
name = "format"
kind = "change"
of = "family"
at_least = 0.2
for_seconds = 10
quiet_seconds = 0
"""), start_time=T0)  # fmt: skip
    feed = Feed(engine)
    assert feed.play(30, {"rock": 0.5, "indie": 0.4}) == []  # the first family is no change
    assert feed.play(5, {"jazz": 0.6, "rock": 0.3}) == []  # shorter than for_seconds
    assert feed.play(5, {"hard rock": 0.5}) == []  # back to rock (another rock tag)
    assert feed.play(30, {"rock": 0.1, "jazz": 0.15}) == []  # below at_least: nothing counts
    (fired,) = feed.play(15, {"jazz": 0.6, "blues": 0.5})
    assert fired.details | {"score": 0} == {
        "of": "family", "from": "rock", "to": "jazz-blues-soul", "score": 0,
        "since_s": fired.details["since_s"],
    }  # fmt: skip
    assert fired.at_s - fired.details["since_s"] == pytest.approx(10.0)


def test_a_change_rule_can_watch_changes_to_some_tags_only() -> None:
    engine = AlertEngine(rules("""
[[rule]]
name = "to metal"
kind = "change"
of = "tag"
to = ["*metal"]
quiet_seconds = 0
"""), start_time=T0)  # fmt: skip
    feed = Feed(engine)
    assert feed.play(2, {"rock": 0.5}) == []
    assert feed.play(2, {"jazz": 0.5}) == []  # a change, but not to a *metal tag
    (fired,) = feed.play(2, {"heavy metal": 0.5})
    assert (fired.details["from"], fired.details["to"]) == ("jazz", "heavy metal")


def test_a_stream_that_stops_is_missing_until_it_is_back() -> None:
    engine = AlertEngine(rules("""
[[rule]]
name = "gone"
kind = "missing"
streams = ["radio:*", "studio"]
for_seconds = 20
quiet_seconds = 0
"""), start_time=T0)  # fmt: skip
    feed = Feed(engine)
    feed.play(10, {"rock": 0.5})  # last update at audio 12.5 s = wall T0 + 12.5
    assert engine.tick(T0 + 19.9) == []  # "studio" (no wildcard) is expected from start-up ...
    (studio,) = engine.tick(T0 + 20.0)  # ... and never came
    assert (studio.stream, studio.details["seen"]) == ("studio", False)
    assert engine.tick(T0 + 32.0) == []
    (gone,) = engine.tick(T0 + 32.6)
    assert (gone.status, gone.stream, gone.at_s) == ("firing", "radio:one", 12.5)
    assert engine.tick(T0 + 100.0) == []  # fires once per absence
    feed.end_s += 90
    (back, *_rest) = feed.play(1, {"rock": 0.5})
    assert (back.status, back.stream) == ("resolved", "radio:one") and _rest == []
    assert "updates are back" in back.text


def test_a_stream_tagged_far_behind_fires_once_it_has_lasted_and_resolves() -> None:
    """``behind``: the worker tags a stream late (more streams than it can tag); streaming
    mode's 1.2 s look-ahead stays under the bound, and a short spell does not fire."""
    engine = AlertEngine(rules("""
[[rule]]
name = "late"
kind = "behind"
streams = ["archive-*"]
behind_seconds = 4
for_seconds = 30
quiet_seconds = 0
"""), start_time=T0)  # fmt: skip

    def update(stream: str, seq: int, behind_s: float, shed: int = 0) -> TagUpdate:
        u = make_update(stream, seq, 3.0 + 0.5 * seq)
        return dataclasses.replace(u, behind_s=behind_s, shed=shed)

    fired: list[Alert] = []
    for seq in range(200):  # 100 s, one update per wall-clock half second
        now = T0 + 0.5 * seq
        fired += engine.on_update(update("archive-2", seq, 1.2), now=now)  # look-ahead only
        behind = 8.0 if 20 <= seq < 30 or 60 <= seq < 160 else 0.3  # 5 s, then 50 s late
        fired += engine.on_update(update("archive-1", seq, behind, shed=seq // 4), now=now)
        fired += engine.on_update(update("fm-main", seq, 8.0), now=now)  # not watched
    assert [(a.status, a.stream) for a in fired] == [
        ("firing", "archive-1"),
        ("resolved", "archive-1"),
    ], [a.text for a in fired]
    firing, resolved = fired
    assert firing.time == T0 + 0.5 * 120  # 30 s after the second spell began
    assert firing.details == {
        "behind_s": 8.0, "shed": 30, "behind_seconds": 4.0, "for_seconds": 30.0,
    }  # fmt: skip
    assert firing.text.startswith("archive-1: tagged 8.0 s behind its audio for 30 s, 30 windows")
    assert resolved.time == T0 + 0.5 * 160
    assert resolved.text.startswith("archive-1: tagged on time again (0.3 s behind its audio)")


def test_a_restarted_stream_starts_its_threshold_clock_again() -> None:
    engine = AlertEngine(rules("""
[[rule]]
name = "pop"
kind = "threshold"
tag = "pop"
at_least = 0.5
for_seconds = 10
"""), start_time=T0)  # fmt: skip
    feed = Feed(engine)
    assert feed.play(8, {"pop": 0.9}) == []
    feed.seq, feed.end_s = 0, 3.0  # the streamer restarted: seq and audio time start over
    assert feed.play(8, {"pop": 0.9}) == []
    assert [a.status for a in feed.play(3, {"pop": 0.9})] == ["firing"]
    feed.seq, feed.end_s = 0, 3.0  # a restart while firing: still the same condition ...
    assert feed.play(20, {"pop": 0.9}) == []
    assert [a.status for a in feed.play(1, {})] == ["resolved"]  # ... until it ends


@pytest.mark.parametrize(
    ("kind", "fields", "text"),
    [
        ("silence_start", {"silence_since_s": 20.0, "level_dbfs": -68.4},
         "dead air: quiet for 10 s (at most -68 dBFS)"),
        ("silence_end", {"duration_s": 42.5, "level_dbfs": -18.0},
         "audio back after 42 s of dead air"),
        ("content_change", {"content": "speech", "previous": "music"},
         "content music -> speech"),
        ("now_playing", {"title": "Artist - Song"}, "now playing 'Artist - Song'"),
        ("source_down", {"reason": "read timeout"}, "source down: read timeout"),
        ("source_up", {"outage_s": 3.25}, "source back after 3.2 s"),
        ("source_down", {}, "source down"),  # fields missing: the kind alone
        ("silence_start", {}, "dead air"),
        ("silence_end", {"duration_s": "n/a"}, "silence end"),  # not a number: the same
    ],
)  # fmt: skip
def test_event_alert_texts_say_what_happened(kind: str, fields: dict, text: str) -> None:
    """An event rule's text is what a person reads in a chat: it says what the event's
    fields say (how long the quiet lasted, from what to what), not only its kind."""
    engine = AlertEngine(rules('[[rule]]\nname = "all"\nkind = "event"\nevents = ["*"]\n'),
                         start_time=T0)  # fmt: skip
    message = {"stream": "radio:one", "event": kind, "time": T0 + 30, "at_s": 30.0, **fields}
    (alert,) = engine.on_event(message, now=T0 + 30)
    assert alert.text == f"radio:one: {text} (rule 'all')"


def test_events_and_dead_air_from_event_dicts() -> None:
    """Issue 13's events are not on the wire yet; the engine takes their documented dicts."""
    engine = AlertEngine(rules("""
[[rule]]
name = "source"
kind = "event"
streams = ["radio:*"]
events = ["source_*"]
quiet_seconds = 60
[[rule]]
name = "dead air"
kind = "silence"
for_seconds = 30
"""), start_time=T0)  # fmt: skip

    def event(kind: str, t: float, **extra: Any) -> dict[str, Any]:
        return {"stream": "radio:one", "event": kind, "time": T0 + t, "at_s": t, **extra}

    (down,) = engine.on_event(event("source_down", 10, reason="timeout"), now=T0 + 10)
    assert (down.status, down.details) == ("event", {"event": "source_down", "at_s": 10,
                                                     "reason": "timeout"})  # fmt: skip
    assert down.text == "radio:one: source down: timeout (rule 'source')"
    (up,) = engine.on_event(event("source_up", 12, outage_s=2.0), now=T0 + 12)  # not quiet
    assert up.details["event"] == "source_up"
    assert up.text == "radio:one: source back after 2.0 s (rule 'source')"
    assert engine.on_event(event("source_down", 20), now=T0 + 20) == []  # same kind, quiet
    assert engine.on_event(event("now_playing", 21, title="x"), now=T0 + 21) == []
    # The worker says silence_start once the audio has been quiet for its silence_seconds.
    quiet = {"silence_since_s": 90.0, "level_dbfs": -71.2, "threshold_dbfs": -50.0}
    assert engine.on_event(event("silence_start", 100, **quiet), now=T0 + 100) == []
    assert engine.tick(T0 + 129.9) == []
    (dead,) = engine.tick(T0 + 130.0)
    assert (dead.rule, dead.status, dead.details["since"]) == ("dead air", "firing", T0 + 100)
    # The text counts the dead air from when the audio went quiet, as a listener heard it.
    assert dead.details["quiet_s"] == 40.0
    assert dead.text == "radio:one: dead air for 40 s (rule 'dead air')"
    (back,) = engine.on_event(event("silence_end", 140, duration_s=50.0), now=T0 + 140)
    assert (back.status, back.text) == (
        "resolved", "radio:one: audio is back after 50 s of dead air (rule 'dead air')"
    )  # fmt: skip
    engine.on_event(event("silence_start", 200), now=T0 + 200)
    assert engine.on_event(event("silence_end", 210), now=T0 + 210) == []  # ended too soon
    assert engine.tick(T0 + 300.0) == []


# ---------------------------------------------------------------------------
# The rules file's checks
# ---------------------------------------------------------------------------

GOOD_RULE = '[[rule]]\nname = "r"\nkind = "missing"\nfor_seconds = 5\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[alert]\nquiet_seconds = 1\n' + GOOD_RULE,
         "alert: unknown section; the sections are alerts, sink, rule, families"),
        ('[alerts]\nquiet_seconds = -1\n' + GOOD_RULE, "alerts.quiet_seconds: must be 0 or more"),
        ('[[rule]]\nname = "r"\nkind = "missing"\nfor_second = 5\n',
         'rule[1].for_second: unknown key for a rule of kind = "missing"; it takes for_seconds'),
        ('[[rule]]\nname = "r"\nkind = "missing"\ntag = "rock"\n',
         'rule[1].tag: does not apply to a rule of kind = "missing"'),
        ('[[rule]]\nname = "r"\nkind = "panic"\n', "rule[1].kind: expected one of threshold"),
        ('[[rule]]\nkind = "missing"\n', "rule[1].name: required"),
        (GOOD_RULE + GOOD_RULE, "rule[2].name: 'r' is used twice"),
        ('[[rule]]\nname = "r"\nkind = "threshold"\ntag = "Rock"\nat_least = 0.5\n',
         "rule[1].tag: 'Rock' is not one of the model's tags (did you mean \"rock\"?)"),
        ('[[rule]]\nname = "r"\nkind = "threshold"\nfamily = "polka"\nat_least = 0.5\n',
         "rule[1].family: no family 'polka'; the families are rock, metal"),
        ('[[rule]]\nname = "r"\nkind = "threshold"\nfamily = "rock"\n',
         "rule[1]: a threshold rule needs at_least, at_most or both"),
        ('[[rule]]\nname = "r"\nkind = "threshold"\nfamily = "rock"\ntag = "pop"\nat_least = 1\n',
         "rule[1]: a threshold rule names one tag or one family"),
        ('[[rule]]\nname = "r"\nkind = "threshold"\ntag = "pop"\nat_least = 1.5\n',
         "rule[1].at_least: must be at most 1, got 1.5"),
        ('[[rule]]\nname = "r"\nkind = "threshold"\ntag = "pop"\nat_least = 0.6\nat_most = 0.4\n',
         "rule[1]: at_least=0.6 and at_most=0.4 can never both hold"),
        ('[[rule]]\nname = "r"\nkind = "event"\nevents = ["silence-start"]\n',
         "rule[1].events: 'silence-start' matches no event kind; the kinds are silence_start"),
        ('[[rule]]\nname = "r"\nkind = "change"\nto = ["jaz"]\n',
         "rule[1].to: 'jaz' matches no family; the families are rock"),
        ('[[rule]]\nname = "r"\nkind = "missing"\nsinks = ["pager"]\n',
         "rule[1].sinks: no [[sink]] is named 'pager'; the sinks are console"),
        ('[[rule]]\nname = "r"\nkind = "missing"\nfor_seconds = "ten"\n',
         "rule[1].for_seconds: expected a number, got 'ten'"),
        ('[[rule]]\nname = "r"\nkind = "behind"\nbehind_seconds = 0\n',
         "rule[1].behind_seconds: must be greater than 0, got 0"),
        ('[[rule]]\nname = "r"\nkind = "missing"\nbehind_seconds = 5\n',
         'rule[1].behind_seconds: does not apply to a rule of kind = "missing"'),
        ("", "rule: no [[rule]]; there is nothing to alert on"),
        ('[families]\nrock = ["rock"]\n[[rule]]\nname = "r"\nkind = "threshold"\n'
         'family = "metal"\nat_least = 0.5\n',
         "rule[1].family: no family 'metal'; the families are rock"),
    ],
)  # fmt: skip
def test_rules_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        rules(text)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ('name = "h"\ntype = "webhook"\nurl = "ftp://x"\n', "sink[1].url: expected an http://"),
        ('name = "h"\ntype = "webhook"\nurl = "http://x"\nsecret_env = "TS_NOT_SET"\n',
         "sink[1].secret_env: environment variable TS_NOT_SET is not set or empty"),
        ('name = "h"\ntype = "webhook"\nurl = "http://x"\nsecret = "a"\nsecret_env = "B"\n',
         "sink[1].secret_env: give secret or secret_env, not both"),
        ('name = "c"\ntype = "command"\n', "sink[1].command: required"),
        ('name = "c"\ntype = "stdout"\nurl = "http://x"\n',
         'sink[1].url: does not apply to a sink of type = "stdout"; it takes format, name'),
        ('name = "c"\ntype = "pager"\n', "sink[1].type: expected one of webhook, command, stdout"),
        ('type = "stdout"\n', "sink[1].name: required"),
    ],
)  # fmt: skip
def test_sink_errors_name_the_key(sink: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        rules_from_toml(tomllib.loads("[[sink]]\n" + sink + GOOD_RULE), env={})
    assert str(caught.value).startswith(message), str(caught.value)


def test_no_sink_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^sink: no \[\[sink\]\]"):
        rules_from_toml(tomllib.loads(GOOD_RULE))


def test_the_command_checks_the_file_and_exits_2_on_a_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[sink]]\nname = "c"\ntype = "stdout"\nformatt = "json"\n' + GOOD_RULE)
    out, err = io.StringIO(), io.StringIO()
    assert alert_main(["--rules", str(path), "--check"], stdout=out, stderr=err) == 2
    assert err.getvalue() == (
        'error: sink[1].formatt: unknown key for a sink of type = "stdout"; '
        "it takes format, name, queue_size, type\n"
    )
    (tmp_path / "broken.toml").write_text("[[rule]\n")
    assert alert_main(["--rules", str(tmp_path / "broken.toml")], stdout=out, stderr=err) == 2
    assert alert_main(["--check"], stdout=out, stderr=err) == 2
    assert "--rules PATH is required" in err.getvalue()


def test_the_example_rules_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = ROOT / "deploy" / "alerts.example.toml"
    monkeypatch.setenv("TAGSTREAM_WEBHOOK_SECRET", SECRET)
    checked = load_rules(example)
    assert {r.kind for r in checked.rules} == set(RULE_KINDS)  # an example of each kind
    assert {s.type for s in checked.sinks} == {"webhook", "command", "stdout"}
    out = io.StringIO()
    assert alert_main(["--rules", str(example), "--check"], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue().endswith(": ok\n")


# ---------------------------------------------------------------------------
# Sinks: a real HTTP receiver and real commands
# ---------------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread that answers per a script, then 200.

    Script steps: an int is the status to answer; ``"sleep"`` sleeps ``sleep_s``
    (longer than the client's timeout) before answering 200.
    """

    def __init__(self, script: list[int | str] | None = None, *, sleep_s: float = 1.5) -> None:
        self.script = list(script or [])
        self.sleep_s = sleep_s
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = dict(self.headers.items())
                with owner.lock:
                    owner.requests.append((headers, body))
                    step = owner.script.pop(0) if owner.script else 200
                if step == "sleep":
                    time.sleep(owner.sleep_s)
                    step = 200
                if step == 200:
                    with owner.lock:
                        owner.accepted.append((headers, body))
                self.send_response(int(step))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_spec(url: str, **kwargs: Any) -> SinkSpec:
    values: dict[str, Any] = {
        "name": "hook", "type": "webhook", "url": url, "secret": SECRET,
        "timeout_seconds": 0.5, "retries": 4, "backoff_seconds": 0.05,
    }  # fmt: skip
    values.update(kwargs)
    return SinkSpec(**values)


def an_alert(n: int = 0) -> Alert:
    return Alert("metal", "threshold", "firing", "radio:one", T0 + n, 33.0,
                 f"radio:one: metal 0.70 (>= 0.5 for 30 s) #{n}", {"family": "metal"})  # fmt: skip


def test_webhook_retries_a_500_and_a_timeout_then_delivers_signed() -> None:
    with Receiver([500, "sleep"]) as receiver:
        sink = WebhookSink(webhook_spec(receiver.url))
        sink.start()
        sink.submit(an_alert())
        wait_until(lambda: sink.stats.delivered, "the third attempt to be accepted")
        sink.close()
    assert [sink.stats.delivered, sink.stats.retries, sink.stats.failed] == [1, 2, 0]
    assert len(receiver.requests) == 3
    deliveries = {headers["X-Tagstream-Delivery"] for headers, _ in receiver.requests}
    assert len(deliveries) == 1  # one id across the retries of one alert
    ((headers, body),) = receiver.accepted[-1:]
    assert headers["Content-Type"] == "application/json"
    assert verify(SECRET, headers, body)
    assert headers[SIGNATURE_HEADER] == sign(SECRET, int(headers[TIMESTAMP_HEADER]), body)
    assert not verify("wrong secret", headers, body)
    assert not verify(SECRET, headers, body + b" ")
    assert not verify(SECRET, headers, body, now=int(headers[TIMESTAMP_HEADER]) + 301)
    payload = json.loads(body)
    assert payload == an_alert().to_json_dict()
    assert payload["text"].startswith("radio:one: metal 0.70") and payload["version"] == 1


def test_webhook_gives_up_on_a_4xx_and_without_a_secret_sends_no_signature() -> None:
    with Receiver([404]) as receiver:
        sink = WebhookSink(webhook_spec(receiver.url, secret=""))
        sink.start()
        sink.submit(an_alert())
        wait_until(lambda: sink.stats.failed, "the refusal to count")
        sink.close()
    assert len(receiver.requests) == 1 and sink.stats.retries == 0
    assert SIGNATURE_HEADER not in receiver.requests[0][0]


def test_a_dead_sink_never_holds_up_the_others(tmp_path: Path) -> None:
    out = tmp_path / "delivered.jsonl"
    append = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"
    with Receiver([500] * 100) as dead_end:
        dead = WebhookSink(webhook_spec(dead_end.url, backoff_seconds=3600, queue_size=2))
        command = CommandSink(
            SinkSpec(name="cmd", type="command", command=(sys.executable, "-c", append))
        )
        sinks = SinkSet([dead, command], {})
        sinks.start()
        sinks.submit(an_alert(0))
        wait_until(lambda: dead_end.requests, "the dead sink's first attempt")  # now backing off
        for n in range(1, 5):
            sinks.submit(an_alert(n))
        wait_until(lambda: command.stats.delivered == 5, "the command sink to deliver all five")
        assert dead.stats.dropped == 2  # one in flight, two queued, the two oldest dropped
        sinks.close(timeout_s=0.2)  # the dead sink's backoff does not keep it open
    lines = out.read_text().splitlines()
    assert [json.loads(line)["text"][-2:] for line in lines] == [f"#{n}" for n in range(5)]
    assert dead.stats.delivered == 0 and len(dead_end.requests) == 1


def test_a_failing_command_is_retried(tmp_path: Path) -> None:
    marker, out = tmp_path / "failed-once", tmp_path / "alert.json"
    script = (
        "import pathlib, sys\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch(); sys.exit('not yet')\n"
        f"pathlib.Path({str(out)!r}).write_bytes(sys.stdin.buffer.read())\n"
    )
    sink = CommandSink(
        SinkSpec(
            name="cmd", type="command", command=(sys.executable, "-c", script), backoff_seconds=0.05
        )
    )
    sink.start()
    sink.submit(an_alert())
    wait_until(lambda: sink.stats.delivered, "the second run to succeed")
    sink.close()
    assert sink.stats.retries == 1
    assert json.loads(out.read_bytes()) == an_alert().to_json_dict()


def test_stdout_sink_lines() -> None:
    text, as_json = io.StringIO(), io.StringIO()
    sinks = SinkSet(
        [StdoutSink(SinkSpec(name="t"), stream=text),
         StdoutSink(SinkSpec(name="j", format="json"), stream=as_json)],
        {"metal": ("t", "j")},
    )  # fmt: skip
    with sinks:
        sinks.submit(an_alert())
        wait_until(lambda: all(s.stats.delivered for s in sinks.sinks.values()), "both lines")
    assert text.getvalue() == "2027-01-15T08:00:00Z FIRING   " + an_alert().text + "\n"
    assert json.loads(as_json.getvalue()) == an_alert().to_json_dict()


# ---------------------------------------------------------------------------
# The command on a real worker fed by real audio
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Processes, str, str]]:
    """One real worker (``python -m inference``) for this module's pipeline tests."""
    folder = tmp_path_factory.mktemp("alert-worker")
    processes = Processes(folder)
    input_endpoint, publish_endpoint = f"ipc://{folder}/in", f"ipc://{folder}/out"
    try:
        processes.worker("worker", input_endpoint, publish_endpoint)
        yield processes, input_endpoint, publish_endpoint
    finally:
        processes.cleanup()


@contextlib.contextmanager
def alert_command(
    processes: Processes, folder: Path, publish_endpoint: str, rules_text: str
) -> Iterator[subprocess.Popen[bytes]]:
    path = folder / "rules.toml"
    path.write_text(rules_text)
    env = {**os.environ, "TAGSTREAM_TEST_SECRET": SECRET}
    alert = processes.start(
        "alert", "tools.alert", "--rules", str(path), "--endpoint", publish_endpoint,
        env=env, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield alert
    finally:
        if alert.poll() is None:
            alert.send_signal(signal.SIGTERM)


#: A rule that fires at the webhook on the first update of any ``probe:*`` stream.
PROBE_RULE = (
    '[[rule]]\nname = "probe"\nkind = "threshold"\nstreams = ["probe:*"]\ntag = "rock"\n'
    'at_least = 0.0\nfor_seconds = 0\nsinks = ["hook"]\n'
)


def wait_subscribed(receiver: Receiver, input_endpoint: str) -> None:
    """A positive barrier: probe streams go through the worker until :data:`PROBE_RULE` fires.

    Its alert at the webhook proves that the alert command receives the worker's updates
    (a log line would only say that it has connected).
    """
    context: zmq.Context[Any] = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(input_endpoint)
    probe = np.zeros(int(3.2 * 16000), np.float32)
    try:
        for attempt in range(60):
            for message in audio_messages(probe, f"probe:{attempt}", block=16000):
                push.send_multipart(message)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                if probe_alerts(receiver):
                    return
                time.sleep(0.05)
        pytest.fail("the alert command never alerted on a probe stream")
    finally:
        push.close(linger=0)
        context.term()


def probe_alerts(receiver: Receiver) -> list[dict[str, Any]]:
    """The alerts of :data:`PROBE_RULE` the webhook accepted."""
    with receiver.lock:
        payloads = [json.loads(body) for _, body in receiver.accepted]
    return [payload for payload in payloads if payload["rule"] == "probe"]


def hook_sink(url: str) -> str:
    return (
        f'[[sink]]\nname = "hook"\ntype = "webhook"\nurl = "{url}"\n'
        'secret_env = "TAGSTREAM_TEST_SECRET"\nbackoff_seconds = 0.1\n'
        '[[sink]]\nname = "console"\ntype = "stdout"\nformat = "json"\n'
    )


def firing(receiver: Receiver, stream: str, status: str = "firing") -> dict[str, Any] | None:
    with receiver.lock:
        for headers, body in receiver.accepted:
            payload = json.loads(body)
            if payload["stream"] == stream and payload["status"] == status:
                assert verify(SECRET, headers, body)
                return payload
    return None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_command_stops_cleanly_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    """Long-running: Ctrl-C and SIGTERM exit 0, also with a sink stuck retrying."""
    processes = Processes(tmp_path)
    try:
        with Receiver([500] * 100) as receiver, alert_command(
            processes, tmp_path, f"ipc://{tmp_path}/nobody",
            hook_sink(receiver.url) + '[[rule]]\nname = "r"\nkind = "missing"\n'
            'streams = ["never"]\nfor_seconds = 0\n',
        ) as alert:  # fmt: skip
            wait_until(lambda: receiver.requests, "the first (failing) webhook attempt")
            alert.send_signal(sig)
            out, _ = alert.communicate(timeout=DEADLINE_S)
    finally:
        processes.cleanup()
    assert alert.returncode == 0, processes.log("alert")
    assert json.loads(out.decode().splitlines()[0])["stream"] == "never"
    assert "error:" not in processes.log("alert")


def test_a_stopped_stream_reaches_a_signed_webhook_and_its_return_resolves(
    worker: tuple[Processes, str, str], tmp_path: Path
) -> None:
    from tools.demo_audio import write_demo_wav

    processes, input_endpoint, publish_endpoint = worker
    wav = write_demo_wav(str(tmp_path / "demo.wav"), seconds=8.0)
    rules_text = "[alerts]\ncheck_interval_seconds = 0.2\n" + (
        '[[rule]]\nname = "stream stopped"\nkind = "missing"\nstreams = ["alert:*"]\n'
        "for_seconds = 2\nquiet_seconds = 0\n"
    )
    with Receiver() as receiver, alert_command(
        processes, tmp_path, publish_endpoint, hook_sink(receiver.url) + rules_text + PROBE_RULE
    ) as alert:  # fmt: skip
        wait_subscribed(receiver, input_endpoint)
        for run in ("first", "second"):
            streamer = processes.start(
                f"streamer-{run}", "streamer", "--file", wav, "--fast",
                "--endpoint", input_endpoint, "--stream-id", "alert:demo",
            )  # fmt: skip
            assert streamer.wait(timeout=DEADLINE_S) == 0, processes.log(f"streamer-{run}")
            if run == "first":
                fired = wait_until(lambda: firing(receiver, "alert:demo"), "the missing alert")
        resolved = wait_until(lambda: firing(receiver, "alert:demo", "resolved"), "the resolution")
        alert.send_signal(signal.SIGTERM)
        out, _ = alert.communicate(timeout=DEADLINE_S)
    assert alert.returncode == 0, processes.log("alert")
    assert fired["rule"] == "stream stopped" and fired["at_s"] > 0
    assert "no update for" in fired["text"] and "updates are back" in resolved["text"]
    printed = [json.loads(line) for line in out.decode().splitlines()]
    assert [(p["status"], p["stream"]) for p in printed][:2] == [
        ("firing", "alert:demo"), ("resolved", "alert:demo"),
    ]  # fmt: skip
    assert "error" not in processes.log("alert").lower()


def test_dead_air_on_a_real_stream_reaches_a_signed_webhook(
    worker: tuple[Processes, str, str], tmp_path: Path
) -> None:
    """Music, 13 s of digital silence, music: the worker's silence events reach the webhook."""
    import soundfile

    from tools.demo_audio import demo_signal

    processes, input_endpoint, publish_endpoint = worker
    music_s, silence_s, rate = 5.0, 13.0, 16000
    audio = np.concatenate(
        [
            demo_signal(sample_rate=rate, seconds=music_s),
            np.zeros(int(silence_s * rate), np.float32),
            demo_signal(sample_rate=rate, seconds=music_s),
        ]
    )
    wav = tmp_path / "dead-air.wav"
    soundfile.write(wav, audio, rate, subtype="PCM_16")
    rules_text = (
        '[[rule]]\nname = "dead air"\nkind = "event"\nstreams = ["alert:*"]\n'
        'events = ["silence_start", "silence_end"]\nquiet_seconds = 0\nsinks = ["hook"]\n'
    )
    with Receiver() as receiver, alert_command(
        processes, tmp_path, publish_endpoint, hook_sink(receiver.url) + rules_text + PROBE_RULE
    ) as alert:  # fmt: skip
        wait_subscribed(receiver, input_endpoint)
        streamer = processes.start(
            "streamer-dead-air", "streamer", "--file", str(wav), "--fast",
            "--endpoint", input_endpoint, "--stream-id", "alert:dead-air",
        )  # fmt: skip
        assert streamer.wait(timeout=DEADLINE_S) == 0, processes.log("streamer-dead-air")

        def events() -> list[dict[str, Any]]:
            with receiver.lock:
                accepted = list(receiver.accepted)
            found = []
            for headers, body in accepted:
                payload = json.loads(body)
                if payload["stream"] == "alert:dead-air" and payload["rule"] == "dead air":
                    assert verify(SECRET, headers, body)  # every delivery is signed
                    found.append(payload)
            return found

        delivered = wait_until(lambda: len(events()) >= 2 and events(), "both silence events")
        alert.send_signal(signal.SIGTERM)
        alert.communicate(timeout=DEADLINE_S)
    kinds = [payload["details"]["event"] for payload in delivered]
    assert kinds[:2] == ["silence_start", "silence_end"], delivered
    start, end = delivered[:2]
    # The text a chat shows says how long the air was dead, counted from the quiet's start.
    assert start["text"].startswith("alert:dead-air: dead air: quiet for 10 s"), start
    assert end["text"].startswith("alert:dead-air: audio back after "), end
    # silence_seconds (10 s) of quiet after the music, on the audio's own clock
    assert music_s + 10.0 - 0.5 <= start["at_s"] <= music_s + 10.0 + 1.0, start


@pytest.mark.skipif(
    not (SHARED_MUSIC / "gtzan").is_dir(),
    reason="../shared/music not found (real music for evaluation; absent on a fresh clone)",
)
def test_a_family_threshold_fires_on_a_real_jazz_recording(
    worker: tuple[Processes, str, str], tmp_path: Path
) -> None:
    processes, input_endpoint, publish_endpoint = worker
    rules_text = (
        '[[rule]]\nname = "jazz hour"\nkind = "threshold"\nstreams = ["alert:jazz"]\n'
        'family = "jazz-blues-soul"\nat_least = 0.3\nfor_seconds = 5\n'
        '[[rule]]\nname = "no metal"\nkind = "threshold"\nfamily = "metal"\nat_least = 0.3\n'
    )
    with Receiver() as receiver, alert_command(
        processes, tmp_path, publish_endpoint, hook_sink(receiver.url) + rules_text + PROBE_RULE
    ) as alert:  # fmt: skip
        wait_subscribed(receiver, input_endpoint)
        streamer = processes.start(
            "streamer-jazz", "streamer", "--file", str(SHARED_MUSIC / "gtzan" / "jazz.00001.flac"),
            "--fast", "--endpoint", input_endpoint, "--stream-id", "alert:jazz",
        )  # fmt: skip
        assert streamer.wait(timeout=DEADLINE_S) == 0, processes.log("streamer-jazz")
        fired = wait_until(lambda: firing(receiver, "alert:jazz"), "the jazz alert")
        alert.send_signal(signal.SIGTERM)
        alert.communicate(timeout=DEADLINE_S)
    assert alert.returncode == 0, processes.log("alert")
    assert fired["rule"] == "jazz hour" and fired["details"]["score"] >= 0.3
    assert fired["at_s"] - fired["details"]["since_s"] >= 5.0
    rules = [json.loads(body)["rule"] for _, body in receiver.accepted]
    assert [rule for rule in rules if rule != "probe"] == ["jazz hour"]
