"""The terminal dashboard: its data model (:mod:`monitor.history`) and its view.

The model gets real updates through a real PUB socket.

Updates are real :class:`protocol.TagUpdate` objects, encoded with
``protocol.encode_update``, published on a ZeroMQ PUB socket and received by a
:class:`protocol.subscriber.Subscriber`, exactly as from a worker.  The health
figures read a clock the test sets, so ages are exact without waiting.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from rich.console import Console

from monitor.history import DashboardModel, StreamHistory
from protocol import Event, TagUpdate, encode_event, encode_update
from protocol.subscriber import Subscriber
from tools.dashboard import main, render_dashboard, sparkline

TAGS = ("rock", "pop", "jazz", "electronic", "ambient")
HOP_S = 0.5
#: Bound on any receive: only there so a broken socket fails the test instead of hanging.
DEADLINE_S = 30.0


class SetClock:
    """A clock that reads what the test set: ``clock.now = 12.0``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_update(
    seq: int,
    smoothed: list[float],
    *,
    stream: str = "studio-a",
    probabilities: list[float] | None = None,
    latency_s: float = 0.1,
    gaps: int = 0,
    dropped: int = 0,
    behind_s: float | None = None,
    shed: int = 0,
) -> TagUpdate:
    end_s = 3.0 + HOP_S * seq
    published = 1.7e9 + end_s
    return TagUpdate(
        stream=stream,
        seq=seq,
        start_s=end_s - 3.0,
        end_s=end_s,
        model="MSD_musicnn",
        tags=TAGS,
        probabilities=np.array(probabilities or smoothed, dtype=np.float32),
        smoothed=np.array(smoothed, dtype=np.float32),
        capture_time=published - latency_s,
        received_time=published - latency_s / 2,
        published_time=published,
        gaps=gaps,
        dropped=dropped,
        behind_s=behind_s,
        shed=shed,
    )


