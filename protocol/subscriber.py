"""Receive tag updates (and events) from one or more workers: every subscriber's library side.

>>> from protocol.subscriber import subscribe
>>> for update in subscribe("tcp://127.0.0.1:5556", streams=["host:mic"]):  # doctest: +SKIP
...     print(update.stream, update.end_s, update.tags[update.smoothed.argmax()])

With ``events=True`` the worker's events come too, as typed :class:`protocol.Event`
objects between the updates (``silence_start``, ``now_playing``, ...)::

    for message in subscribe(endpoint, events=True):
        if isinstance(message, Event):
            print(message.event, message.at_s, message.fields)

ZeroMQ topics are *prefixes*: subscribing to ``"host:mic"`` also delivers
``"host:mic2"``.  :class:`Subscriber` therefore subscribes by topic and then
keeps only updates whose header ``stream`` is exactly one of the requested ids.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Generator, Iterable, Iterator
from types import TracebackType
from typing import Literal, Self, overload

import zmq

from protocol import Event, ProtocolError, TagUpdate, check_stream_id, decode_published
from protocol.security import NO_KEYS, SecuritySettings, secure_client, watch_handshake
from tagstream.errors import UsageError

__all__ = ["Subscriber", "SubscriberError", "subscribe"]

logger = logging.getLogger(__name__)

#: Longest single wait inside the receive loop, so Ctrl-C is seen promptly.
_POLL_SLICE_MS = 500
#: Least seconds between two log lines about rejected messages.
_REJECT_LOG_INTERVAL_S = 5.0


class SubscriberError(UsageError, ValueError):
    """A subscription that cannot be made as asked (exit status 2); the message says why."""


class Subscriber:
    """A SUB socket connected to worker PUB endpoints, yielding decoded :class:`TagUpdate`.

    Parameters
    ----------
    endpoints : str or iterable of str
        Worker publish endpoints, e.g. ``"tcp://127.0.0.1:5556"``.
    streams : iterable of str or None
        Stream ids to receive; ``None`` receives every stream.
    context : zmq.Context or None
        Defaults to the process-wide ``zmq.Context.instance()``.
    security : protocol.security.SecuritySettings or None
        CURVE keys, e.g. ``config.SecurityConfig`` (:mod:`protocol.security`);
        ``None`` = the defaults ("auto", no keys), which refuse
        (``SecurityError``) an endpoint beyond loopback.
    events : bool
        Also receive the worker's :class:`protocol.Event` messages, through
        :meth:`receive_message` (:meth:`receive` gives updates only).  False:
        events are skipped silently.

    Raises
    ------
    SubscriberError
        No endpoint (exit status 2 at the command-line boundary).
    protocol.security.SecurityError
        CURVE is required for an endpoint and its keys are missing (exit status 2).

    Attributes
    ----------
    received : int
        Updates yielded so far.
    events_received : int
        Events yielded so far (``events=True``).
    rejected : collections.Counter
        Malformed messages skipped, by ``ProtocolError.reason``.

    Notes
    -----
    Use as a context manager or call :meth:`close` (safe to call twice); the
    socket closes with ``linger=0``.  PUB/SUB drops what is published before
    the subscription reaches the worker ("slow joiner"): the first updates after
    connecting may be missed.
    """

    def __init__(
        self,
        endpoints: str | Iterable[str],
        *,
        streams: Iterable[str] | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: SecuritySettings | None = None,
        events: bool = False,
    ) -> None:
        endpoint_list = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not endpoint_list:
            raise SubscriberError(
                "no endpoint to subscribe to: name at least one worker publish endpoint "
                "(--endpoint, or [subscribe] endpoints in config.toml)"
            )
        if isinstance(streams, str):
            streams = [streams]
        self.streams: frozenset[str] | None = (
            None if streams is None else frozenset(check_stream_id(s) for s in streams)
        )
        self.endpoints = tuple(endpoint_list)
        self.events = events
        self.received = 0
        self.events_received = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self._last_reject_log = float("-inf")
        context = context if context is not None else zmq.Context.instance()
        self._socket: zmq.Socket[bytes] | None = context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._handshake = None  # a refused CURVE key raises in receive(), never waits for ever
        try:
            if secure_client(self._socket, security or NO_KEYS, endpoints=endpoint_list):
                self._handshake = watch_handshake(self._socket, security or NO_KEYS)
            if self.streams is None:
                self._socket.setsockopt(zmq.SUBSCRIBE, b"")
            else:
                for stream in sorted(self.streams):
                    self._socket.setsockopt(zmq.SUBSCRIBE, stream.encode("utf-8"))
            for endpoint in self.endpoints:
                self._socket.connect(endpoint)
        except BaseException:
            self.close()
            raise
        logger.debug(
            "subscribed endpoints=%s streams=%s",
            ",".join(self.endpoints),
            "*" if self.streams is None else ",".join(sorted(self.streams)),
        )

    def receive(self, *, timeout_s: float | None = None) -> TagUpdate | None:
        """Return the next wanted update, or ``None`` after ``timeout_s`` without one.

        Malformed messages are logged (rate-limited), counted in :attr:`rejected`
        and skipped; updates of other streams and events are skipped silently.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            message = self.receive_message(timeout_s=remaining)
            if message is None or isinstance(message, TagUpdate):
                return message
            if deadline is not None and remaining == 0.0:
                return None

    def receive_message(self, *, timeout_s: float | None = None) -> TagUpdate | Event | None:
        """The next wanted update or event (events only with ``events=True``), or ``None``.

        As :meth:`receive`, with the worker's :class:`protocol.Event` messages too.
        """
        if self._socket is None:
            raise RuntimeError("receive() on a closed Subscriber")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait_ms = _POLL_SLICE_MS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                wait_ms = min(wait_ms, max(1, int(remaining * 1000)))
            if self._handshake is not None:
                self._handshake.check()
            if not self._socket.poll(wait_ms, zmq.POLLIN):
                continue
            frames = self._socket.recv_multipart(copy=False)
            try:
                message = decode_published(frames)
            except ProtocolError as exc:
                self._reject(exc)
                continue
            if self.streams is not None and message.stream not in self.streams:
                continue
            if isinstance(message, Event):
                if not self.events:
                    continue
                self.events_received += 1
                return message
            self.received += 1
            return message

    def _reject(self, exc: ProtocolError) -> None:
        self.rejected[exc.reason] += 1
        now = time.monotonic()
        if now - self._last_reject_log >= _REJECT_LOG_INTERVAL_S:
            self._last_reject_log = now
            logger.warning(
                "rejected malformed update reason=%s total_rejected=%d detail=%s",
                exc.reason,
                sum(self.rejected.values()),
                exc,
            )

    def __iter__(self) -> Iterator[TagUpdate]:
        while True:
            update = self.receive()
            if update is not None:
                yield update

    def close(self) -> None:
        """Close the socket (``linger=0``); safe to call more than once."""
        if self._handshake is not None:
            self._handshake.close()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    @property
    def closed(self) -> bool:
        return self._socket is None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@overload
