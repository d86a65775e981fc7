"""The web dashboard: access rules over real HTTP, and the page in a real headless Chromium.

The browser test runs a real inference worker (``inference.worker.Worker`` with
the real MSD_musicnn weights) in a thread of the test process, fed at real-time
pace with synthesized music, and a :class:`tools.web.WebDashboard` in another
thread; the page is read through the DOM.  Waits are bounded by generous
deadlines that only turn a hang into a failure; nothing asserts on durations.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from helpers import wait_until, worker_config

from protocol import (
    AudioFrame,
    EndOfStream,
    Event,
    TagUpdate,
    encode_audio,
    encode_end,
    encode_event,
    encode_update,
)
from tagstream.errors import ExitStatus
from tools.demo_audio import demo_signal
from tools.web import SPARE_THREADS, WebDashboard, WebError, main

#: Bound on any single wait (model loading on a busy 2-core machine included).
DEADLINE_S = 90.0
SAMPLE_RATE = 16000
BLOCK = 1600  # 0.1 s
#: An endpoint nobody publishes on: the access tests need a server, not updates.
NOWHERE = "tcp://127.0.0.1:9"


def http_get(url: str, **headers: str) -> tuple[int, Message, bytes]:
    """Status, headers (names case-insensitive, as in HTTP) and body of a GET."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE_S) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


# ---------------------------------------------------------------------------
# Access: token and loopback rules, over real HTTP
# ---------------------------------------------------------------------------


def test_a_request_without_the_token_gets_401() -> None:
    with WebDashboard(NOWHERE, bind="127.0.0.1:0", token="s3cret-token") as web:
        web.start()
        base = f"http://127.0.0.1:{web.port}"
        for path in ("/", "/app.js", "/events", "/api/snapshot", "/?token=wrong"):
            status, headers, body = http_get(base + path)
            assert status == 401, path
            assert b"token" in body
            assert headers["WWW-Authenticate"].startswith("Bearer")
        assert http_get(base + "/", Cookie="tagstream_token=wrong")[0] == 401
        status, headers, body = http_get(base + "/?token=s3cret-token")
        assert status == 200 and b"<canvas" in body
        cookie = headers["Set-Cookie"]
        assert cookie.startswith("tagstream_token=s3cret-token") and "HttpOnly" in cookie
        # the page's own requests carry the cookie; scripts may send a bearer token
        assert http_get(base + "/app.js", Cookie="tagstream_token=s3cret-token")[0] == 200
        status, _, body = http_get(base + "/api/snapshot", Authorization="Bearer s3cret-token")
        assert status == 200 and b'"streams":{}' in body
        assert web.url.endswith("/?token=s3cret-token")


def test_binding_beyond_loopback_requires_a_token() -> None:
    with pytest.raises(WebError, match="set a token"):
        WebDashboard(NOWHERE, bind="0.0.0.0:0")
    with WebDashboard(NOWHERE, bind="0.0.0.0:0", token="t0ken") as web:
        web.start()
        assert http_get(f"http://127.0.0.1:{web.port}/")[0] == 401
        assert http_get(f"http://127.0.0.1:{web.port}/?token=t0ken")[0] == 200


def test_without_a_token_only_loopback_host_names_are_served() -> None:
    with WebDashboard(NOWHERE, bind="127.0.0.1:0") as web:
        web.start()
        url = f"http://127.0.0.1:{web.port}/"
        assert http_get(url)[0] == 200
        assert http_get(url, Host=f"localhost:{web.port}")[0] == 200
        assert http_get(url, Host="attacker.example")[0] == 403  # DNS rebinding
        assert http_get(url + "../config.toml")[0] == 404  # only the page's own files


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (["--bind", "0.0.0.0:8080"], "set a token", 2),
        (["--bind", "localhost"], "web.bind: expected HOST:PORT", 2),
        (["--history-seconds", "0"], "web.history_seconds: must be greater than 0", 2),
    ],
)
def test_cli_refuses_bad_settings_in_one_line(argv: list[str], message: str, status: int) -> None:
    import io

    err = io.StringIO()
    assert main([*argv, "--endpoint", NOWHERE], stdout=io.StringIO(), stderr=err) == status
    assert err.getvalue().startswith("error: ") and message in err.getvalue()
    assert err.getvalue().count("\n") == 1