class Wire:
    """A PUB socket and a subscriber connected to it, with the subscription joined."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind("tcp://127.0.0.1:*")
        self.endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.subscriber = Subscriber(self.endpoint, context=self.context, events=True)
        # PUB drops what it sends before the subscription arrives: probe until one comes back
        probe = make_update(0, [0.2] * len(TAGS), stream="probe")
        for _ in range(100):
            self.pub.send_multipart(encode_update(probe), copy=False)
            if self.subscriber.receive(timeout_s=0.1) is not None:
                break
        else:
            raise AssertionError("the subscriber never received a probe")
        while self.subscriber.receive(timeout_s=0.2) is not None:
            pass  # drain the remaining probes

    def send_and_receive(self, update: TagUpdate) -> TagUpdate:
        self.pub.send_multipart(encode_update(update), copy=False)
        received = self.subscriber.receive(timeout_s=DEADLINE_S)
        assert received is not None, "no update came back"
        return received

    def close(self) -> None:
        self.subscriber.close()
        self.pub.close(linger=0)
        self.context.term()


@pytest.fixture
def wire() -> Iterator[Wire]:
    w = Wire()
    yield w
    w.close()


def test_history_dominant_changes_and_health_from_a_pub_socket(wire: Wire) -> None:
    clock = SetClock()
    model = DashboardModel(history_seconds=2.0, clock=clock)
    sent = [
        make_update(0, [0.6, 0.3, 0.1, 0.0, 0.0]),  # rock is the first dominant tag
        make_update(1, [0.5, 0.3, 0.3, 0.0, 0.0], latency_s=0.3),
        make_update(2, [0.4, 0.3, 0.405, 0.0, 0.0]),  # jazz leads by less than the margin
        make_update(3, [0.3, 0.3, 0.5, 0.0, 0.0], latency_s=0.2),  # jazz takes over
        # seq 4 never sent: one missed update
        make_update(5, [0.2, 0.6, 0.5, 0.0, 0.0], gaps=2, dropped=1),  # then pop
        make_update(6, [0.2, 0.7, 0.4, 0.0, 0.0], gaps=2, dropped=1),
        make_update(7, [0.2, 0.8, 0.3, 0.0, 0.0], gaps=2, dropped=1),
        make_update(8, [0.1, 0.9, 0.2, 0.1, 0.0], gaps=3, dropped=1),
    ]
    changes = []
    for update in sent:
        received = wire.send_and_receive(update)
        changes.append(model.add(received))
    assert model.streams() == ["studio-a"]
    history = model["studio-a"]

    # dominant tag: rock, then jazz once it leads by the margin, then pop
    assert [(c.previous, c.tag) for c in changes if c] == [
        (None, "rock"),
        ("rock", "jazz"),
        ("jazz", "pop"),
    ]
    assert [c.end_s for c in history.changes] == [3.0, 4.5, 5.5]
    assert changes[2] is None and history.dominant == "pop"
    assert history.changes[1].probability == pytest.approx(0.5)

    # the ring buffer keeps 2 s of audio back from the newest window end (7.0 s)
    assert [u.seq for u in history.entries] == [5, 6, 7, 8]
    times, values = history.series("pop")
    np.testing.assert_allclose(times, [5.5, 6.0, 6.5, 7.0])
    np.testing.assert_allclose(values, [0.6, 0.7, 0.8, 0.9], rtol=1e-6)
    assert history.matrix()[1].shape == (4, len(TAGS))
    assert history.top_tags(2) == [("pop", pytest.approx(0.9)), ("jazz", pytest.approx(0.2))]

    health = history.health(now=clock.now)
    assert (health.status, health.age_s, health.updates) == ("ok", 0.0, 8)
    assert (health.gaps, health.dropped, health.missed, health.restarts) == (3, 1, 1, 0)
    assert health.hop_s == pytest.approx(HOP_S)
    assert health.latency_s == pytest.approx(0.1, abs=1e-6)
    assert health.latency_p50_s == pytest.approx(0.1, abs=1e-6)  # of 0.1 x6, 0.2, 0.3
    clock.now += 2.5  # more than 4 hops (2 s) without an update
    assert history.health(now=clock.now).status == "late"
    clock.now += 10.0
    assert history.health(now=clock.now).status == "stale"
    assert model.forget_idle(idle_s=60.0) == []
    clock.now += 60.0
    assert model.forget_idle(idle_s=60.0) == ["studio-a"] and len(model) == 0


def test_a_stream_that_starts_over_clears_its_history(wire: Wire) -> None:
    model = DashboardModel()
    for seq in range(4):
        model.add(wire.send_and_receive(make_update(seq, [0.5, 0.2, 0.1, 0.1, 0.1])))
    # the worker restarted: seq and audio time begin again
    change = model.add(wire.send_and_receive(make_update(0, [0.1, 0.1, 0.1, 0.6, 0.1])))
    history = model["studio-a"]
    assert [u.seq for u in history.entries] == [0]
    assert history.restarts == 1 and history.missed == 0 and history.updates == 1
    assert change is not None and (change.previous, change.tag) == (None, "electronic")


def test_a_looped_stream_continues_its_history_without_repeating_the_dominant_tag(
    wire: Wire,
) -> None:
    """tools.live's demo: the same file played again starts seq and audio time over."""
    model = DashboardModel(continue_restarts=True)
    rock = [0.6, 0.2, 0.1, 0.05, 0.05]
    jazz = [0.1, 0.2, 0.6, 0.05, 0.05]
    changes = []
    for loop, smoothed in enumerate((rock, rock, jazz)):
        for seq in range(4):
            changes.append(model.add(wire.send_and_receive(make_update(seq, smoothed))))
        assert model["studio-a"].loops == loop
    history = model["studio-a"]
    seqs = [u.seq for u in history.entries]
    ends = [u.end_s for u in history.entries]
    assert seqs == list(range(12))  # counted on, nothing missed
    assert all(b > a for a, b in itertools.pairwise(ends))  # time goes on
    assert ends[4] == ends[3] + HOP_S  # the second loop's first window a hop after
    assert [(c.previous, c.tag) for c in changes if c] == [(None, "rock"), ("rock", "jazz")]
    assert (history.restarts, history.missed, history.updates) == (0, 0, 12)


