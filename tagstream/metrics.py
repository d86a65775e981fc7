"""Prometheus metrics and a health check over HTTP: what a supervisor scrapes and polls.

Operations, not wire format: it lives beside the process edge
(:mod:`tagstream.cli`), and the worker and the streamer serve it.

Off by default; ``config.toml`` ``[metrics]`` turns it on per process
(``worker_port``, ``streamer_port``; ``bind``).  One small HTTP server per
process answers:

* ``GET /metrics``: the process's registry in the Prometheus text format
  (``prometheus_client``);
* ``GET /healthz``: ``200`` and a JSON object when the process is healthy,
  ``503`` and the same object (``"status": "unavailable"``) otherwise.

>>> from prometheus_client import CollectorRegistry
>>> server = MetricsServer(CollectorRegistry(), port=9100, health=lambda: (True, {}))
>>> server.start()      # doctest: +SKIP
>>> server.close()      # idempotent

The worker's and the streamer's metrics are defined next to their code
(:class:`WorkerMetrics`, :class:`StreamerMetrics`) but both read counters the
process keeps anyway, at scrape time, so metrics cost nothing between scrapes
except the two histograms the worker observes per model call and the
per-stream series (:class:`StreamMetrics`), which keep each stream's latest
values from every update and event the worker publishes.

Per-stream series have bounded cardinality: one set per stream the worker is
tagging (at most ``inference.max_streams``), removed when the stream ends, is
evicted or restarts, each set a fixed number of series (the tag families of
:mod:`monitor.families`, the configured ``metrics.stream_tags``, the
contents and the event kinds).  docs/ALERTS.md lists the names.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from config.schema import ConfigError
from monitor.families import DEFAULT_FAMILIES, Families, unknown_tag_error
from protocol import CONTENTS, EVENT_KINDS, Event, TagUpdate

__all__ = [
    "HealthCheck",
    "MetricsServer",
    "StreamMetrics",
    "StreamerMetrics",
    "WorkerMetrics",
]

logger = logging.getLogger(__name__)

#: ``() -> (healthy, details)``: details go into the JSON body of ``/healthz``.
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]

#: Buckets of the latency histogram (seconds from capture to publication).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
#: Buckets of the model-call histogram (seconds per batch).
MODEL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MetricsServer:
    """An HTTP server in a daemon thread serving ``/metrics`` and ``/healthz``.

    Parameters
    ----------
    registry : CollectorRegistry
        What ``/metrics`` shows.
    port : int in [1, 65535]
    bind : str
        Address to listen on (default loopback).
    health : HealthCheck
        Called per ``/healthz`` request, from the server's thread.

    Notes
    -----
    :meth:`start` raises ``OSError`` when the port cannot be bound;
    :meth:`close` is idempotent.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        port: int,
        bind: str = "127.0.0.1",
        health: HealthCheck,
    ) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port={port} must be in 1..65535")
        self.registry = registry
        self.port = port
        self.bind = bind
        self.health = health
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(owner.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    try:
                        healthy, details = owner.health()
                    except Exception as exc:  # a failing check is an unhealthy process
                        healthy, details = False, {"error": repr(exc)}
                    body = {"status": "ok" if healthy else "unavailable", **details}
                    self._reply(
                        200 if healthy else 503,
                        json.dumps(body).encode(),
                        "application/json",
                    )
                else:
                    self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("http %s", format % args)

        server = ThreadingHTTPServer((self.bind, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        logger.info("metrics url=%s/metrics health=%s/healthz", self.url, self.url)

    def close(self) -> None:
        """Stop serving and close the port; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None


class _Callback(Collector):
    """A collector calling ``collect_fn`` at scrape time."""

    def __init__(self, collect_fn: Callable[[], Iterator[Any]]) -> None:
        self._collect_fn = collect_fn

    def collect(self) -> Iterator[Any]:
        return self._collect_fn()


@dataclasses.dataclass
class _StreamSeries:
    """One stream's latest values, as the worker last published them."""

    last_update_time: float | None = None
    level_dbfs: float | None = None
    content: str | None = None
    silent: bool = False
    smoothed: np.ndarray | None = None  # the last update's (a new array per update)
    behind_s: float | None = None
    shed: int = 0
    tags: tuple[str, ...] = ()
    events: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(EVENT_KINDS, 0)
    )

    def copy(self) -> _StreamSeries:
        return dataclasses.replace(self, events=dict(self.events))


#: How long an ended stream's ``tagstream_stream_ended_timestamp_seconds`` stays (the
#: ``TagstreamStreamMissing`` rule looks back an hour), and most streams remembered so.
ENDED_KEEP_S = 3600.0
MAX_ENDED = 4096


class StreamMetrics(Collector):
    """Per-stream series of what a worker publishes: a collector to register in its registry.

    The worker calls :meth:`observe` with every update and event it publishes
    and :meth:`forget` when it stops tagging a stream (its end, eviction after
    the idle timeout, or a restart); Prometheus reads the latest values at
    scrape time.  A stream's set of series exists from its first update until
    :meth:`forget`, so streams that churn through new ids do not pile up
    series.  A stream that its sender ended on purpose (:meth:`ended`) keeps
    one series, ``tagstream_stream_ended_timestamp_seconds``, for
    :data:`ENDED_KEEP_S` (at most :data:`MAX_ENDED` streams), so that an alert
    rule can tell an end from a loss.

    Parameters
    ----------
    stream_tags : sequence of str
        Tags whose smoothed probability is exported (``metrics.stream_tags``),
        as the model spells them; checked by :meth:`check_tags`.
    families : monitor.families.Families
        Whose smoothed scores are exported (the default families).

    Notes
    -----
    ``observe`` and ``forget`` come from the worker's loop, ``collect`` from
    the HTTP server's threads; a lock guards the per-stream table.  ``observe``
    only keeps references (a few microseconds per update); family scores and
    tag probabilities are computed at scrape time from the last update's
    ``smoothed``: the worker's exponential moving average
    (``inference.ema_seconds``), a family's score the largest smoothed
    probability among its tags (:meth:`Families.scores`).
    """

    def __init__(
        self, *, stream_tags: Sequence[str] = (), families: Families = DEFAULT_FAMILIES
    ) -> None:
        self.stream_tags = tuple(stream_tags)
        self.families = families
        self._lock = threading.Lock()
        self._streams: dict[str, _StreamSeries] = {}
        self._tag_index: dict[tuple[str, ...], list[tuple[str, int]]] = {}
        self._ended: dict[str, float] = {}  # stream -> Unix time of its end, oldest first

    def check_tags(self, tags: Sequence[str]) -> None:
        """Raise :class:`config.ConfigError` unless every ``stream_tags`` entry is in ``tags``.

        ``tags`` is the model's tag list (its contract); the message names the
        setting and the closest spelling.
        """
        seen: set[str] = set()
        for tag in self.stream_tags:
            if tag not in tags:
                raise unknown_tag_error("metrics.stream_tags", tag, tags)
            if tag in seen:
                raise ConfigError(f"metrics.stream_tags: {tag!r} is listed twice; list it once")
            seen.add(tag)

    def _tag_positions(self, tags: tuple[str, ...]) -> list[tuple[str, int]]:
        positions = self._tag_index.get(tags)
        if positions is None:
            index = {tag: i for i, tag in enumerate(tags)}
            positions = [(tag, index[tag]) for tag in self.stream_tags if tag in index]
            self._tag_index = {tags: positions}  # one model per worker: keep only the last
        return positions

    def observe(self, message: TagUpdate | Event, *, live: bool = True) -> None:
        """Record one published update or event.

        Parameters
        ----------
        message : protocol.TagUpdate or protocol.Event
        live : bool
            Whether the worker is still tagging ``message.stream``.  False for
            the last windows of a stream that has ended or was evicted (and
            for a source's event about a stream it does not tag): the stream's
            series are removed, not made again.
        """
        stream = message.stream
        if not live:
            self.forget(stream)
            return
        if isinstance(message, Event):
            with self._lock:
                series = self._streams.setdefault(stream, _StreamSeries())
                series.events[message.event] = series.events.get(message.event, 0) + 1
                if message.event in ("silence_start", "silence_end"):
                    series.silent = message.event == "silence_start"
            return
        with self._lock:
            if stream in self._ended:  # the id is in use again
                del self._ended[stream]
            series = self._streams.setdefault(stream, _StreamSeries())
            series.last_update_time = message.published_time
            series.level_dbfs = message.level_dbfs
            series.content = message.content
            series.smoothed = message.smoothed
            series.tags = message.tags
            series.behind_s = message.behind_s
            series.shed = message.shed

    def forget(self, stream: str) -> None:
        """Remove ``stream``'s series (it ended, was evicted or starts over)."""
        with self._lock:
            self._streams.pop(stream, None)

    def ended(self, stream: str, at: float) -> None:
        """``stream`` was ended by its sender at Unix time ``at`` (not lost): remember it."""
        with self._lock:
            self._streams.pop(stream, None)
            self._ended.pop(stream, None)
            self._ended[stream] = at
            while len(self._ended) > MAX_ENDED or (
                self._ended and at - next(iter(self._ended.values())) > ENDED_KEEP_S
            ):
                del self._ended[next(iter(self._ended))]

    @property
    def streams(self) -> list[str]:
        """The streams that have series now."""
        with self._lock:
            return sorted(self._streams)

    def collect(self) -> Iterator[Any]:
        with self._lock:
            table = sorted((stream, s.copy()) for stream, s in self._streams.items())
            oldest = time.time() - ENDED_KEEP_S
            ended = sorted((stream, at) for stream, at in self._ended.items() if at >= oldest)
        last = GaugeMetricFamily(
            "tagstream_stream_last_update_timestamp_seconds",
            "Unix time of the stream's last published tag update",
            labels=["stream"],
        )
        silent = GaugeMetricFamily(
            "tagstream_stream_silent",
            "1 while the stream is in dead air (silence_start sent, no silence_end yet), else 0",
            labels=["stream"],
        )
        level = GaugeMetricFamily(
            "tagstream_stream_level_dbfs", "RMS level of the last window in dBFS", labels=["stream"]
        )
        content = GaugeMetricFamily(
            "tagstream_stream_content",
            "1 for what the last window held (music, speech, silence), 0 for the others",
            labels=["stream", "content"],
        )
        family = GaugeMetricFamily(
            "tagstream_stream_family_score",
            "Smoothed score of each tag family (its largest smoothed tag probability)",
            labels=["stream", "family"],
        )
        tag = GaugeMetricFamily(
            "tagstream_stream_tag_probability",
            "Smoothed probability of the tags in metrics.stream_tags",
            labels=["stream", "tag"],
        )
        behind = GaugeMetricFamily(
            "tagstream_stream_behind_seconds",
            "Seconds of the stream's audio the worker had beyond its last update's window",
            labels=["stream"],
        )
        shed = CounterMetricFamily(
            "tagstream_stream_shed_windows",
            "Windows of the stream not tagged because the worker was behind",
            labels=["stream"],
        )
        events = CounterMetricFamily(
            "tagstream_stream_events",
            "Events published, by kind",
            labels=["stream", "event"],
        )
        names = self.families.names
        for stream, series in table:
            if series.last_update_time is not None:
                last.add_metric([stream], series.last_update_time)
            silent.add_metric([stream], 1.0 if series.silent else 0.0)
            if series.level_dbfs is not None:
                level.add_metric([stream], series.level_dbfs)
            if series.content is not None:
                for kind in CONTENTS:
                    content.add_metric([stream, kind], 1.0 if kind == series.content else 0.0)
            if series.smoothed is not None:
                scores = self.families.scores(series.smoothed, series.tags).tolist()
                for name, score in zip(names, scores, strict=True):
                    family.add_metric([stream, name], score)
                for name, i in self._tag_positions(series.tags):
                    tag.add_metric([stream, name], float(series.smoothed[i]))
            if series.behind_s is not None:
                behind.add_metric([stream], series.behind_s)
            if series.last_update_time is not None:
                shed.add_metric([stream], series.shed)
            for kind, count in series.events.items():
                events.add_metric([stream, kind], count)
        gone = GaugeMetricFamily(
            "tagstream_stream_ended_timestamp_seconds",
            "Unix time at which the stream's sender ended it (kept for an hour after the end)",
            labels=["stream"],
        )
        for stream, at in ended:
            gone.add_metric([stream], at)
        yield from (last, silent, level, content, family, tag, behind, shed, events, gone)


class WorkerMetrics:
    """The worker's metrics: counters read from ``stats()`` at scrape time, two histograms.

    Parameters
    ----------
    stats : callable
        ``() -> inference.WorkerStats``.
    stream_tags : sequence of str
        ``metrics.stream_tags``: the tags exported per stream (:class:`StreamMetrics`).

    Attributes
    ----------
    registry : CollectorRegistry
        Private to this worker (several workers may live in one process).
    latency : Histogram
        ``tagstream_worker_latency_seconds``: capture of a window's last sample
        to publication of its update.
    model_time : Histogram
        ``tagstream_worker_model_seconds``: one model call (a batch).
    streams : StreamMetrics
        The per-stream series (``tagstream_stream_*``).
    """

    def __init__(self, stats: Callable[[], Any], *, stream_tags: Sequence[str] = ()) -> None:
        self._stats = stats
        self.registry = CollectorRegistry(auto_describe=True)
        self.streams = StreamMetrics(stream_tags=stream_tags)
        self.registry.register(self.streams)
        self.latency = Histogram(
            "tagstream_worker_latency_seconds",
            "Seconds from the capture of a window's last sample to its update's publication",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_time = Histogram(
            "tagstream_worker_model_seconds",
            "Seconds per model call (one batch of windows)",
            buckets=MODEL_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Callback(self._collect))

    def observe_batch(self, *, model_seconds: float, latencies_s: list[float]) -> None:
        """Record one model call and the latencies of the updates it published."""
        self.model_time.observe(model_seconds)
        for latency in latencies_s:
            self.latency.observe(latency)

    def _collect(self) -> Iterator[Any]:
        stats = self._stats()
        yield GaugeMetricFamily("tagstream_worker_streams", "Streams known", value=stats.streams)
        for name, help_text, value in (
            ("messages", "Messages received (good and bad)", stats.messages),
            ("windows", "Tag updates published", stats.windows),
            ("batches", "Model calls", stats.batches),
            ("gaps", "Sequence gaps seen", stats.gaps),
            ("samples_replaced", "NaN or infinite samples replaced", stats.samples_replaced),
            ("resets", "Windows reset (long gap, format change, restart)", stats.resets),
            ("streams_ended", "Streams finished by an end message", stats.ended),
            ("streams_evicted", "Streams forgotten after the idle timeout", stats.evicted_idle),
        ):
            yield CounterMetricFamily(f"tagstream_worker_{name}", help_text, value=value)
        drops = CounterMetricFamily(
            "tagstream_worker_drops",
            "Blocks or windows dropped, by reason (dropped: duplicate/late/after end or too "
            "many waiting; refused: beyond max_streams)",
            labels=["reason"],
        )
        drops.add_metric(["dropped"], stats.dropped)
        drops.add_metric(["refused"], stats.refused)
        yield drops
        shed = CounterMetricFamily(
            "tagstream_worker_shed",
            "Windows not tagged because the worker was behind, by reason (stale: older than "
            "inference.max_window_age_seconds; overflow: too many waiting); also in drops",
            labels=["reason"],
        )
        for reason in ("stale", "overflow"):
            shed.add_metric([reason], getattr(stats, "shed", {}).get(reason, 0))
        yield shed
        rejected = CounterMetricFamily(
            "tagstream_worker_rejected_messages",
            "Malformed messages rejected, by ProtocolError reason (plus internal)",
            labels=["reason"],
        )
        for reason, count in sorted(stats.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected


class StreamerMetrics:
    """The streamer's metrics, read from ``stats()`` at scrape time.

    Parameters
    ----------
    stats : callable
        ``() -> streamer.StreamerStats``.
    """

    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Callback(self._collect))

    def _collect(self) -> Iterator[Any]:
        stats = self._stats()
        source = stats.source
        yield CounterMetricFamily(
            "tagstream_streamer_blocks_sent", "Audio messages sent", value=stats.sent
        )
        drops = CounterMetricFamily(
            "tagstream_streamer_drops",
            "Blocks dropped, by where (send: the send queue was full; capture_queue: the "
            "capture queue was full; overflow: the device overran)",
            labels=["where"],
        )
        drops.add_metric(["send"], stats.dropped_send)
        drops.add_metric(["capture_queue"], source.get("dropped_queue", 0))
        drops.add_metric(["overflow"], source.get("overflows", 0))
        yield drops
        yield GaugeMetricFamily(
            "tagstream_streamer_queue_depth",
            "Blocks waiting in the capture queue",
            value=source.get("queue", 0),
        )
        yield CounterMetricFamily(
            "tagstream_streamer_device_reopens",
            "Times the capture device was reopened",
            value=source.get("reopens", 0),
        )