def test_cli_reports_an_address_in_use_with_its_own_status() -> None:
    import io

    with WebDashboard(NOWHERE, bind="127.0.0.1:0") as web:
        web.start()
        err = io.StringIO()
        argv = ["--bind", f"127.0.0.1:{web.port}", "--endpoint", NOWHERE]
        assert main(argv, stdout=io.StringIO(), stderr=err) == ExitStatus.ENDPOINT
        assert "cannot serve on" in err.getvalue()


# ---------------------------------------------------------------------------
# The server under many idle connections (issue 12: one thread per connection, no timeout)
# ---------------------------------------------------------------------------


def server_sockets(port: int) -> int:
    """Sockets of this process whose local port is ``port``: the listener and accepted ones."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:[") and link[8:-1] in inodes:
                count += 1
    return count


def server_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("waitress"))


def test_many_idle_connections_keep_threads_and_sockets_bounded_and_are_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """500 idle connections (100 of them with an unfinished request) against a server
    that allows 50 at once: its threads stay its fixed pool, its sockets stay within the
    limit, every idle connection is closed after the idle timeout, and a normal request
    made in the middle of it all is answered."""
    import resource
    import selectors

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    limit, pages = 50, 4
    with WebDashboard(
        NOWHERE, bind="127.0.0.1:0", max_connections=limit, max_pages=pages, idle_timeout_s=2
    ) as web:
        web.start()
        pool = server_threads()
        assert pool == pages + SPARE_THREADS
        idle: list[socket.socket] = []
        try:
            for i in range(500):
                conn = socket.create_connection(("127.0.0.1", web.port), timeout=DEADLINE_S)
                if i < 100:  # slowloris: a request that never ends
                    conn.sendall(b"GET /api/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ")
                idle.append(conn)
            answered: list[object] = []

            def normal_request() -> None:
                try:
                    answered.append(http_get(f"http://127.0.0.1:{web.port}/api/snapshot")[0])
                except OSError as exc:
                    answered.append(exc)

            normal = threading.Thread(target=normal_request)
            normal.start()
            wait_until(lambda: server_sockets(web.port) >= limit // 2, "the server accepting")
            selector = selectors.DefaultSelector()
            for conn in idle:
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ)
            open_ = len(idle)
            most_sockets = most_threads = 0
            deadline = time.monotonic() + 4 * DEADLINE_S
            while open_ and time.monotonic() < deadline:
                most_sockets = max(most_sockets, server_sockets(web.port))
                most_threads = max(most_threads, server_threads())
                for key, _ in selector.select(timeout=0.5):
                    try:
                        data = key.fileobj.recv(4096)
                    except (ConnectionResetError, BlockingIOError):
                        data = b""
                    if not data:  # closed by the server (an unfinished request may get a 4xx)
                        selector.unregister(key.fileobj)
                        open_ -= 1
            selector.close()
            normal.join(timeout=DEADLINE_S)
        finally:
            for conn in idle:
                conn.close()
        print(
            f"500 idle connections: at most {most_sockets} server sockets, {most_threads} threads"
        )
        assert open_ == 0, f"{open_} idle connections were never closed"
        assert answered == [200]
        assert most_threads == pool  # no thread per connection
        assert most_sockets <= limit + 1  # the listener and at most `limit` connections
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ---------------------------------------------------------------------------
# The page, in Chromium, fed by a real worker
# ---------------------------------------------------------------------------


class RealTimeFeeder:
    """Push mono audio of several streams to a worker at real-time pace, from a thread."""

    def __init__(self, endpoint: str, signals: dict[str, np.ndarray]) -> None:
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(endpoint)
        self.signals = signals
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        wall = time.time()
        blocks = max(len(y) for y in self.signals.values()) // BLOCK
        for seq in range(blocks):
            # block seq may go once its last sample would have been captured
            self.stop.wait(max(0.0, started + (seq + 1) * BLOCK / SAMPLE_RATE - time.monotonic()))
            if self.stop.is_set():
                break
            for stream, y in self.signals.items():
                chunk = y[seq * BLOCK : (seq + 1) * BLOCK]
                if len(chunk) == BLOCK:
                    frame = AudioFrame(
                        stream=stream,
                        seq=seq,
                        capture_time=wall + seq * BLOCK / SAMPLE_RATE,
                        sample_rate=SAMPLE_RATE,
                        channels=1,
                        sample_format="f32",
                        samples=np.ascontiguousarray(chunk[:, None]),
                    )
                    self.push.send_multipart(encode_audio(frame), copy=False)
        for stream in self.signals:
            self.push.send_multipart(encode_end(EndOfStream(stream=stream, seq=blocks)))

    def __enter__(self) -> RealTimeFeeder:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.push.close(linger=0)
        self.context.term()


@pytest.fixture(scope="module")
def worker(tagger: Any) -> Iterator[Any]:
    """A real inference worker on the session's tagger in a thread, on free tcp ports."""
    from inference.worker import Worker

    worker = Worker(worker_config(), tagger=tagger)
    worker.start()
    thread = worker.run_in_thread()
    yield worker
    worker.stop()
    thread.join(timeout=30)
    worker.close()