def test_several_streams_are_kept_apart(wire: Wire, rng: np.random.Generator) -> None:
    model = DashboardModel()
    for seq in range(6):
        for stream in ("b-stream", "a-stream"):
            values = rng.random(len(TAGS)).astype(np.float32).tolist()
            model.add(wire.send_and_receive(make_update(seq, values, stream=stream)))
    assert model.streams() == ["a-stream", "b-stream"]
    for stream in model.streams():
        assert [u.seq for u in model[stream].entries] == list(range(6))
        assert {u.stream for u in model[stream].entries} == {stream}
    with pytest.raises(ValueError, match="added to"):
        model["a-stream"].add(make_update(6, [0.2] * 5, stream="b-stream"), received_at=0.0)


@pytest.mark.parametrize("history_seconds", [0.5, 3.0, 60.0])
def test_history_never_spans_more_than_history_seconds(
    history_seconds: float, rng: np.random.Generator
) -> None:
    history = StreamHistory("s", history_seconds=history_seconds)
    for seq in range(200):
        history.add(make_update(seq, rng.random(5).tolist(), stream="s"), received_at=0.0)
        ends = [u.end_s for u in history.entries]
        assert ends[-1] - ends[0] <= history_seconds
        assert ends[-1] == 3.0 + HOP_S * seq
    assert len(history.entries) == int(history_seconds / HOP_S) + 1


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_history_seconds_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="history_seconds"):
        DashboardModel(history_seconds=bad)


def test_sparkline_shows_the_largest_value_of_each_column() -> None:
    times = np.array([0.0, 0.4, 1.0, 2.5, 3.9])
    values = np.array([0.1, 1.0, 0.5, 0.0, 0.25])
    line = sparkline(times, values, start_s=0.0, end_s=4.0, columns=4)
    assert line == "█▄▁▂"  # 1.0 full, 0.5 half, 0.0 the lowest block (data, unlike a blank)
    assert sparkline(times, values, start_s=0.0, end_s=4.0, columns=4, scale=0.5) == "██▁▄"
    assert sparkline(np.array([3.9]), np.array([0.5]), start_s=0, end_s=4, columns=4) == "   ▄"


def test_render_shows_stream_names_tag_bars_and_health(wire: Wire) -> None:
    clock = SetClock()
    model = DashboardModel(clock=clock)
    for seq in range(10):
        rock = 0.8 - 0.05 * seq
        for stream in ("studio-a", "booth-b"):
            model.add(
                wire.send_and_receive(make_update(seq, [rock, 0.3, 0.1, 0.05, 0.02], stream=stream))
            )
    console = _console()
    console.print(render_dashboard(model, top_k=3))
    text = console.export_text()
    assert text.startswith("tagstream dashboard - booth-b, studio-a")
    lines = text.splitlines()
    for stream in ("studio-a", "booth-b"):
        assert any(stream in line and "MSD_musicnn" in line for line in lines)
    rock_line = next(line for line in lines if "│ rock" in line)
    pop_line = next(line for line in lines if "│ pop" in line)
    assert "0.35" in rock_line and "0.30" in pop_line
    assert rock_line.count("█") > pop_line.count("█") > 0  # bars, longer for the higher tag
    assert "ambient" not in text  # top 3 only
    assert "● ok" in text and "latency 100 ms" in text and "missed 0" in text
    assert re.search(r"dominant: \d\d:\d\d:\d\d rock", text)  # wall-clock time
    clock.now += 30.0
    stale = _console()
    stale.print(render_dashboard(model))
    assert "● stale" in stale.export_text()


