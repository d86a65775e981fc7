"""Web dashboard: every live stream in a browser, fed by Server-Sent Events.

    python -m tools.web [--bind 127.0.0.1:8080] [--endpoint E ...] [--stream ID ...]
                        [--token T] [--history-seconds S] [--config PATH] [--traceback]

One page (``tools/webpage/``: plain HTML, JavaScript and CSS, no build step, no
CDN) shows per stream the top tags as bars updating live, a scrolling
tag x time heatmap of the window probabilities over the last
``web.history_seconds``, and the moments when the dominant (smoothed) tag
changed.  A thread subscribes to the workers and feeds a
:class:`monitor.history.DashboardModel`; every update goes out as one SSE
event to every open page.

HTTP routes: ``/`` (the page), ``/app.js``, ``/style.css``, ``/events`` (SSE:
a ``snapshot`` event on connect, then ``update``, ``event`` (the worker's events:
dead air, talk/music, titles, source down/up) and ``forget`` events),
``/api/snapshot`` (the snapshot as JSON).

Server: waitress (a pure-Python WSGI server of the Pylons project, no
dependencies, maintained since 2011 and used under Pyramid, Flask and Django
deployments), chosen because it bounds what a peer can take: one I/O thread
holds every connection, so an idle one costs a socket and no thread; at most
:data:`MAX_CONNECTIONS` are open at once (more wait in the listen backlog); a
connection idle for :data:`IDLE_TIMEOUT_S` (no request, or one that never
ends) is closed; requests are answered by a fixed pool of
``MAX_PAGES + SPARE_THREADS`` threads, and each open page's ``/events`` keeps
one, so pages beyond :data:`MAX_PAGES` get 503.  An asyncio server (aiohttp,
uvicorn) would hold event streams without threads but does not close a
connection that never sends a request, and brings an event loop into a module
whose other half is a blocking ZeroMQ subscriber; cheroot bounds threads but
not connections.

Access: the server binds to 127.0.0.1 by default.  Bound to any other address
it refuses to start without a token (``--token`` or ``web.token``); with a
token every request must carry it: ``?token=`` (the page then keeps it in an
HttpOnly cookie), ``Authorization: Bearer`` or that cookie, else 401.
Without a token, requests whose ``Host`` is not a loopback name get 403 (so
another web site cannot read the page through DNS rebinding).

Exit status (README "Exit status"): 0 stopped (Ctrl-C or SIGTERM), 1 unexpected
error, 2 usage or config error, 4 the address cannot be bound or an endpoint
cannot be subscribed to.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import http.cookies
import importlib.resources
import ipaddress
import json
import logging
import queue
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, Self

import zmq

from config import ConfigError
from monitor import connect
from monitor.history import HISTORY_SECONDS, DashboardModel, StreamHistory
from protocol import Event, TagUpdate
from tagstream import cli
from tagstream.errors import EndpointError, UsageError
from tools import add_subscription_arguments

if TYPE_CHECKING:
    from protocol.security import SecuritySettings

__all__ = [
    "STATIC_FOLDER",
    "BindError",
    "WebDashboard",
    "WebError",
    "build_parser",
    "is_loopback",
    "main",
    "parse_bind",
    "static_file",
]

logger = logging.getLogger(__name__)

#: The page's folder inside the ``tools`` package (shipped as package data).
STATIC_FOLDER: Final = "webpage"
#: URL path -> (file in STATIC_FOLDER, content type).  Nothing else is served from disk.
STATIC_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
TOKEN_COOKIE: Final = "tagstream_token"
#: Events queued per page before it is considered too slow and disconnected
#: (the browser reconnects and gets a fresh snapshot).
CLIENT_QUEUE_EVENTS: Final = 512
#: Connections open at once (idle ones included); beyond it new ones wait in the
#: listen backlog until one closes.  Each costs a socket, not a thread.
MAX_CONNECTIONS: Final = 100
#: Pages following ``/events`` at once; each keeps one server thread.  More get 503.
MAX_PAGES: Final = 16
#: Server threads beyond MAX_PAGES, for the page's files and ``/api/snapshot``.
SPARE_THREADS: Final = 4
#: Seconds a connection may stay idle (no request, or an unfinished one) before it is closed.
IDLE_TIMEOUT_S: Final = 30
#: Seconds between SSE keep-alive comments, which also detect closed pages.
KEEPALIVE_S: Final = 10.0
#: Longest wait of any loop, so stop() is seen promptly.
_POLL_S: Final = 0.25
#: Seconds between passes that forget streams idle for FORGET_AFTER_S.
_FORGET_INTERVAL_S: Final = 5.0
#: Digits kept of each probability on the wire.
_DIGITS: Final = 4
_LOOPBACK_NAMES: Final = ("localhost", "localhost.")
_SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}


class WebError(UsageError):
    """The dashboard cannot start as asked; the message says what to change."""


class BindError(EndpointError, WebError):
    """The HTTP address cannot be bound (in use, or not an address of this machine)."""


def static_file(name: str) -> bytes:
    """The bytes of one file of the page (``index.html``, ``app.js``, ``style.css``).

    Read through :mod:`importlib.resources`, so the page is found in a checkout
    and in an installed package alike.
    """
    return importlib.resources.files("tools").joinpath(STATIC_FOLDER, name).read_bytes()


def parse_bind(bind: str) -> tuple[str, int]:
    """Split ``"host:port"`` (``"[::1]:8080"`` for IPv6) into ``(host, port)``.

    Raises
    ------
    ConfigError
        If ``bind`` has no port, or the port is not in 0..65535 (0: any free port).
    """
    host, sep, port_text = bind.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"web.bind: expected HOST:PORT such as 127.0.0.1:8080, got {bind!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1 or localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _round(values: Any) -> list[float]:
    return [round(float(v), _DIGITS) for v in values]


def update_payload(update: TagUpdate, history: StreamHistory) -> dict[str, Any]:
    """The JSON object of one ``update`` SSE event."""
    return {
        "stream": update.stream,
        "seq": update.seq,
        "model": update.model,
        "start_s": update.start_s,
        "end_s": update.end_s,
        "tags": list(update.tags),
        "probabilities": _round(update.probabilities),
        "smoothed": _round(update.smoothed),
        "latency_s": round(update.latency_s, 4),
        "published_time": update.published_time,
        "gaps": update.gaps,
        "dropped": update.dropped,
        "shed": update.shed,
        "behind_s": update.behind_s,
        "missed": history.missed,
        "restarts": history.restarts,
        "dominant": history.dominant,
        "content": update.content,
        "content_probabilities": (
            None if update.content_probabilities is None else dict(update.content_probabilities)
        ),
        "level_dbfs": update.level_dbfs,
        "title": history.title,
        "silent": history.silent,
        "source_down": history.source_down,
    }


def stream_snapshot(history: StreamHistory) -> dict[str, Any]:
    """One stream's state for a page that just connected: latest update, history, changes."""
    assert history.latest is not None
    return {
        "latest": update_payload(history.latest, history),
        "history": [
            {"end_s": u.end_s, "probabilities": _round(u.probabilities)} for u in history.entries
        ],
        "changes": [c.to_json_dict() for c in history.changes],
        "status": history.status_json(),
    }