def synth_signals(rng: np.random.Generator, seconds: float) -> dict[str, np.ndarray]:
    """Two different streams: the demo tune, and tones over noise with a slow beat."""
    tune = demo_signal(sample_rate=SAMPLE_RATE, seconds=seconds)
    t = np.arange(len(tune)) / SAMPLE_RATE
    drone = 0.3 * np.sin(2 * np.pi * 110 * t) + 0.2 * np.sin(2 * np.pi * 330 * t)
    drone += 0.4 * (np.sin(2 * np.pi * 1.5 * t) > 0.9) * rng.standard_normal(len(t))
    drone += 0.05 * rng.standard_normal(len(t))
    return {"studio-a": tune, "booth-b": (0.5 * drone).astype(np.float32)}


def read_bars(page: Any, stream: str) -> list[tuple[str, float, float]]:
    """(tag, value, bar width in %) of a stream's bars, top first, from the DOM."""
    rows = page.eval_on_selector_all(
        f'section.stream[data-stream="{stream}"] li.bar:not([hidden])',
        "rows => rows.map(r => [r.dataset.tag, r.dataset.value,"
        " r.querySelector('.fill').style.width])",
    )
    return [(tag, float(value), float(width.rstrip("%"))) for tag, value, width in rows]


def seq_of(page: Any, stream: str) -> int:
    return int(page.get_attribute(f'section.stream[data-stream="{stream}"]', "data-seq"))


def test_page_shows_every_stream_with_live_bars_heatmap_and_changes(
    browser: Any, worker: Any, rng: np.random.Generator, tmp_path: Path
) -> None:
    tags = set(worker.tagger.contract.tags)
    deadline_ms = DEADLINE_S * 1000
    with WebDashboard(worker.publish_endpoint, bind="127.0.0.1:0") as web:
        web.start()
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(web.url)
            page.wait_for_selector('#connection[data-state="live"]', timeout=deadline_ms)
            signals = synth_signals(rng, seconds=60.0)
            with RealTimeFeeder(worker.input_endpoint, signals):
                for stream in signals:
                    page.wait_for_selector(
                        f'section.stream[data-stream="{stream}"][data-seq]', timeout=deadline_ms
                    )
                first_seq = seq_of(page, "studio-a")
                first = read_bars(page, "studio-a")
                page.wait_for_function(
                    "seq => +document.querySelector('section.stream[data-stream=\"studio-a\"]')"
                    ".dataset.seq >= seq",
                    arg=first_seq + 4,
                    timeout=deadline_ms,
                )
                second = read_bars(page, "studio-a")
                page.wait_for_function(
                    '() => +document.querySelector(\'section.stream[data-stream="studio-a"] '
                    "canvas').dataset.columns >= 5",
                    timeout=deadline_ms,
                )
                heatmap = page.evaluate(
                    """() => {
                        const c = document.querySelector(
                            'section.stream[data-stream="studio-a"] canvas');
                        const px = c.getContext('2d').getImageData(
                            0, 0, c.width, c.height).data;
                        const colours = new Set();
                        for (let i = 0; i < px.length; i += 4 * 97)
                            colours.add(px[i] + ',' + px[i + 1] + ',' + px[i + 2]);
                        return colours.size;
                    }"""
                )
                changes = page.eval_on_selector_all(
                    'section.stream[data-stream="studio-a"] .changes li',
                    "items => items.map(li => li.dataset.tag)",
                )
                names = page.eval_on_selector_all(
                    "section.stream .stream-name", "nodes => nodes.map(n => n.textContent)"
                )
                health = page.get_attribute(
                    'section.stream[data-stream="studio-a"] .health', "data-status"
                )
                screenshot = tmp_path / "web.png"
                page.screenshot(path=str(screenshot), full_page=True)
                print(f"web dashboard screenshot: {screenshot}")
        finally:
            context.close()
    assert sorted(names) == ["booth-b", "studio-a"]
    assert len(first) == len(second) == 10
    for bars in (first, second):
        assert {tag for tag, _, _ in bars} <= tags
        values = [value for _, value, _ in bars]
        assert values == sorted(values, reverse=True)
        for _, value, width in bars:
            assert width == pytest.approx(100 * value, abs=0.06)
    assert first != second  # the bars moved with the music
    assert heatmap > 10  # many colours: the heatmap is drawn, not blank
    assert changes and set(changes) <= tags  # at least the first dominant tag
    assert health in ("ok", "behind", "late")  # how far behind depends on the machine
    assert errors == []
    assert screenshot.stat().st_size > 10_000