def test_a_stream_the_worker_tags_far_behind_shows_as_behind(wire: Wire) -> None:
    """Updates that come on time but far behind their stream's audio (a worker with more
    streams than it can tag) say so; streaming mode's look-ahead (about 1.2 s) does not.

    The detail view flagged anything from 1 s on, so every stream in streaming mode
    showed "behind" in red; the overview and the health line did not show it at all.
    """
    clock = SetClock()
    model = DashboardModel(clock=clock)
    for seq in range(6):
        for stream, behind_s, shed in (("streaming", 1.25, 0), ("archive-2", 7.4, 3 + seq)):
            update = make_update(
                seq, [0.6, 0.3, 0.1, 0.05, 0.02], stream=stream, behind_s=behind_s, shed=shed
            )
            model.add(wire.send_and_receive(update))
    assert model["streaming"].health(now=clock.now).status == "ok"
    health = model["archive-2"].health(now=clock.now)
    assert (health.status, health.behind_s, health.shed) == ("behind", pytest.approx(7.4), 8)

    console = _console(width=120, height=60)
    console.print(render_dashboard(model, view="detail"))
    lines = console.export_text().splitlines()
    assert lines[0].endswith("  1 behind"), lines[0]  # the header counts them
    [head_archive] = [line for line in lines if "─ archive-2 " in line]
    [head_streaming] = [line for line in lines if "─ streaming " in line]
    assert "behind 7.4 s · shed 8" in head_archive and "behind" not in head_streaming
    health_lines = [line for line in lines if "updated " in line]
    assert ["● behind" in h and "shed 8" in h for h in health_lines] == [True, False]
    assert ["● ok" in h and "shed 0" in h for h in health_lines] == [False, True]
    overview = _console(width=120, height=20)
    overview.print(render_dashboard(model, view="overview"))
    rows = {line.split()[0]: line for line in overview.export_text().splitlines() if line.strip()}
    assert "● behind" in rows["archive-2"] and "● ok" in rows["streaming"]


def test_render_before_any_update_says_it_waits() -> None:
    console = _console()
    console.print(render_dashboard(DashboardModel(), title="tagstream live"))
    text = console.export_text().strip()
    assert re.fullmatch(r"tagstream live - waiting for tags \.\.\. \(\d\d:\d\d:\d\d\)", text)


def _console(width: int = 100, height: int = 25, *, terminal: bool = False) -> Console:
    """A recording console; ``terminal``: it behaves as a terminal of that size."""
    return Console(
        record=True,
        width=width,
        height=height,
        file=io.StringIO(),
        color_system=None,
        force_terminal=terminal,
    )


def silence(stream: str, at_s: float) -> Event:
    return Event(
        stream,
        "silence_start",
        time=1.7e9 + at_s,
        at_s=at_s,
        fields={"silence_since_s": at_s - 10, "level_dbfs": -80.0, "threshold_dbfs": -50.0},
    )


def test_a_content_change_shows_when_the_content_changed(wire: Wire) -> None:
    """The worker confirms a change of content seconds after it (``change_seconds``
    plus half a window) and places its ``at_s`` where it happened; the views show that
    moment: the event's time less how far the confirming window's end lies after
    ``at_s``, on the stream's own timeline even once the demo's loop shifted it."""
    model = DashboardModel(continue_restarts=True)
    for seq in range(20):  # windows ending at 3.0 ... 12.5 s
        model.add(wire.send_and_receive(make_update(seq, [0.6, 0.2, 0.1, 0.05, 0.05])))
    said = 1.7e9 + 2000.0
    event = Event("studio-a", "content_change", time=said, at_s=12.5 - 5.5,
                  fields={"content": "speech", "previous": "music"})  # fmt: skip
    wire.pub.send_multipart(encode_event(event))
    received = wire.subscriber.receive_message(timeout_s=DEADLINE_S)
    assert isinstance(received, Event)
    model.add_event(received)
    assert model.began(received) == (pytest.approx(said - 5.5), 7.0)
    assert model["studio-a"].event_json(received)["began_time"] == pytest.approx(said - 5.5)
    console = Console(record=True, width=120, height=40, file=io.StringIO())
    console.print(render_dashboard(model, view="detail"))
    text = console.export_text()
    began = time.strftime("%H:%M:%S", time.localtime(said - 5.5))
    assert f"{began} music → speech" in text, text
    # The stream starts over and the demo continues its history a hop on: the next
    # change is still measured on the worker's timeline, not the shifted one.
    for seq in range(12):  # windows ending at 3.0 ... 8.5 s again
        model.add(make_update(seq, [0.6, 0.2, 0.1, 0.05, 0.05]))
    again = Event("studio-a", "content_change", time=said + 60, at_s=8.5 - 5.0,
                  fields={"content": "music", "previous": "speech"})  # fmt: skip
    model.add_event(again)
    assert model["studio-a"].loops == 1
    assert model.began(again)[0] == pytest.approx(said + 60 - 5.0)


