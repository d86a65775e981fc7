"""Alert delivery: webhooks, commands and stdout, each sink on its own thread and queue.

:class:`SinkSet` takes :class:`monitor.alerts.Alert` objects and hands each to
the sinks its rule names::

    >>> sinks = SinkSet.from_rules(rules, stdout=sys.stdout)   # doctest: +SKIP
    >>> sinks.start()                                          # doctest: +SKIP
    >>> sinks.submit(alert)      # never blocks               # doctest: +SKIP
    >>> sinks.close()            # waits briefly for what is in flight  # doctest: +SKIP

Every sink owns a bounded queue and one thread.  :meth:`Sink.submit` never
blocks: a full queue drops its oldest alert (counted), so a dead or slow sink
only ever loses its own backlog and never holds up the others or the rule
engine.  A failed attempt is retried after ``backoff_seconds``, doubling per
retry up to ``max_backoff_seconds``, at most ``retries`` times.

**Webhook** (``requests``): ``POST url`` with the alert JSON as body
(``Content-Type: application/json``), whose ``text`` field is what Slack and
Mattermost incoming webhooks display.  With a secret, two headers let a
receiver check the sender and refuse replays:

- ``X-Tagstream-Timestamp: <unix seconds>`` (integer, the attempt's send time);
- ``X-Tagstream-Signature: sha256=<hex>``: HMAC-SHA256 with the shared secret
  over ``<timestamp>.<raw body>`` (the timestamp's ASCII digits, a dot, the
  body bytes), so a captured request cannot be replayed with a new timestamp.

``X-Tagstream-Delivery`` is the same id on every attempt of one alert (for
de-duplication).  A 2xx answer is delivered; 408, 429 and 5xx, a timeout or a
connection failure are retried; any other status is refused for good (logged).

**Command**: runs ``command`` (no shell) with the alert JSON on stdin; exit
status 0 is delivered, anything else (or running past ``timeout_seconds``,
then it is killed) is retried.

**Stdout**: one line per alert (``format = "text"``) or one JSON object per
line (``"json"``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TextIO

from monitor.alerts import Alert, Rules, SinkSpec
from tagstream.errors import TagstreamError

if TYPE_CHECKING:
    import requests

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "CommandSink",
    "Sink",
    "SinkSet",
    "SinkStats",
    "StdoutSink",
    "WebhookSink",
    "encode_alert",
    "sign",
    "verify",
]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Tagstream-Signature"
TIMESTAMP_HEADER: Final = "X-Tagstream-Timestamp"
DELIVERY_HEADER: Final = "X-Tagstream-Delivery"
#: HTTP statuses worth another attempt (besides timeouts and connection failures).
_RETRY_STATUSES: Final = frozenset({408, 425, 429})


def encode_alert(alert: Alert) -> bytes:
    """The alert's JSON body as sent: compact UTF-8."""
    return json.dumps(alert.to_json_dict(), separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``b"<timestamp>." + body`` with ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, str(int(timestamp)).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: float = 300.0,
) -> bool:
    """A receiver's check: the signature matches and the timestamp is within ``tolerance_s``.

    Parameters
    ----------
    secret : str or bytes
        The shared secret.
    headers : mapping
        The request's headers (looked up case-insensitively).
    body : bytes
        The raw request body, exactly as received.
    now : float or None
        Unix time (default ``time.time()``).
    tolerance_s : float >= 0
        Largest accepted difference between ``now`` and the timestamp header.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    signature = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not stamp.isdigit():
        return False
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(stamp), body), signature)


def format_line(alert: Alert) -> str:
    """The stdout sink's readable line: UTC time, status, text."""
    when = datetime.fromtimestamp(alert.time, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{when} {alert.status.upper():8} {alert.text}"


@dataclasses.dataclass
class SinkStats:
    """What one sink did: alerts delivered, failed for good, dropped, and retries."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0


class DeliveryError(TagstreamError):
    """One attempt failed; ``retry`` says whether another may succeed."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class Sink:
    """A queue and a thread delivering alerts with retries; subclasses implement :meth:`send`.

    Parameters
    ----------
    spec : SinkSpec
        The ``[[sink]]`` table (name, queue size, retries, backoff).

    Attributes
    ----------
    stats : SinkStats
    """

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.stats = SinkStats()
        self._queue: collections.deque[Alert] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._busy = False
        self._halted = False
        self._thread: threading.Thread | None = None

    # -- the caller's side -------------------------------------------------------

    def start(self) -> None:
        """Start the delivery thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
            self._thread.start()

    def submit(self, alert: Alert) -> None:
        """Queue ``alert``; never blocks.  A full queue drops its oldest alert."""
        with self._cond:
            if len(self._queue) >= self.spec.queue_size:
                dropped = self._queue.popleft()
                self.stats.dropped += 1
                logger.warning(
                    "sink queue full, oldest alert dropped sink=%s rule=%s dropped=%d",
                    self.name,
                    dropped.rule,
                    self.stats.dropped,
                )
            self._queue.append(alert)
            self._cond.notify()

    def pending(self) -> int:
        """Alerts queued or being delivered."""
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def close(self, *, timeout_s: float = 1.0) -> None:
        """Let the queue drain for up to ``timeout_s``, then stop; safe to call twice.

        An attempt in flight may outlive this (the thread is a daemon); what is
        left is logged as undelivered.
        """
        self.drain(deadline=time.monotonic() + timeout_s)
        self.halt()

    def drain(self, *, deadline: float) -> None:
        """Wait until nothing is queued or in flight, or ``time.monotonic()`` is ``deadline``."""
        with self._cond:
            while (self._queue or self._busy) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(timeout=min(0.05, left))

    def request_stop(self) -> None:
        """Ask the thread to leave after its current attempt; does not wait."""
        with self._cond:
            self._stop.set()
            self._cond.notify_all()

    def halt(self, *, join_deadline: float | None = None) -> None:
        """Stop the thread and release the sink; safe to call twice.

        Waits for the thread until ``join_deadline`` (``time.monotonic()``; default
        0.2 s from now).  An attempt still in flight then is abandoned to the
        daemon thread, which keeps what it uses.
        """
        with self._cond:
            if self._halted:
                return
            self._halted = True
            left = len(self._queue) + (1 if self._busy else 0)
            self._stop.set()
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            deadline = time.monotonic() + 0.2 if join_deadline is None else join_deadline
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if left:
            logger.warning(
                "sink closed with alerts undelivered sink=%s undelivered=%d", self.name, left
            )
        if thread is None or not thread.is_alive():
            self._close()

    # -- the thread's side ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                alert = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(alert)
            except Exception:  # a bug must not stop this sink's thread for good
                self.stats.failed += 1
                logger.exception("alert not delivered sink=%s rule=%s", self.name, alert.rule)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, alert: Alert) -> None:
        delivery = uuid.uuid4().hex
        attempts = 1 + self.spec.retries
        for attempt in range(attempts):
            try:
                self.send(alert, delivery=delivery)
            except DeliveryError as exc:
                last = attempt == attempts - 1 or not exc.retry or self._stop.is_set()
                if last:
                    self.stats.failed += 1
                    logger.error(
                        "alert not delivered sink=%s rule=%s stream=%s attempts=%d error=%s",
                        self.name, alert.rule, alert.stream, attempt + 1, exc,
                    )  # fmt: skip
                    return
                delay = min(self.spec.backoff_seconds * 2**attempt, self.spec.max_backoff_seconds)
                self.stats.retries += 1
                logger.warning(
                    "delivery failed, retrying sink=%s rule=%s attempt=%d retry_in_s=%.2f error=%s",
                    self.name, alert.rule, attempt + 1, delay, exc,
                )  # fmt: skip
                if self._stop.wait(delay):
                    self.stats.failed += 1
                    return
            else:
                self.stats.delivered += 1
                logger.info(
                    "alert delivered sink=%s rule=%s stream=%s status=%s attempts=%d",
                    self.name, alert.rule, alert.stream, alert.status, attempt + 1,
                )  # fmt: skip
                return

    def send(self, alert: Alert, *, delivery: str) -> None:
        """One attempt; raise :class:`DeliveryError` on failure."""
        raise NotImplementedError

    def _close(self) -> None:
        """Release what the sink holds (a session); called once by :meth:`close`."""


class WebhookSink(Sink):
    """POST the alert JSON to ``spec.url``, signed when ``spec.secret`` is set."""

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        import requests

        from tagstream import __version__

        self._requests = requests
        self._session: requests.Session = requests.Session()
        self._session.headers["User-Agent"] = f"tagstream/{__version__}"

    def send(self, alert: Alert, *, delivery: str) -> None:
        body = encode_alert(alert)
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery}
        if self.spec.secret:
            stamp = int(time.time())
            headers[TIMESTAMP_HEADER] = str(stamp)
            headers[SIGNATURE_HEADER] = sign(self.spec.secret, stamp, body)
        try:
            response = self._session.post(
                self.spec.url, data=body, headers=headers, timeout=self.spec.timeout_seconds
            )
        except self._requests.Timeout:
            raise DeliveryError(f"no answer within {self.spec.timeout_seconds:g} s") from None
        except self._requests.RequestException as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
        with contextlib.closing(response):
            status = response.status_code
            if 200 <= status < 300:
                return
            retry = status >= 500 or status in _RETRY_STATUSES
            raise DeliveryError(f"HTTP {status} {response.reason}", retry=retry)

    def _close(self) -> None:
        self._session.close()


class CommandSink(Sink):
    """Run ``spec.command`` with the alert JSON on stdin; exit status 0 is delivered."""

    def send(self, alert: Alert, *, delivery: str) -> None:
        try:
            done = subprocess.run(
                list(self.spec.command),
                input=encode_alert(alert),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=self.spec.timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeliveryError(
                f"still running after {self.spec.timeout_seconds:g} s; killed"
            ) from None
        except OSError as exc:
            raise DeliveryError(f"cannot run {self.spec.command[0]}: {exc.strerror}") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise DeliveryError(f"exit status {done.returncode} {tail[0][:200]}".rstrip())


class StdoutSink(Sink):
    """Write one line per alert to ``stream`` (text or JSON)."""

    def __init__(self, spec: SinkSpec, *, stream: TextIO) -> None:
        super().__init__(spec)
        self._stream = stream

    def send(self, alert: Alert, *, delivery: str) -> None:
        if self.spec.format == "json":
            line = json.dumps(alert.to_json_dict(), separators=(",", ":"), ensure_ascii=False)
        else:
            line = format_line(alert)
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError) as exc:  # a closed pipe or stream
            raise DeliveryError(str(exc), retry=False) from None


def make_sink(spec: SinkSpec, *, stdout: TextIO) -> Sink:
    """The sink for one ``[[sink]]`` table."""
    if spec.type == "webhook":
        return WebhookSink(spec)
    if spec.type == "command":
        return CommandSink(spec)
    return StdoutSink(spec, stream=stdout)


class SinkSet:
    """Every sink of a rules file, and which rule delivers to which.

    Parameters
    ----------
    sinks : iterable of Sink
    routes : mapping {rule name: sink names}
        A rule missing here delivers to every sink.
    """

    def __init__(self, sinks: Iterable[Sink], routes: Mapping[str, Iterable[str]]) -> None:
        self.sinks = {sink.name: sink for sink in sinks}
        self.routes = {rule: tuple(names) for rule, names in routes.items()}

    @classmethod
    def from_rules(cls, rules: Rules, *, stdout: TextIO) -> SinkSet:
        """Build (not start) the sinks of ``rules``."""
        sinks = [make_sink(spec, stdout=stdout) for spec in rules.sinks]
        return cls(sinks, {rule.name: rules.sinks_of(rule) for rule in rules.rules})

    def start(self) -> None:
        for sink in self.sinks.values():
            sink.start()

    def submit(self, alert: Alert) -> None:
        """Queue ``alert`` on each sink its rule names; never blocks."""
        for name in self.routes.get(alert.rule, tuple(self.sinks)):
            self.sinks[name].submit(alert)

    def stats(self) -> dict[str, SinkStats]:
        return {name: sink.stats for name, sink in self.sinks.items()}

    def close(self, *, timeout_s: float = 1.0) -> None:
        """Close every sink, sharing ``timeout_s`` for draining; safe to call twice."""
        deadline = time.monotonic() + timeout_s
        for sink in self.sinks.values():  # they drain side by side: one deadline for all
            sink.drain(deadline=deadline)
        for sink in self.sinks.values():
            sink.request_stop()
        join_deadline = time.monotonic() + 0.2
        for sink in self.sinks.values():
            sink.halt(join_deadline=join_deadline)

    def __enter__(self) -> SinkSet:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