# ---------------------------------------------------------------------------
# Many streams: the overview, events as they come (updates from a real PUB socket)
# ---------------------------------------------------------------------------

STATION_TAGS = ("rock", "pop", "jazz", "electronic", "ambient", "classical")


class StationPublisher:
    """Publish tag updates of many streams on a real PUB socket, from a thread, until closed;
    events go out from the same thread (a ZeroMQ socket stays in one thread)."""

    def __init__(
        self,
        streams: list[str],
        rng: np.random.Generator,
        behind_s: dict[str, float] | None = None,
    ) -> None:
        self.behind_s = behind_s or {}
        self.context = zmq.Context()
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.streams = streams
        self.values = {s: rng.dirichlet(np.ones(len(STATION_TAGS))) for s in streams}
        self.events: queue.Queue[Event] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stations", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        seq = 0
        while not self.stop.wait(0.25):
            now = time.time()
            for stream in self.streams:
                p = self.values[stream].astype(np.float32)
                update = TagUpdate(
                    stream=stream, seq=seq, start_s=0.5 * seq, end_s=0.5 * seq + 3.0,
                    model="MSD_musicnn", tags=STATION_TAGS, probabilities=p, smoothed=p,
                    capture_time=now - 0.1, received_time=now - 0.05, published_time=now,
                    gaps=0, dropped=0, content="music", level_dbfs=-18.0,
                    behind_s=self.behind_s.get(stream, 0.05),
                    shed=seq if self.behind_s.get(stream, 0.0) > 5.0 else 0,
                )  # fmt: skip
                self.pub.send_multipart(encode_update(update), copy=False)
            while not self.events.empty():
                self.pub.send_multipart(encode_event(self.events.get()))
            seq += 1
        self.pub.close(linger=0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=DEADLINE_S)
        self.context.term()