@pytest.mark.parametrize("width", [100, 160])
def test_sparklines_use_the_full_width(wire: Wire, width: int) -> None:
    model = DashboardModel(history_seconds=10.0)
    for seq in range(21):  # 10 s of history at 0.5 s hops
        model.add(wire.send_and_receive(make_update(seq, [0.5, 0.3, 0.1, 0.05, 0.02])))
    console = _console(width)
    console.print(render_dashboard(model, top_k=2, view="detail"))
    rock_line = next(line for line in console.export_text().splitlines() if "│ rock" in line)
    assert len(rock_line) == width
    blocks = rock_line.split("█" * 5)[-1]  # what follows the bar: the sparkline and the border
    # the sparkline runs from after the bar to the panel's right border
    assert len(blocks.strip(" │")) >= width - 45


def test_events_show_with_wall_clock_times_and_dead_air_stands_out(wire: Wire) -> None:
    model = DashboardModel()
    for seq in range(4):
        model.add(wire.send_and_receive(make_update(seq, [0.6, 0.2, 0.1, 0.05, 0.05])))
    event = silence("studio-a", 5.0)
    wire.pub.send_multipart(encode_event(event))
    received = wire.subscriber.receive_message(timeout_s=DEADLINE_S)
    assert isinstance(received, Event)
    model.add_event(received)
    model.add_event(Event("studio-a", "now_playing", time=1.7e9 + 6, at_s=6.0,
                          fields={"title": "Artist - Song"}))  # fmt: skip
    console = Console(
        record=True, width=120, height=40, file=io.StringIO(), color_system="truecolor"
    )
    console.print(render_dashboard(model, view="detail"))
    text = console.export_text(clear=False)
    # when the quiet began: silence_seconds (10 s) before the worker said so
    since = time.strftime("%H:%M:%S", time.localtime(event.time - 10.0))
    said = time.strftime("%H:%M:%S", time.localtime(event.time))
    assert since != said
    assert f"DEAD AIR since {since}" in text and f"DEAD AIR since {said}" not in text
    assert f"{since} DEAD AIR (below -50 dBFS)" in text
    assert "♪ Artist - Song" in text and "1 ALARM" in text
    html = console.export_html(inline_styles=True)
    assert re.search(r'background-color: #800000[^"]*">[^<]*DEAD AIR since', html)


@pytest.mark.parametrize(("streams", "width", "height"), [(24, 120, 40), (50, 200, 40)])
def test_many_streams_fit_one_screen_in_the_overview(
    streams: int, width: int, height: int, rng: np.random.Generator
) -> None:
    clock = SetClock()
    model = DashboardModel(clock=clock)
    names = [f"station-{i:02d}" for i in range(streams)]
    for seq in range(6):
        for name in names:
            model.add(make_update(seq, rng.random(len(TAGS)).tolist(), stream=name))
    model.add_event(silence("station-07", 4.0))
    model.add_event(Event("station-09", "source_down", time=1.7e9, at_s=4.0,
                          fields={"reason": "connection refused"}))  # fmt: skip
    piped = _console(width, height)
    piped.print(render_dashboard(model))  # auto, not on a terminal: no screen to fit
    assert len(piped.export_text().splitlines()) > height
    console = _console(width, height, terminal=True)
    console.print(render_dashboard(model))  # auto on a terminal: the panels would not fit
    text = console.export_text()
    lines = text.splitlines()
    assert len(lines) <= height
    assert lines[0].startswith(f"tagstream dashboard - {streams} streams")
    for name in names:
        assert re.search(rf"(^|\s){name} ", text), f"{name} is not on the screen"
    row = next(line for line in lines if "station-07 " in line)
    assert "DEAD AIR since" in row.split("station-07", 1)[1]
    assert "SOURCE DOWN since" in next(line for line in lines if "station-09 " in line)
    assert "station-09 SOURCE DOWN: connection refused" in text  # the event feed
    assert "2 ALARMS" in lines[0]
    assert all(len(line) <= width for line in lines)
    detail = _console(width, height, terminal=True)
    detail.print(render_dashboard(model, view="detail"))
    assert len(detail.export_text().splitlines()) > height  # what the overview saves


