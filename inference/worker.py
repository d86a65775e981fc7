"""The inference worker: audio blocks in, batch due windows through the model, PUB tags.

>>> worker = Worker(load_config())          # doctest: +SKIP
>>> worker.start()                          # load + warm up the model, bind the sockets
>>> thread = worker.run_in_thread()         # or worker.run() to block
>>> worker.stop(); thread.join(); worker.close()

One loop owns both sockets: it waits up to :data:`POLL_INTERVAL_S` for input,
drains what is queued (at most ``max_batch`` messages), lets each stream's
:class:`inference.windows.StreamState` cut windows, asks the model backend
(:class:`inference.backends.Backend`, chosen by ``inference.mode``) for the
due windows of all streams in batches of up to ``max_batch`` (one window per
stream in turn, so a busy stream cannot starve the others), runs each batch
and publishes one :class:`protocol.TagUpdate` per window.

Nothing a peer sends stops the loop: malformed messages are rejected by the
protocol and counted by reason, NaN/inf samples are replaced and counted,
streams beyond ``max_streams`` (or ``max_streams_per_peer`` of one sender) are
refused and counted, a sender's message for a stream another sender owns is
rejected (``owner``), and an unexpected error while handling one message is
logged and counted as ``internal``.  Memory is bounded whatever peers send: the
input socket (:mod:`inference.ingress`) bounds each connection and each whole
message before keeping it, and :mod:`inference.windows` each stream
(``docs/ROBUSTNESS.md`` has the formula).
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import zmq

from config import Config
from inference.backends import Backend, DueWindow, backend_class
from inference.content import ContentJob, ContentTracker
from inference.errors import EndpointBindError, SettingsError
from inference.ingress import Inbound, Ingress, open_ingress
from inference.windows import AcceptResult, StreamSettings, StreamState
from protocol import (
    MAX_BUFFER_BYTES,
    Ack,
    AudioFrame,
    EndOfStream,
    Event,
    ProtocolError,
    decode_input,
    encode_ack,
    encode_event,
    encode_update,
)
from protocol.security import (
    SecurityError,
    auth_rejected,
    check_server,
    curve_enabled,
    secure_server,
    start_authenticator,
)
from tagstream.metrics import MetricsServer, WorkerMetrics

if TYPE_CHECKING:
    from model.contract import ModelContract

__all__ = ["POLL_INTERVAL_S", "RECEIVE_HWM", "Worker", "WorkerStats"]

logger = logging.getLogger(__name__)

#: Longest wait for input before the loop checks stop(), idle streams and the status log.
POLL_INTERVAL_S = 0.1
#: Receive high-water mark of the PULL socket, in messages (per connected peer).  At 64,
#: the tail of a --fast file was lost when its streamer exited with it still queued.
RECEIVE_HWM = 1000
#: Largest input message, all parts together (audio: header + PCM buffer).  Larger ones are
#: dropped as they arrive (:mod:`inference.ingress`); with CURVE, libzmq disconnects a peer
#: whose single part is larger.
MAX_MESSAGE_BYTES = MAX_BUFFER_BYTES + 1024 * 1024
#: A capture time further ahead of the worker's clock than this is reported as skew.
MAX_CLOCK_AHEAD_S = 1.0
#: A stream whose quickest block arrived this long after its capture time has a clock behind
#: the worker's (no streamer holds live audio that long): reported as skew, and its latency
#: counts from that quickest transit (a probe with capture time 0 showed 56 years before).
MAX_CLOCK_BEHIND_S = 10.0
#: Least seconds between two log lines about the same kind of bad input.
LOG_INTERVAL_S = 5.0
#: Latencies kept between two status lines.
MAX_LATENCY_SAMPLES = 100_000
#: /healthz says unavailable when the loop has not turned for this long.
HEALTH_LOOP_STALE_S = 10.0
#: Most rounds of ``max_batch`` input messages read in one loop iteration (between batches).
#: Rounds after the first read at most ``max_batch`` raw chunks each (small messages: live
#: audio blocks), so a large message read alongside moves at the one-round pace it always
#: had (reading it faster raised the 400-part test's peak RSS from 50 to 137 MiB).
MAX_READ_ROUNDS = 64
#: Most raw input bytes read in one loop iteration (about 20 minutes of 16 kHz mono float32
#: audio in 0.1 s blocks): a peer streaming a huge message that is being skipped cannot keep
#: the loop reading, and what is read between two model calls stays bounded.
MAX_READ_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class WorkerStats:
    """Counters of a worker since it started (a snapshot; see :meth:`Worker.stats`).

    Attributes
    ----------
    streams : int
        Streams currently known.
    messages : int
        Messages received (good and bad).
    windows : int
        Tag updates published.
    batches : int
        Model calls.
    batch_sizes : dict {int: int}
        Model calls by batch size.
    rejected : dict {str: int}
        Malformed messages by ``ProtocolError.reason`` (plus ``internal``).
    gaps : int
        Sequence gaps (filled with silence or resetting the window).
    dropped : int
        Blocks dropped as duplicates/late/after the end, and windows dropped
        because a stream had too many waiting.
    refused : int
        Blocks of new streams refused because ``max_streams`` were active.
    samples_replaced : int
        NaN or infinite samples replaced.
    resets : int
        Windows reset by long gaps, format changes or stream restarts.
    ended : int
        Streams finished by an end-of-stream message.
    evicted_idle : int
        Streams forgotten after ``idle_timeout_seconds`` without input.
    clock_ahead : int
        Audio blocks whose capture time was more than :data:`MAX_CLOCK_AHEAD_S` ahead of
        the worker's clock when received (a sender's clock skew, or a file sent faster
        than real time); latency then counts from reception.
    clock_behind : int
        Audio blocks of streams whose quickest block so far arrived more than
        :data:`MAX_CLOCK_BEHIND_S` after its capture time (the sender's clock runs
        behind); latency then counts from that quickest transit.
    shed : dict {str: int}
        Windows shed (not tagged) because the worker was behind, by reason: ``stale``
        (older than ``inference.max_window_age_seconds`` when their turn came) and
        ``overflow`` (more than ``max_pending_windows`` waiting).  Also in ``dropped``.
    acks : int
        Acknowledgements sent to senders (``docs/PROTOCOL.md``, "Ack").
    pending : int
        Windows waiting for the model now (all streams, ended ones included).
    """

    streams: int = 0
    messages: int = 0
    windows: int = 0
    batches: int = 0
    batch_sizes: dict[int, int] = dataclasses.field(default_factory=dict)
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    gaps: int = 0
    dropped: int = 0
    refused: int = 0
    samples_replaced: int = 0
    resets: int = 0
    ended: int = 0
    evicted_idle: int = 0
    clock_ahead: int = 0
    clock_behind: int = 0
    shed: dict[str, int] = dataclasses.field(default_factory=dict)
    acks: int = 0
    pending: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class _RateLimitedLog:
    """Log one line per key at most every ``interval_s``, with the count suppressed meanwhile."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()

    def __call__(self, key: str, level: int, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.interval_s:
            self._suppressed[key] += 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " suppressed_since_last=%d"
            args = (*args, suppressed)
        logger.log(level, message, *args)


def _percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000.0 if values else float("nan")


class Worker:
    """The inference worker: sockets, per-stream states, batching and the status log.

    Parameters
    ----------
    config : Config
        ``config.inference`` gives the endpoints and stream settings,
        ``config.model`` the model to load when ``tagger`` is None.
    tagger : model.Tagger or None
        An already loaded tagger (tests share one); loaded in :meth:`start` when None.
    context : zmq.Context or None
        Defaults to a context of the worker's own, terminated by :meth:`close`.
    started_at : float or None
        ``time.monotonic()`` at process start, for the "ready" log (default: :meth:`start`).

    Notes
    -----
    Lifecycle: :meth:`start` (model, warm-up, bind) -> :meth:`run` in one
    thread -> :meth:`stop` from any thread (the loop ends within about
    :data:`POLL_INTERVAL_S` plus one model call) -> :meth:`close` (idempotent,
    ``linger=0``).  Also a context manager (``__exit__`` stops and closes).
    """

    def __init__(
        self,
        config: Config,
        *,
        tagger: Any = None,
        context: zmq.Context[Any] | None = None,
        started_at: float | None = None,
    ) -> None:
        self.config = config
        self.tagger = tagger
        self._own_context = context is None
        self._context: zmq.Context[Any] | None = context
        self._started_at = started_at
        self._ingress: Ingress | None = None
        self._publish: zmq.Socket[Any] | None = None
        self._auth: Any = None  # the CURVE authenticator (protocol.security), when on
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self.settings: StreamSettings | None = None
        #: The model backend (:mod:`inference.backends`), made by :meth:`start`.
        self.backend: Backend | None = None
        #: Content per window and the events it makes (:mod:`inference.content`), by start().
        self.content: ContentTracker | None = None
        self._streams: dict[str, StreamState] = {}
        #: stream id -> the peer that owns it (None: its connection closed, the next sender
        #: may take it over); streams per peer.  See docs/PROTOCOL.md, "Stream ownership".
        self._owner: dict[str, str | None] = {}
        self._peer_streams: collections.Counter[str] = collections.Counter()
        self._ending: list[StreamState] = []  # ended streams whose windows still wait
        self._end_acks: list[StreamState] = []  # ended streams whose sender awaits the end ack
        self._shed: collections.Counter[str] = collections.Counter()
        self._behind_max_s = 0.0  # largest behind_s published since the last status line
        self._counts: collections.Counter[str] = collections.Counter()
        self._batch_sizes: collections.Counter[int] = collections.Counter()
        self._rejected: collections.Counter[str] = collections.Counter()
        self._ingress_dropped: collections.Counter[str] = collections.Counter()
        self._stats = WorkerStats()
        self._log_limited = _RateLimitedLog()
        self._latencies: list[float] = []
        self._windows_at_status = 0
        self._last_status = time.monotonic()
        self._last_idle_check = time.monotonic()
        self._heartbeat = float("-inf")  # monotonic time of the last loop iteration
        #: Prometheus metrics (tagstream.metrics); served when config.metrics.worker_port > 0.
        self.metrics = WorkerMetrics(self.stats, stream_tags=config.metrics.stream_tags)
        self._metrics_server: MetricsServer | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Check the settings, load and warm up the model, then bind the PULL and PUB sockets.

        Every settings check runs before the model (and TensorFlow) loads.

        Raises
        ------
        inference.SettingsError
            If the settings cannot work with the model or the endpoints (exit status 2).
        inference.EndpointBindError
            If an endpoint or the metrics port cannot be bound (exit status 4).
        model.ModelLoadError, model.ContractError
            If the model cannot be loaded (exit status 3).
        """
        if self._closed:
            raise RuntimeError("start() on a closed Worker")
        started = self._started_at if self._started_at is not None else time.monotonic()
        cfg = self.config.inference
        endpoints = (cfg.input_endpoint, cfg.publish_endpoint)
        try:  # before the model loads: a missing key fails at once
            check_server(self.config.security, endpoints)
        except SecurityError as exc:
            raise SettingsError(str(exc)) from None
        backend = backend_class(cfg.mode)
        if self.config.model.backend not in backend.model_backends:
            raise SettingsError(
                f"inference.mode = {cfg.mode!r} runs on model.backend = "
                f"{' or '.join(map(repr, backend.model_backends))}, not "
                f"{self.config.model.backend!r}; set one of them"
            )
        contract = self.tagger.contract if self.tagger is not None else self._read_contract()
        self._stream_settings(contract)
        backend.check(contract)
        if self.config.metrics.worker_port:  # metrics.stream_tags must be the model's tags
            self.metrics.streams.check_tags(contract.tags)
        self._start_metrics_server()
        if self.tagger is None:
            from model import load_tagger

            self.tagger = load_tagger(
                self.config.model.name,
                cache_dir=self.config.model.cache_dir,
                device=self.config.model.device,
                precision=self.config.model.precision,
                backend=self.config.model.backend,
            )
            contract = self.tagger.contract
        self.backend = backend(self.tagger)
        self.settings = dataclasses.replace(
            self._stream_settings(contract), lookahead_frames=self.backend.lookahead_frames
        )
        self.backend.warm_up(max_batch=cfg.max_batch, hop_frames=self.settings.hop_frames)
        self.content = ContentTracker.from_config(self.config)
        if self._context is None:
            self._context = zmq.Context()
        self._auth = start_authenticator(self._context, self.config.security, endpoints)
        # Options must be set before bind(): connections inherit the listener's copy.
        self._ingress = self._bind_input(cfg.input_endpoint)
        self._publish = self._bind(
            zmq.PUB,
            cfg.publish_endpoint,
            "inference.publish_endpoint",
            {zmq.SNDHWM: cfg.publish_hwm},
        )
        logger.info(
            "ready model=%s mode=%s backend=%s precision=%s input=%s publish=%s window_s=%.3f "
            "hop_s=%.3f elapsed_s=%.2f",
            contract.name,
            cfg.mode,
            self.tagger.backend,
            self.tagger.precision,
            cfg.input_endpoint,
            cfg.publish_endpoint,
            self.settings.window_seconds,
            self.settings.hop_seconds,
            time.monotonic() - started,
        )

    def _read_contract(self) -> ModelContract:
        """The contract of ``config.model.name`` without loading the network (no TensorFlow).

        Only for the checks before the model loads; the loaded model's own
        contract is checked again.
        """
        from model.contract import ModelContract
        from model.convert import PRETRAINED
        from model.tagger import resolve_model_folder

        name = self.config.model.name
        if name in PRETRAINED:  # converted with the contract's defaults (model.convert)
            return ModelContract(name=name, architecture=PRETRAINED[name])
        return ModelContract.load(resolve_model_folder(name, cache_dir=self.config.model.cache_dir))

    def _stream_settings(self, contract: ModelContract) -> StreamSettings:
        """The streams' settings from ``config.inference`` and the model's ``contract``.

        Raises
        ------
        inference.SettingsError
            If the window or hop cannot work with the model.
        """
        cfg = self.config.inference
        return StreamSettings.from_seconds(
            spec=contract.features,
            window_frames=contract.window_frames,
            window_seconds=cfg.window_seconds,
            hop_seconds=cfg.hop_seconds,
            ema_seconds=cfg.ema_seconds,
            max_gap_seconds=cfg.max_gap_seconds,
        )

    def _start_metrics_server(self) -> None:
        metrics = self.config.metrics
        if not metrics.worker_port:
            return
        server = MetricsServer(
            self.metrics.registry, port=metrics.worker_port, bind=metrics.bind, health=self.health
        )
        try:
            server.start()
        except OSError as exc:
            raise EndpointBindError(
                f"cannot serve metrics.worker_port={metrics.worker_port} on {metrics.bind!r} "
                f"({exc}); pick another port"
            ) from None
        self._metrics_server = server

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, details)`` for ``/healthz``: model loaded and the loop turning."""
        since = time.monotonic() - self._heartbeat
        loaded = self.settings is not None and self.tagger is not None
        alive = not self._idle.is_set() and since < HEALTH_LOOP_STALE_S
        return loaded and alive, {
            "model": getattr(self.tagger, "name", None) if loaded else None,
            "model_loaded": loaded,
            "loop_alive": alive,
            "last_loop_s": round(since, 3) if since != float("inf") else None,
            "streams": self._stats.streams,
        }

    def _bind(self, kind: int, endpoint: str, key: str, options: dict[int, int]) -> zmq.Socket[Any]:
        assert self._context is not None
        socket = self._context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        for option, value in options.items():
            socket.setsockopt(option, value)
        try:
            secure_server(socket, self.config.security, self._auth, endpoint=endpoint)
            socket.bind(endpoint)
        except zmq.ZMQError as exc:
            socket.close(linger=0)
            self.close()
            hint = (
                "is another worker running? pick another"
                if exc.errno == zmq.EADDRINUSE
                else ("check")
            )
            raise EndpointBindError(
                f"cannot bind {key}={endpoint!r} ({exc}); {hint} endpoint"
            ) from None
        return socket

    def _bind_input(self, endpoint: str) -> Ingress:
        assert self._context is not None
        security = self.config.security

        def configure(socket: zmq.Socket[Any]) -> None:
            socket.setsockopt(zmq.LINGER, 0)
            secure_server(socket, security, self._auth, endpoint=endpoint)

        try:
            return open_ingress(
                self._context,
                endpoint,
                curve=curve_enabled(security, endpoint, role="server"),
                max_message_bytes=MAX_MESSAGE_BYTES,
                max_part_bytes=MAX_MESSAGE_BYTES,
                receive_hwm=RECEIVE_HWM,
                configure=configure,
            )
        except zmq.ZMQError as exc:
            self.close()
            hint = (
                "is another worker running? pick another"
                if exc.errno == zmq.EADDRINUSE
                else "check"
            )
            raise EndpointBindError(
                f"cannot bind inference.input_endpoint={endpoint!r} ({exc}); {hint} endpoint"
            ) from None

    @property
    def input_endpoint(self) -> str:
        """The bound input endpoint (with the real port when the config said ``tcp://...:*``)."""
        return self._last_endpoint(self._ingress.socket if self._ingress is not None else None)

    @property
    def publish_endpoint(self) -> str:
        """The bound publish endpoint (with the real port for ``tcp://...:*``)."""
        return self._last_endpoint(self._publish)

    @staticmethod
    def _last_endpoint(socket: zmq.Socket[Any] | None) -> str:
        if socket is None:
            raise RuntimeError("the worker is not started")
        endpoint = socket.getsockopt(zmq.LAST_ENDPOINT)
        return endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)

    def run(self) -> None:
        """Serve until :meth:`stop`; call after :meth:`start`, in one thread only."""
        if self._ingress is None or self._publish is None:
            raise RuntimeError("run() before start() (or after close())")
        self._idle.clear()
        try:
            poller = zmq.Poller()
            poller.register(self._ingress.socket, zmq.POLLIN)
            while not self._stop.is_set():
                self.step(poller)
        finally:
            self._idle.set()

    def step(self, poller: zmq.Poller | None = None) -> None:
        """One loop iteration: wait for input, handle it, run due windows, housekeeping."""
        ingress = self._ingress
        assert ingress is not None and self.backend is not None
        # Windows waiting for their look-ahead (streaming backend) are not work to do yet.
        busy = self.backend.has_due(self._waiting())
        timeout_ms = 0 if busy else int(POLL_INTERVAL_S * 1000)
        ready = poller.poll(timeout_ms) if poller is not None else ingress.socket.poll(timeout_ms)
        if ready:
            self._read_input(ingress)
            for peer in ingress.take_closed():
                self._release_peer(peer)
            if ingress.dropped != self._ingress_dropped:
                self._log_limited(
                    "ingress",
                    logging.WARNING,
                    "dropped input at the socket %s",
                    " ".join(f"{k}={v}" for k, v in sorted(ingress.dropped.items())),
                )
                self._ingress_dropped = collections.Counter(ingress.dropped)
        self._run_batches(ingress)
        self._send_acks(ingress)
        now = time.monotonic()
        if now - self._last_idle_check >= 1.0:
            self._last_idle_check = now
            self._evict_idle(now)
            ingress.housekeeping(now)
        if now - self._last_status >= self.config.inference.status_interval_seconds:
            self._log_status(now)
        self._snapshot()

    def _read_input(self, ingress: Ingress) -> None:
        """Take in what the senders sent, so that a backlog waits here, where it can be shed.

        Reads rounds of ``max_batch`` messages until a round comes up short (the socket is
        empty, or busy with one large message), :data:`MAX_READ_ROUNDS` rounds or
        :data:`MAX_READ_BYTES`, or until a stream has half its ``max_pending_windows``
        waiting that shedding does not bound (:meth:`_input_full`: audio sent faster than
        real time without flow control then waits in the socket).
        """
        limit = self.config.inference.max_batch
        start = ingress.bytes_read
        for round_ in range(MAX_READ_ROUNDS):
            taken = 0
            for inbound in ingress.receive(limit, max_chunks=limit if round_ else None):
                self._handle(inbound, received_time=time.time(), now=time.monotonic())
                taken += 1
            # A short round: the socket is drained, or its bytes are a large (or skipped)
            # message; either way the model's turn comes first.
            if taken < limit or ingress.bytes_read - start > MAX_READ_BYTES:
                return
            if self._input_full() or not self._input_waiting(ingress):
                return

    @staticmethod
    def _input_waiting(ingress: Ingress) -> bool:
        events = ingress.socket.getsockopt(zmq.EVENTS)  # an int for this option
        return isinstance(events, int) and bool(events & zmq.POLLIN)

    def _input_full(self) -> bool:
        """Whether a stream has half its ``max_pending_windows`` waiting, sent faster than
        the worker tags it and not bounded by shedding stale work.

        A live stream's backlog is bounded by shedding (``max_window_age_seconds`` > 0):
        such a stream is one the worker cannot keep up with (more streams than it can tag,
        or not among ``priority_streams``), and stopping the reads for it would leave
        every other stream's audio, the priority streams' too, waiting in the socket.
        """
        assert self.settings is not None
        limit = max(1, self.settings.max_pending_windows // 2)
        shedding = self.config.inference.max_window_age_seconds > 0
        return any(
            state.pending >= limit
            and (not shedding or state.unshed_backlog(max_ahead_s=MAX_CLOCK_AHEAD_S) >= limit)
            for state in self._streams.values()
        )

    def run_in_thread(self) -> threading.Thread:
        """Start :meth:`run` in a daemon thread and return it."""
        thread = threading.Thread(target=self.run, name="inference-worker", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask :meth:`run` to return; safe from any thread and from signal handlers."""
        self._stop.set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until :meth:`run` has returned (after :meth:`stop`); False on timeout."""
        return self._idle.wait(timeout_s)

    def pause(self, timeout_s: float = 5.0) -> bool:
        """Make :meth:`run` return, wait for it, then accept work again.

        Afterwards :meth:`step` (called by hand) runs due windows, and
        :meth:`run_in_thread` starts the loop anew: tests and benchmarks use this to
        queue input while nothing is taken, so that windows fall due together.

        Parameters
        ----------
        timeout_s : float > 0
            How long to wait for :meth:`run` to return.

        Returns
        -------
        bool
            False when the loop did not return in time (the worker then stays stopped).
        """
        self._stop.set()
        if not self._idle.wait(timeout_s):
            return False
        self._stop.clear()
        return True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop, wait for :meth:`run` to return, close sockets (``linger=0``).

        Safe to call more than once.  The sockets are closed only once the loop has
        returned: ZeroMQ sockets are not thread-safe, and a loop in a long model call (a
        loaded machine) would otherwise publish on a closed socket.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        while not self._idle.wait(5.0):  # pragma: no cover - a model call under heavy load
            logger.warning("closing: waiting for the loop's model call to end")
        if self._ingress is not None:
            self._ingress.socket.close(linger=0)
        if self._publish is not None:
            self._publish.close(linger=0)
        self._ingress = None
        self._publish = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        if self.content is not None:
            self.content.close()
        if self._own_context and self._context is not None:
            self._context.term()
        self._context = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- messages ---------------------------------------------------------------------

    def _handle(self, inbound: Inbound, *, received_time: float, now: float) -> None:
        self._counts["messages"] += 1
        try:
            message = decode_input(inbound.frames)
        except ProtocolError as exc:
            self._rejected[exc.reason] += 1
            self._log_limited(
                f"reject:{exc.reason}",
                logging.WARNING,
                "rejected message reason=%s total_rejected=%d detail=%s",
                exc.reason,
                sum(self._rejected.values()),
                exc,
            )
            return
        try:
            if not self._owns(message.stream, inbound.peer):
                self._rejected["owner"] += 1
                self._log_limited(
                    "reject:owner",
                    logging.WARNING,
                    "rejected message reason=owner stream=%s peer=%s owner=%s total_rejected=%d",
                    message.stream,
                    inbound.peer,
                    self._owner.get(message.stream),
                    sum(self._rejected.values()),
                )
                return
            if isinstance(message, Event):  # the source's own: republished on its audio timeline
                assert self.content is not None
                self._send(self.content.source_event(message, self._streams.get(message.stream)))
            elif isinstance(message, EndOfStream):
                self._end(message, reply_to=inbound.reply_to, now=now)
            else:
                self._audio(
                    message,
                    inbound.peer,
                    reply_to=inbound.reply_to,
                    received_time=received_time,
                    now=now,
                )
        except Exception as exc:  # one bad message must not stop the worker
            self._rejected["internal"] += 1
            self._log_limited(
                "internal",
                logging.ERROR,
                "error handling message stream=%s error=%r",
                getattr(message, "stream", "?"),
                exc,
            )

    def _owns(self, stream: str, peer: str) -> bool:
        """Whether ``peer`` may send for ``stream``: it owns it, or nobody does (it takes it)."""
        if stream not in self._owner:
            return True
        owner = self._owner[stream]
        if owner is None:  # the owner's connection closed: the next sender takes it over
            self._owner[stream] = peer
            self._peer_streams[peer] += 1
            return True
        return owner == peer

    def _release_peer(self, peer: str) -> None:
        """``peer``'s connection closed: its streams go on, but any sender may take them over."""
        for stream, owner in self._owner.items():
            if owner == peer:
                self._owner[stream] = None
        self._peer_streams.pop(peer, None)

    def _audio(
        self,
        frame: AudioFrame,
        peer: str,
        *,
        reply_to: Any = None,
        received_time: float,
        now: float,
    ) -> None:
        assert self.settings is not None
        state = self._streams.get(frame.stream)
        per_peer = self.config.inference.max_streams_per_peer
        if state is None and peer != "pull" and self._peer_streams[peer] >= per_peer:
            self._counts["refused"] += 1
            self._log_limited(
                "refused_per_peer",
                logging.WARNING,
                "refused stream=%s reason=max_streams_per_peer peer=%s max_streams_per_peer=%d "
                "total_refused=%d",
                frame.stream,
                peer,
                per_peer,
                self._counts["refused"],
            )
            return
        if state is None:
            if len(self._streams) >= self.config.inference.max_streams:
                self._counts["refused"] += 1
                self._log_limited(
                    "refused",
                    logging.WARNING,
                    "refused stream=%s reason=max_streams max_streams=%d total_refused=%d",
                    frame.stream,
                    self.config.inference.max_streams,
                    self._counts["refused"],
                )
                return
            state = self._new_stream(frame.stream, peer, now=now)
        ahead = frame.capture_time - received_time
        if ahead > MAX_CLOCK_AHEAD_S:
            self._counts["clock_ahead"] += 1
        if ahead > MAX_CLOCK_AHEAD_S and frame.live:  # a recorded file is ahead by design
            self._log_limited(
                f"clock:{frame.stream}",
                logging.WARNING,
                "capture time ahead of the worker's clock stream=%s ahead_s=%.1f (the sender's "
                "clock is off, or a file is sent faster than real time); latency counts from "
                "reception",
                frame.stream,
                ahead,
            )
        if state.observe_transit(-ahead, now=now) > MAX_CLOCK_BEHIND_S:
            self._counts["clock_behind"] += 1
            self._log_limited(
                f"clock:{frame.stream}",
                logging.WARNING,
                "capture time behind the worker's clock stream=%s behind_s=%.1f (the sender's "
                "clock is off); latency counts from the stream's quickest block",
                frame.stream,
                state.min_transit_s,
            )
        before = (state.gaps, state.dropped, state.samples_replaced, state.resets)
        overflow = state.shed["overflow"]
        result = state.accept(frame, received_time=received_time, now=now)
        if result == AcceptResult.RESTARTED:
            logger.info("stream restarted stream=%s seq=%d", frame.stream, frame.seq)
            self._retire(state)
            self._counts["resets"] += 1
            state = self._new_stream(frame.stream, peer, now=now)
            before = (0, 0, 0, 0)
            overflow = 0
            result = state.accept(frame, received_time=received_time, now=now)
        if reply_to is not None:
            state.reply_to = reply_to  # the owner's latest connection
        if self.content is not None:
            self.content.accept(state, frame, result)
        gaps, dropped, replaced, resets = (
            state.gaps - before[0],
            state.dropped - before[1],
            state.samples_replaced - before[2],
            state.resets - before[3],
        )
        self._counts["gaps"] += gaps
        self._counts["dropped"] += dropped
        self._counts["samples_replaced"] += replaced
        self._counts["resets"] += resets
        self._shed["overflow"] += state.shed["overflow"] - overflow
        if result == AcceptResult.DUPLICATE:
            self._log_limited(
                f"duplicate:{frame.stream}",
                logging.WARNING,
                "dropped duplicate or late block stream=%s seq=%d expected_seq=%s",
                frame.stream,
                frame.seq,
                state.expected_seq,
            )
        elif result in (AcceptResult.GAP_FILLED, AcceptResult.GAP_RESET):
            self._log_limited(
                f"gap:{frame.stream}",
                logging.WARNING,
                "sequence gap stream=%s seq=%d action=%s gaps=%d",
                frame.stream,
                frame.seq,
                "silence" if result == AcceptResult.GAP_FILLED else "reset",
                state.gaps,
            )
        elif result == AcceptResult.FORMAT_RESET:
            logger.info("format changed stream=%s sample_rate=%d", frame.stream, frame.sample_rate)
        if replaced:
            self._log_limited(
                f"nan:{frame.stream}",
                logging.WARNING,
                "replaced non-finite samples stream=%s count=%d total=%d",
                frame.stream,
                replaced,
                state.samples_replaced,
            )

    def _new_stream(self, stream: str, peer: str, *, now: float) -> StreamState:
        assert self.settings is not None
        state = StreamState(stream, settings=self.settings, now=now)
        patterns = self.config.inference.priority_streams
        state.priority = any(fnmatch.fnmatchcase(stream, pattern) for pattern in patterns)
        self._streams[stream] = state
        self._owner[stream] = peer
        self._peer_streams[peer] += 1
        logger.info(
            "new stream=%s peer=%s streams=%d%s",
            stream,
            peer,
            len(self._streams),
            " priority" if state.priority else "",
        )
        return state

    def _retire(self, state: StreamState) -> None:
        """Forget ``state`` once its waiting windows are published."""
        self.metrics.streams.forget(state.stream)  # its per-stream series go now
        if self._streams.get(state.stream) is state:
            del self._streams[state.stream]
            owner = self._owner.pop(state.stream, None)
            if owner is not None:
                self._peer_streams[owner] -= 1
                if self._peer_streams[owner] <= 0:
                    del self._peer_streams[owner]
        if not state.ended:
            state.drop_lookahead()  # no more audio will come: windows waiting for it go exact
        if state.pending:
            self._ending.append(state)

    def _end(self, message: EndOfStream, *, reply_to: Any = None, now: float) -> None:
        state = self._streams.get(message.stream)
        if state is None:
            logger.debug("end of unknown stream=%s", message.stream)
            waiting = any(s.stream == message.stream for s in self._end_acks)
            if reply_to is not None and not waiting:  # nothing of it here: done at once
                self._reply(reply_to, Ack(message.stream, message.seq, end=True))
            return
        dropped = state.dropped
        state.end(now=now)
        state.end_seq = message.seq
        if reply_to is not None:
            state.reply_to = reply_to
        if state.reply_to is not None:
            self._end_acks.append(state)
        self._counts["dropped"] += state.dropped - dropped
        self._counts["ended"] += 1
        logger.info(
            "end of stream=%s updates=%d %s",
            message.stream,
            state.updates + state.pending,
            " ".join(f"{k}={v}" for k, v in state.counters().items() if k != "updates"),
        )
        self._retire(state)
        self.metrics.streams.ended(message.stream, time.time())

    def _evict_idle(self, now: float) -> None:
        timeout = self.config.inference.idle_timeout_seconds
        for state in [s for s in self._streams.values() if now - s.last_active > timeout]:
            self._counts["evicted_idle"] += 1
            logger.info("evicted idle stream=%s idle_s=%.1f", state.stream, now - state.last_active)
            self._retire(state)

    # -- model ------------------------------------------------------------------------

    def _waiting(self) -> list[StreamState]:
        """Streams with windows waiting for the model: ended streams first, then the
        others, the one served least recently first (:meth:`_served_last`)."""
        return [s for s in self._ending if s.pending] + [
            s for s in self._streams.values() if s.pending
        ]

    def _take_due(self, limit: int) -> list[DueWindow]:
        """Up to ``limit`` due windows: every due window of the priority streams
        (``inference.priority_streams``) first, the other streams' in the rest of the batch.

        So a worker that is behind keeps its priority streams on time while it can, and
        the other streams take the lateness (their updates say so: ``behind_s``, ``shed``).
        """
        assert self.backend is not None
        waiting = self._waiting()
        first = [s for s in waiting if s.priority]
        if not first:
            return self.backend.take_due(waiting, limit)
        due = self.backend.take_due(first, limit)
        if len(due) < limit:
            due += self.backend.take_due([s for s in waiting if not s.priority], limit - len(due))
        return due

    def _served_last(self, due: Sequence[DueWindow]) -> None:
        """Move the streams ``due`` serves to the back of the queue (:meth:`_waiting`).

        The backends take streams in the order given, so with more streams waiting than
        ``max_batch`` the ones served least recently go first, and none is left behind
        while others are on time.
        """
        for state in dict.fromkeys(item.state for item in due):
            if self._streams.get(state.stream) is state:
                del self._streams[state.stream]
                self._streams[state.stream] = state

    def _run_batches(self, ingress: Ingress | None = None) -> None:
        """Run the backend's due windows in batches of up to ``max_batch`` until none is due.

        Returns after one batch when input is waiting (it is read between batches), and
        sheds stale windows before each batch (:meth:`_shed_stale`).
        """
        assert self.backend is not None
        limit = self.config.inference.max_batch
        first = True
        while not self._stop.is_set():
            if not first and ingress is not None and self._input_waiting(ingress):
                return
            first = False
            self._shed_stale()
            due = self._take_due(limit)
            self._ending = [s for s in self._ending if s.pending]
            self._served_last(due)
            if not due:
                return
            # Classified in the tracker's thread while the model runs (inference.content).
            content = self.content.submit(due) if self.content is not None else None
            model_started = time.perf_counter()
            try:
                probabilities = self.backend.run(due)
            except Exception as exc:  # keep serving; the windows are lost
                self._counts["dropped"] += len(due)
                self._log_limited("predict", logging.ERROR, "model call failed error=%r", exc)
                continue
            model_seconds = time.perf_counter() - model_started
            self._publish_batch(due, probabilities, model_seconds=model_seconds, content=content)

    def _shed_stale(self) -> None:
        """Shed the windows of live streams older than ``max_window_age_seconds``.

        A window's time is when the worker received its last sample, or earlier when that
        sample waited on the way: its capture time plus the stream's quickest transit
        (:meth:`StreamState.shed_stale`).  Streams that are not live (``live: false``,
        flow-controlled files) and audio ahead of the worker's clock are never shed.
        """
        bound = self.config.inference.max_window_age_seconds
        if bound <= 0:
            return
        before = time.time() - bound
        for state in [*self._ending, *self._streams.values()]:
            count = state.shed_stale(before=before, max_ahead_s=MAX_CLOCK_AHEAD_S)
            if not count:
                continue
            self._shed["stale"] += count
            self._counts["dropped"] += count
            self._log_limited(
                f"shed:{state.stream}",
                logging.WARNING,
                "shed stale windows stream=%s count=%d shed=%d max_window_age_s=%g (the worker "
                "is behind: more audio than it can tag)",
                state.stream,
                count,
                state.shed["stale"],
                bound,
            )

    def _reply(self, reply_to: Any, ack: Ack) -> bool:
        assert self._ingress is not None
        sent = self._ingress.reply(reply_to, encode_ack(ack))
        self._counts["acks"] += sent
        return sent

    def _send_acks(self, ingress: Ingress) -> None:
        """Tell each sender that can be answered how far its streams are tagged."""
        for state in [*self._streams.values(), *self._ending]:
            if state.reply_to is None:
                continue
            position = state.ack_position()
            if position > state.acked_seq and self._reply(
                state.reply_to, Ack(state.stream, position)
            ):
                state.acked_seq = position
        if self._end_acks:
            waiting = []
            for state in self._end_acks:
                if state.pending:
                    waiting.append(state)
                elif state.end_seq is not None:
                    self._reply(state.reply_to, Ack(state.stream, state.end_seq, end=True))
            self._end_acks = waiting

    def _publish_batch(
        self,
        due: list[DueWindow],
        probabilities: np.ndarray,
        *,
        model_seconds: float,
        content: ContentJob | None = None,
    ) -> None:
        """Publish one model call's windows, in order, each followed by the events up to it."""
        assert self.tagger is not None
        self._counts["batches"] += 1
        self._batch_sizes[len(due)] += 1
        published_time = time.time()
        latencies = []
        results = content.results() if content is not None else [None] * len(due)
        for item, row, result in zip(due, probabilities, results, strict=True):
            update = item.state.make_update(
                item.window,
                row,
                model=self.tagger.name,
                tags=self.tagger.tags,
                published_time=published_time,
            )
            events: list[Event] = []
            if self.content is not None:
                update, events = self.content.annotate(item.state, item.window, update, result)
            self._send(update)
            if update.behind_s is not None and update.behind_s > self._behind_max_s:
                self._behind_max_s = update.behind_s
            for event in events:
                self._send(event)
            # Latency counts from the last sample the update needed: its look-ahead's, if any.
            # Never less than since the worker received it: a sender's clock that runs ahead
            # (counted as clock_ahead) cannot make latency negative.  A clock far behind
            # (clock_behind) is taken off: what is left is the delay beyond the quickest block.
            skew_s = item.state.min_transit_s
            skew_s = skew_s if skew_s > MAX_CLOCK_BEHIND_S else 0.0
            latencies.append(
                max(
                    published_time - (item.window.capture_time + item.lookahead_s + skew_s),
                    published_time - item.window.received_time,
                )
            )
        room = max(MAX_LATENCY_SAMPLES - len(self._latencies), 0)
        self._latencies.extend(latencies[:room])
        self._counts["windows"] += len(due)
        self.metrics.observe_batch(model_seconds=model_seconds, latencies_s=latencies)

    def _send(self, update: Any) -> None:
        assert self._publish is not None
        frames = encode_event(update) if isinstance(update, Event) else encode_update(update)
        try:
            self._publish.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:  # pragma: no cover - PUB drops at the HWM instead of blocking
            self._counts["dropped"] += 1
        self.metrics.streams.observe(update, live=update.stream in self._streams)

    # -- reporting --------------------------------------------------------------------

    def _log_status(self, now: float) -> None:
        elapsed = max(now - self._last_status, 1e-9)
        windows = self._counts["windows"] - self._windows_at_status
        latencies = self._latencies
        logger.info(
            "status streams=%d windows_per_s=%.1f latency_p50_ms=%.0f latency_p99_ms=%.0f "
            "drops=%d rejected=%d gaps=%d shed=%d behind_max_s=%.1f",
            len(self._streams),
            windows / elapsed,
            _percentile_ms(latencies, 50),
            _percentile_ms(latencies, 99),
            self._counts["dropped"] + self._counts["refused"],
            sum((self._rejected + self._ingress_dropped + auth_rejected(self._auth)).values()),
            self._counts["gaps"],
            sum(self._shed.values()),
            self._behind_max_s,
        )
        self._behind_max_s = 0.0
        self._latencies = []
        self._windows_at_status = self._counts["windows"]
        self._last_status = now

    def _snapshot(self) -> None:
        self._heartbeat = time.monotonic()
        counts = self._counts
        self._stats = WorkerStats(
            streams=len(self._streams),
            messages=counts["messages"],
            windows=counts["windows"],
            batches=counts["batches"],
            batch_sizes=dict(self._batch_sizes),
            rejected=dict(self._rejected + self._ingress_dropped + auth_rejected(self._auth)),
            gaps=counts["gaps"],
            dropped=counts["dropped"],
            refused=counts["refused"],
            samples_replaced=counts["samples_replaced"],
            resets=counts["resets"],
            ended=counts["ended"],
            evicted_idle=counts["evicted_idle"],
            clock_ahead=counts["clock_ahead"],
            clock_behind=counts["clock_behind"],
            shed=dict(self._shed),
            acks=counts["acks"],
            pending=sum(state.pending for state in [*self._ending, *self._streams.values()]),
        )

    def stats(self) -> WorkerStats:
        """The counters as of the end of the last loop iteration (safe from any thread)."""
        return self._stats

    def wait_for(
        self, predicate: Callable[[WorkerStats], bool], *, timeout_s: float = 10.0
    ) -> WorkerStats:
        """Poll :meth:`stats` until ``predicate`` holds or ``timeout_s`` passes; return the last.

        For tests and tools that drive a worker in-process.
        """
        deadline = time.monotonic() + timeout_s
        stats = self.stats()
        while not predicate(stats) and time.monotonic() < deadline:
            time.sleep(0.02)
            stats = self.stats()
        return stats