def subscribe(
    endpoints: str | Iterable[str],
    *,
    streams: Iterable[str] | None = ...,
    context: zmq.Context[zmq.Socket[bytes]] | None = ...,
    timeout_s: float | None = ...,
    security: SecuritySettings | None = ...,
    events: Literal[False] = ...,
) -> Generator[TagUpdate, None, None]: ...


@overload
def subscribe(
    endpoints: str | Iterable[str],
    *,
    streams: Iterable[str] | None = ...,
    context: zmq.Context[zmq.Socket[bytes]] | None = ...,
    timeout_s: float | None = ...,
    security: SecuritySettings | None = ...,
    events: Literal[True],
) -> Generator[TagUpdate | Event, None, None]: ...


def subscribe(
    endpoints: str | Iterable[str],
    *,
    streams: Iterable[str] | None = None,
    context: zmq.Context[zmq.Socket[bytes]] | None = None,
    timeout_s: float | None = None,
    security: SecuritySettings | None = None,
    events: bool = False,
) -> Generator[TagUpdate | Event, None, None]:
    """Yield tag updates from worker PUB endpoints until closed or idle for ``timeout_s``.

    Parameters
    ----------
    endpoints : str or iterable of str
        Worker publish endpoints; the socket connects to every one.
    streams : iterable of str or None
        Exact stream ids to receive (``None``: all streams).  Subscribes by
        ZeroMQ topic, which is a prefix match, then filters on the header's
        ``stream`` so ``"a"`` does not also receive ``"ab"``.
    context : zmq.Context or None
        Defaults to ``zmq.Context.instance()``.
    timeout_s : float > 0 or None
        Stop (the generator returns) after this many seconds without a wanted
        update; ``None`` waits forever.
    security : protocol.security.SecuritySettings or None
        CURVE keys (see :class:`Subscriber`).
    events : bool
        Also yield the worker's events (:class:`protocol.Event`), in the order published.

    Yields
    ------
    TagUpdate or Event
        Malformed messages are logged, counted and skipped.

    Notes
    -----
    The SUB socket is closed with ``linger=0`` when the generator finishes, is
    closed (``gen.close()``) or is garbage-collected.
    """
    with Subscriber(
        endpoints, streams=streams, context=context, security=security, events=events
    ) as subscriber:
        while True:
            message = subscriber.receive_message(timeout_s=timeout_s)
            if message is None:
                logger.debug("no update for timeout_s=%s; stopping", timeout_s)
                return
            yield message