def test_on_a_terminal_log_lines_go_to_the_log_file(
    wire: Wire, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The full-screen view is drawn on a real pseudo-terminal; the log goes to a file."""
    stop = threading.Event()
    endpoints: list[str] = []
    ready = threading.Event()

    def publish() -> None:
        pub = wire.context.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        endpoints.append(f"tcp://127.0.0.1:{port}")
        ready.set()
        seq = 0
        while not stop.wait(0.02):
            pub.send_multipart(encode_update(make_update(seq, [0.1, 0.7, 0.1, 0.05, 0.05])))
            seq += 1
        pub.close(linger=0)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    assert ready.wait(DEADLINE_S)
    primary, secondary = os.openpty()
    screen = bytearray()
    reader = threading.Thread(target=_drain, args=(primary, screen), daemon=True)
    reader.start()
    log_file = tmp_path / "dashboard.log"
    try:
        with open(secondary, "w", encoding="utf-8", closefd=True) as terminal:
            status = main(
                ["--endpoint", endpoints[0], "--count", "5", "--log-file", str(log_file)],
                stdout=terminal,
                stderr=io.StringIO(),
            )
    finally:
        stop.set()
        thread.join(timeout=DEADLINE_S)
        reader.join(timeout=DEADLINE_S)
        os.close(primary)
    assert status == 0
    assert "new stream stream=studio-a" in log_file.read_text()
    assert "new stream" not in capfd.readouterr().err
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    assert "tagstream dashboard - studio-a" in drawn
    assert f"log:{log_file}" in re.sub(r"\s", "", drawn)  # named under the view


def _drain(fd: int, into: bytearray) -> None:
    """Read a pseudo-terminal until its other side closes."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the terminal side was closed
            return
        if not chunk:
            return
        into.extend(chunk)


@pytest.mark.parametrize("view", ["auto", "overview"])
def test_cli_draws_the_dashboard_until_count_updates(wire: Wire, view: str) -> None:
    stop = threading.Event()

    def publish() -> None:  # its own socket: ZeroMQ sockets stay in one thread
        pub = wire.context.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        endpoints.append(f"tcp://127.0.0.1:{port}")
        ready.set()
        seq = 0
        while not stop.wait(0.02):
            pub.send_multipart(encode_update(make_update(seq, [0.1, 0.7, 0.1, 0.05, 0.05])))
            seq += 1
        pub.close(linger=0)

    endpoints: list[str] = []
    ready = threading.Event()
    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    assert ready.wait(DEADLINE_S)
    out, err = io.StringIO(), io.StringIO()
    try:
        argv = ["--endpoint", endpoints[0], "--count", "5", "--top", "2", "--view", view]
        status = main(argv, stdout=out, stderr=err)
    finally:
        stop.set()
        thread.join(timeout=DEADLINE_S)
    assert status == 0, err.getvalue()
    text = out.getvalue()
    assert "tagstream dashboard - studio-a" in text
    if view == "overview":  # one row: the stream, its state and its dominant tag
        assert re.search(r"studio-a +● ok .* pop 0\.70", text), text
    else:
        assert "pop" in text and "rock" in text and "█" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--top", "0"], "--top=0 must be at least 1"),
        (["--history-seconds", "-5"], "web.history_seconds: must be greater than 0"),
    ],
)
def test_cli_refuses_bad_arguments_in_one_line(argv: list[str], message: str) -> None:
    err = io.StringIO()
    assert main(argv, stdout=io.StringIO(), stderr=err) == 2
    assert err.getvalue().startswith("error: ") and message in err.getvalue()
    assert err.getvalue().count("\n") == 1
