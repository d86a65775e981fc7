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
except the two histograms the worker observes per model call.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "HealthCheck",
    "MetricsServer",
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


class WorkerMetrics:
    """The worker's metrics: counters read from ``stats()`` at scrape time, two histograms.

    Parameters
    ----------
    stats : callable
        ``() -> inference.WorkerStats``.

    Attributes
    ----------
    registry : CollectorRegistry
        Private to this worker (several workers may live in one process).
    latency : Histogram
        ``tagstream_worker_latency_seconds``: capture of a window's last sample
        to publication of its update.
    model_time : Histogram
        ``tagstream_worker_model_seconds``: one model call (a batch).
    """

    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats
        self.registry = CollectorRegistry(auto_describe=True)
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