def test_fifty_streams_fit_one_screen_with_alarms_and_events_as_they_come(
    browser: Any, rng: np.random.Generator, tmp_path: Path
) -> None:
    names = [f"station-{i:02d}" for i in range(50)]
    # station-44's worker tags it 7.2 s behind its audio (more streams than it can tag);
    # station-45 is 1.2 s behind, as streaming mode's look-ahead makes every stream.
    stations = StationPublisher(names, rng, behind_s={"station-44": 7.2, "station-45": 1.2})
    deadline_ms = DEADLINE_S * 1000
    try:
        with WebDashboard(stations.endpoint, bind="127.0.0.1:0") as web:
            web.start()
            wait_until(lambda: len(web.model) == len(names), "every station's updates")
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            try:
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(web.url)
                page.wait_for_function(
                    "n => document.querySelectorAll('#overview .row[data-dominant]').length >= n",
                    arg=len(names),
                    timeout=deadline_ms,
                )
                assert page.get_attribute("body", "data-view") == "overview"  # auto: many
                # events arrive while the page is open
                now = time.time()
                stations.events.put(Event("station-07", "silence_start", time=now, at_s=40.0,
                    fields={"silence_since_s": 30.0, "level_dbfs": -80.0,
                            "threshold_dbfs": -50.0}))  # fmt: skip
                stations.events.put(Event("station-31", "now_playing", time=now, at_s=41.0,
                                          fields={"title": "Nina Simone - Sinnerman"}))  # fmt: skip

                # a change of content placed 5 s before the window that confirmed it (or
                # more: the stations go on publishing until the event is sent)
                def station_12_end() -> float:
                    with web.model.lock:
                        latest = web.model["station-12"].latest
                    return 0.0 if latest is None else latest.end_s

                wait_until(lambda: station_12_end() >= 8.0, "8 s of station-12's audio")
                talk = {"content": "speech", "previous": "music"}
                stations.events.put(Event("station-12", "content_change", time=now,
                                          at_s=station_12_end() - 5.0, fields=talk))  # fmt: skip
                page.wait_for_selector(
                    '#overview .row[data-stream="station-07"][data-silent="true"]',
                    timeout=deadline_ms,
                )
                page.wait_for_selector('#feed li[data-event="now_playing"]', timeout=deadline_ms)
                page.wait_for_selector('#feed li[data-event="content_change"]', timeout=deadline_ms)
                change_status = web.snapshot()["streams"]["station-12"]["status"]
                layout = page.evaluate(
                    """() => ({
                        height: window.innerHeight,
                        scroll: document.documentElement.scrollHeight,
                        rows: [...document.querySelectorAll('#overview .row')].map(r => {
                            const b = r.getBoundingClientRect();
                            return [r.dataset.stream, b.top, b.bottom];
                        }),
                    })"""
                )
                dead_air = page.text_content('#overview .row[data-stream="station-07"] .row-on-air')
                dead_air_colour = page.evaluate(
                    """() => getComputedStyle(document.querySelector(
                        '#overview .row[data-stream="station-07"] .row-on-air')).backgroundColor"""
                )
                title = page.text_content('#overview .row[data-stream="station-31"] .row-on-air')
                feed = page.eval_on_selector_all(
                    "#feed li", "items => items.map(li => [li.dataset.event, li.textContent])"
                )
                alarms = page.text_content("#alarms")
                # The worker being behind shows on its stream's row (how far, on hovering)
                # and in the header's count; waited for, as a loaded machine can make a
                # stream "late" (no update for 2 s) for a moment, which comes first.
                behind_row = '#overview .row[data-stream="station-44"][data-status="behind"]'
                page.wait_for_selector(behind_row, timeout=deadline_ms)
                behind_title = page.get_attribute(f"{behind_row} .row-state", "title")
                page.wait_for_function(
                    "() => document.querySelector('#behind').textContent === '1 behind'",
                    timeout=deadline_ms,
                )
                states = {
                    s: page.get_attribute(f'#overview .row[data-stream="{s}"]', "data-status")
                    for s in ("station-45", "station-46")
                }
                screenshot = tmp_path / "overview.png"
                page.screenshot(path=str(screenshot))
                print(f"web overview screenshot: {screenshot}")
                page.click('.views button[data-view="detail"]')
                page.wait_for_selector('body[data-view="detail"]', timeout=deadline_ms)
                shown = page.eval_on_selector_all(
                    "section.stream", "nodes => nodes.filter(n => !n.hidden).length"
                )
                assert "view=detail" in page.url
            finally:
                context.close()
    finally:
        stations.close()
    assert sorted(stream for stream, _, _ in layout["rows"]) == names
    assert all(bottom <= layout["height"] for _, _, bottom in layout["rows"]), layout
    assert layout["scroll"] <= layout["height"]  # one screen, no scrolling
    # when the quiet began (audio 30 s), 10 s before the worker said so (audio 40 s)
    clock = time.strftime("%H:%M:%S", time.localtime(now - 10.0))
    assert dead_air == f"DEAD AIR since {clock}"
    assert dead_air_colour == "rgb(224, 80, 80)"
    assert title == "♪ Nina Simone - Sinnerman"
    assert [kind for kind, _ in feed[:3]] == ["content_change", "now_playing", "silence_start"]
    # the page shows a change of content when it happened, as the server placed it
    [change] = [e for e in change_status["events"] if e["event"] == "content_change"]
    assert 5.0 <= now - change["began_time"] <= 60.0, change
    change_clock = time.strftime("%H:%M:%S", time.localtime(change["began_time"]))
    assert feed[0] == ["content_change", f"{change_clock}station-12music → speech"], feed
    assert feed[2][1].startswith(f"{clock}station-07dead air")
    assert alarms == "1 alarm"
    # streaming mode's 1.2 s look-ahead is not being behind
    assert "behind" not in states.values() and set(states.values()) <= {"ok", "late"}, states
    assert behind_title is not None and behind_title.startswith("tagged 7.2 s behind its audio")
    assert shown == len(names)
    assert errors == []