class _Client:
    """One open ``/events`` response: a bounded queue of encoded events."""

    def __init__(self) -> None:
        self.events: queue.Queue[bytes] = queue.Queue(maxsize=CLIENT_QUEUE_EVENTS)
        self.too_slow = False


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Request:
    """What the access rules and the routes read of one WSGI request."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.path = environ.get("PATH_INFO", "/") or "/"
        self.query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        self.client = environ.get("REMOTE_ADDR", "?")

    def header(self, name: str) -> str:
        return str(self.environ.get("HTTP_" + name.upper().replace("-", "_"), ""))

    def given_token(self) -> tuple[str | None, bool]:
        """The token the request carries and whether it came in the query string."""
        if "token" in self.query:
            return self.query["token"][0], True
        auth = self.header("Authorization")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :], False
        cookies = http.cookies.SimpleCookie()
        with contextlib.suppress(http.cookies.CookieError):
            cookies.load(self.header("Cookie"))
        morsel = cookies.get(TOKEN_COOKIE)
        return (morsel.value if morsel is not None else None), False


_Response = tuple[HTTPStatus, dict[str, str], Iterable[bytes]]


def _text(status: HTTPStatus, text: str, *, extra: dict[str, str] | None = None) -> _Response:
    return _body(status, text.encode("utf-8"), "text/plain; charset=utf-8", extra=extra)


def _body(
    status: HTTPStatus, body: bytes, content_type: str, *, extra: dict[str, str] | None = None
) -> _Response:
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        **(extra or {}),
    }
    return status, headers, [body]


class _App:
    """The dashboard's WSGI application: access rules, the page's files, JSON and SSE.

    Served by waitress (see :meth:`WebDashboard.start`): its I/O thread holds the
    connections, and only a request being answered takes one of its worker threads,
    so idle connections cost a socket and no thread.  An ``/events`` stream keeps
    its thread while the page is open, so pages beyond ``max_pages`` get 503.
    """

    def __init__(self, dashboard: WebDashboard) -> None:
        self.dashboard = dashboard

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = _Request(environ)
        status, headers, body = self.respond(request)
        if request.method == "HEAD":
            body = []
        start_response(
            f"{status.value} {status.phrase}", list({**_SECURITY_HEADERS, **headers}.items())
        )
        return body

    def respond(self, request: _Request) -> _Response:
        if request.method not in ("GET", "HEAD"):
            return _text(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"405 method not allowed: {request.method}; this page only reads\n",
                extra={"Allow": "GET, HEAD"},
            )
        refused = self._refused(request)
        if refused is not None:
            return refused
        dashboard = self.dashboard
        if request.path in STATIC_FILES:
            name, content_type = STATIC_FILES[request.path]
            extra = {}
            given, from_query = request.given_token()
            if dashboard.token and from_query and given is not None:
                # the page's own requests (app.js, style.css, /events) carry it from now on
                cookie = http.cookies.SimpleCookie()
                cookie[TOKEN_COOKIE] = given
                cookie[TOKEN_COOKIE]["httponly"] = True
                cookie[TOKEN_COOKIE]["samesite"] = "Strict"
                cookie[TOKEN_COOKIE]["path"] = "/"
                extra["Set-Cookie"] = cookie[TOKEN_COOKIE].OutputString()
            return _body(HTTPStatus.OK, static_file(name), content_type, extra=extra)
        if request.path == "/api/snapshot":
            body = json.dumps(dashboard.snapshot(), separators=(",", ":")).encode()
            return _body(HTTPStatus.OK, body, "application/json")
        if request.path == "/events":
            client = dashboard._connect()
            if client is None:
                return _text(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"503 too many pages open (at most {dashboard.max_pages}); "
                    "close one and reload\n",
                )
            headers = {
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
            return HTTPStatus.OK, headers, self._events(client)
        return _text(HTTPStatus.NOT_FOUND, f"404 not found: {request.path}\n")

    def _refused(self, request: _Request) -> _Response | None:
        """Check the token (or, without one, the Host header); the 401/403 if refused."""
        dashboard = self.dashboard
        if dashboard.token:
            given, _ = request.given_token()
            if given is None or not hmac.compare_digest(
                given.encode("utf-8", "replace"), dashboard.token.encode("utf-8")
            ):
                logger.warning(
                    "refused request client=%s path=%s reason=%s",
                    request.client,
                    request.path[:200],
                    "no token" if given is None else "wrong token",
                )
                return _text(
                    HTTPStatus.UNAUTHORIZED,
                    "401 unauthorized: open this page with ?token=<the dashboard's token>\n",
                    extra={"WWW-Authenticate": 'Bearer realm="tagstream"'},
                )
            return None
        host = request.header("Host")
        host_name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if not is_loopback(host_name.strip("[]")):
            return _text(
                HTTPStatus.FORBIDDEN,
                f"403 forbidden: Host {host[:200]!r} is not this machine; use http://127.0.0.1\n",
            )
        return None

    def _events(self, client: _Client) -> Iterator[bytes]:
        """The SSE stream of one page: a snapshot, then updates, events and keep-alives.

        waitress closes this generator when the page goes away (its next write
        fails: at the latest the keep-alive after :data:`KEEPALIVE_S`).
        """
        dashboard = self.dashboard
        try:
            yield b"retry: 1000\n\n" + _event("snapshot", dashboard.snapshot())
            last_write = time.monotonic()
            while not dashboard.stopping and not client.too_slow:
                try:
                    chunk = client.events.get(timeout=_POLL_S)
                except queue.Empty:
                    if time.monotonic() - last_write < KEEPALIVE_S:
                        continue
                    chunk = b": keep-alive\n\n"
                yield chunk
                last_write = time.monotonic()
        finally:
            dashboard._disconnect(client)


class WebDashboard:
    """The web dashboard: a subscriber thread, a model and an HTTP server with SSE.

    Parameters
    ----------
    endpoints : str or iterable of str
        Worker PUB endpoints to subscribe to.
    bind : str
        ``"host:port"`` to serve on; port 0 picks a free port (see :attr:`url`).
    token : str or None
        Secret every request must carry; required when ``host`` is not loopback.
    streams : iterable of str or None
        Only these stream ids (default: every stream).
    history_seconds : float > 0
        Audio seconds of history kept and drawn per stream.
    security : protocol.security.SecuritySettings or None
        CURVE keys for the subscription, e.g. ``config.SecurityConfig``.
    context : zmq.Context or None
        Defaults to ``zmq.Context.instance()``.
    max_connections : int > 0
        Connections open at once, idle ones included (:data:`MAX_CONNECTIONS`).
    max_pages : int > 0
        Pages following ``/events`` at once (:data:`MAX_PAGES`); each keeps a thread.
    idle_timeout_s : int > 0
        Seconds before an idle or unfinished connection is closed (:data:`IDLE_TIMEOUT_S`).

    Notes
    -----
    Lifecycle: :meth:`start` (binds, connects, starts two threads and returns)
    -> :meth:`stop` from any thread -> :meth:`close` (joins the threads, closes
    the sockets; idempotent).  Also a context manager.  Every open page gets
    its own bounded event queue; a page that falls behind is disconnected and
    reconnects by itself.

    Examples
    --------
    >>> with WebDashboard("tcp://127.0.0.1:5556", bind="127.0.0.1:0") as web:  # doctest: +SKIP
    ...     web.start()
    ...     print(web.url)
    """

    def __init__(
        self,
        endpoints: str | Iterable[str],
        *,
        bind: str = "127.0.0.1:8080",
        token: str | None = None,
        streams: Iterable[str] | None = None,
        history_seconds: float = HISTORY_SECONDS,
        security: SecuritySettings | None = None,
        context: zmq.Context[Any] | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_pages: int = MAX_PAGES,
        idle_timeout_s: int = IDLE_TIMEOUT_S,
    ) -> None:
        for name, value in (
            ("max_connections", max_connections),
            ("max_pages", max_pages),
            ("idle_timeout_s", idle_timeout_s),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        self.max_connections = max_connections
        self.max_pages = max_pages
        self.idle_timeout_s = idle_timeout_s
        self.endpoints = (endpoints,) if isinstance(endpoints, str) else tuple(endpoints)
        self.host, self.port = parse_bind(bind)
        self.token = token or None
        if self.token is None and not is_loopback(self.host):
            raise WebError(
                f"--bind {bind} is reachable from other machines; set a token "
                "(--token or web.token) or bind to 127.0.0.1"
            )
        self.streams = None if streams is None else tuple(streams)
        self.model = DashboardModel(history_seconds=history_seconds)
        self.security = security
        self.context = context
        self._stop = threading.Event()
        self._clients: set[_Client] = set()
        self._clients_lock = threading.Lock()
        self._server: Any = None
        self._map: dict[int, Any] = {}
        self._subscriber: Any = None
        self._threads: list[threading.Thread] = []
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the workers, bind the HTTP server and start serving; returns at once.

        Raises
        ------
        BindError
            If the address cannot be bound.
        tagstream.errors.EndpointError
            If an endpoint is malformed.
        """
        if self._closed or self._server is not None:
            raise RuntimeError("start() on a started or closed WebDashboard")
        self._subscriber = connect(
            self.endpoints,
            streams=self.streams,
            context=self.context,
            security=self.security,
            events=True,
        )
        try:
            self._server = self._create_server()
        except OSError as exc:
            self._subscriber.close()
            raise BindError(
                f"cannot serve on {self.host}:{self.port}: {exc.strerror or exc}; "
                "choose another --bind"
            ) from None
        self.port = int(self._server.effective_port)
        self._threads = [
            threading.Thread(target=self._receive_loop, name="web-subscriber", daemon=True),
            threading.Thread(target=self._serve, name="web-http", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        logger.info(
            "serving url=%s endpoints=%s token=%s",
            self.url.split("?")[0],
            ",".join(self.endpoints),
            "yes" if self.token else "no",
        )

    def _create_server(self) -> Any:
        """waitress's server on ``host:port``, in our own socket map (not started).

        The socket is bound here, before waitress starts its threads, so that an
        address that cannot be bound leaves no thread behind.
        """
        from waitress.server import create_server

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host or "0.0.0.0", self.port))
            return create_server(
                _App(self),
                map=self._map,
                sockets=[sock],
                ident="tagstream-web",
                # idle connections wait in the I/O loop; each request being answered takes
                # a thread, each open page's /events keeps one: max_pages + SPARE_THREADS
                threads=self.max_pages + SPARE_THREADS,
                connection_limit=self.max_connections,
                channel_timeout=self.idle_timeout_s,
                cleanup_interval=max(1, min(30, self.idle_timeout_s // 2)),
                asyncore_use_poll=True,  # select() stops at 1024 file descriptors
                expose_tracebacks=False,
            )
        except BaseException:
            sock.close()
            raise

    def _serve(self) -> None:
        """The I/O loop (this thread) until stopped; then close every connection."""
        from waitress import wasyncore

        try:
            while not self._stop.is_set() and self._map:
                wasyncore.loop(timeout=_POLL_S, use_poll=True, map=self._map, count=1)
        except Exception:
            logger.exception("http server failed; stopping")
            self._stop.set()
        finally:
            # event streams end within _POLL_S of the stop; then the threads are joined
            self._server.task_dispatcher.shutdown(timeout=5)
            wasyncore.close_all(self._map)

    def stop(self) -> None:
        """Ask the threads to finish (returns at once; :meth:`close` waits)."""
        self._stop.set()  # the I/O loop and every event stream see it within _POLL_S

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until :meth:`stop` is called; return whether it was."""
        return self._stop.wait(timeout_s)

    def close(self) -> None:
        """Stop, join the threads, close the HTTP and ZeroMQ sockets; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        # Both threads see the stop within _POLL_S (the HTTP one then gives its answers
        # 5 s).  The subscriber's socket is closed only once its thread has ended: ZeroMQ
        # sockets are not thread-safe, and libzmq may assert (abort the process) when one
        # is closed while another thread is inside a call on it.
        for thread in self._threads:
            while thread.is_alive():
                thread.join(timeout=5.0)
                if thread.is_alive():  # pragma: no cover - a loaded machine
                    logger.warning("closing: waiting for thread=%s", thread.name)
        if self._subscriber is not None:
            self._subscriber.close()
        logger.info("stopped")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The page's address, with ``?token=`` when there is one."""
        host = self.host or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        host = f"[{host}]" if ":" in host else host
        query = f"?token={urllib.parse.quote(self.token)}" if self.token else ""
        return f"http://{host}:{self.port}/{query}"

    # -- data ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every stream's state, as the ``snapshot`` event and ``/api/snapshot`` carry it."""
        with self.model.lock:
            streams = {
                s: stream_snapshot(self.model[s])
                for s in self.model.streams()
                if self.model[s].latest is not None  # not those with events only, yet
            }
        return {
            "history_seconds": self.model.history_seconds,
            "server_time": time.time(),
            "streams": streams,
        }

    def _receive_loop(self) -> None:
        last_forget = time.monotonic()
        try:
            while not self._stop.is_set():
                update = self._subscriber.receive_message(timeout_s=_POLL_S)
                if isinstance(update, Event):
                    with self.model.lock:
                        self.model.add_event(update)
                        history = self.model[update.stream]
                        event = history.event_json(update)
                        status = history.status_json()
                    self._broadcast(_event("event", {"event": event, "status": status}))
                elif update is not None:
                    with self.model.lock:
                        change = self.model.add(update)
                        payload = update_payload(update, self.model[update.stream])
                    payload["change"] = None if change is None else change.to_json_dict()
                    self._broadcast(_event("update", payload))
                if time.monotonic() - last_forget > _FORGET_INTERVAL_S:
                    last_forget = time.monotonic()
                    for stream in self.model.forget_idle():
                        self._broadcast(_event("forget", {"stream": stream}))
        except Exception:
            logger.exception("subscriber thread failed; stopping")
            self.stop()

    def _broadcast(self, chunk: bytes) -> None:
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            try:
                client.events.put_nowait(chunk)
            except queue.Full:
                if not client.too_slow:
                    logger.warning(
                        "page too slow; disconnecting it queued=%d", client.events.qsize()
                    )
                client.too_slow = True

    def _connect(self) -> _Client | None:
        """A new page's event queue; ``None`` when ``max_pages`` are open already."""
        client = _Client()
        with self._clients_lock:
            if len(self._clients) >= self.max_pages:
                logger.warning(
                    "page refused pages=%d max_pages=%d", len(self._clients), self.max_pages
                )
                return None
            self._clients.add(client)
            count = len(self._clients)
        logger.info("page connected pages=%d", count)
        return client

    def _disconnect(self, client: _Client) -> None:
        with self._clients_lock:
            self._clients.discard(client)
            count = len(self._clients)
        logger.info("page disconnected pages=%d", count)

    @property
    def pages(self) -> int:
        """Pages connected to ``/events`` right now."""
        with self._clients_lock:
            return len(self._clients)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m tools.web",
        "Serve a live web dashboard of the tags of every stream.",
        epilog="Defaults come from config.toml ([web] and [subscribe] endpoints).",
    )
    cli.setting_flag(
        parser,
        "--bind",
        key="web.bind",
        metavar="HOST:PORT",
        help="address to serve on (default: web.bind)",
    )
    add_subscription_arguments(parser)
    cli.setting_flag(
        parser,
        "--token",
        key="web.token",
        metavar="T",
        help="secret the page must carry (required beyond loopback)",
    )
    cli.setting_flag(
        parser,
        "--history-seconds",
        key="web.history_seconds",
        metavar="S",
        help="seconds of history per stream",
    )
    return parser


def run(ctx: cli.Context) -> int:
    """The command's body: serve until Ctrl-C or SIGTERM."""
    args = ctx.args
    cfg = ctx.load_config()
    with (
        WebDashboard(
            cfg.subscribe.endpoints,
            bind=cfg.web.bind,
            token=cfg.web.token,
            streams=args.stream,
            history_seconds=cfg.web.history_seconds,
            security=cfg.security,
        ) as dashboard,
        ctx.on_stop(dashboard.stop),
    ):
        dashboard.start()
        print(f"tagstream web dashboard: {dashboard.url}", file=ctx.stdout, flush=True)
        while not dashboard.wait(_POLL_S):
            pass
    return cli.ExitStatus.OK


main = cli.command(build_parser, run, long_running=True)


if __name__ == "__main__":
    sys.exit(main())
