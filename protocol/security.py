"""ZeroMQ CURVE authentication and encryption: the one place every process secures its sockets.

The worker *binds* (it is the CURVE server of its PULL and PUB sockets); the
streamers, subscribers and the recorder *connect* (CURVE clients).  A
:class:`zmq.auth.thread.ThreadAuthenticator` on the worker's context admits
only clients whose public key file (``*.key``) lies in
``security.allowed_clients_dir``: any other peer completes no handshake, so it
can neither send audio nor receive tags.

Every function takes a :class:`SecuritySettings` *value*: anything with the five
attributes below, such as ``config.SecurityConfig`` (``[security]`` in
``config.toml``) or this module's :class:`CurveSettings` for code without a
settings file.  This module never reads settings itself.

>>> curve_enabled(CurveSettings(), "tcp://127.0.0.1:5555", role="server")
False
>>> curve_enabled(CurveSettings(), "ipc:///tmp/in", role="client")
False

``curve``:

* ``"off"``: never.
* ``"on"``: always; the keys must be configured.
* ``"auto"`` (default): on when the keys of that side are configured, and
  *required* when an endpoint is beyond loopback (anything but 127.0.0.0/8,
  ``::1``, ``localhost``, ``ipc://`` and ``inproc://``).  A required but
  unconfigured key stops the program at start-up with one line naming the
  setting (:class:`SecurityError`, a :class:`tagstream.errors.UsageError`:
  exit status 2).

Keys come from ``python -m tools.keys generate --out DIR --name NAME``
(``zmq.auth.create_certificates``): ``NAME.key`` is the public key file,
``NAME.key_secret`` the secret one (it holds the public key too).  The worker
reads ``allowed_clients_dir`` once, at start.

A refused handshake is never silent.  The worker's authenticator logs each
client key it refuses, with the peer's address and the fix (rate-limited), and
counts it (:func:`auth_rejected`: ``reason="auth"`` in the worker's rejected
counters and metrics).  A client watches its own handshakes
(:class:`HandshakeWatch`) and stops with :class:`AuthenticationError`
("authentication failed: the worker does not accept this client key; ...")
instead of waiting for a connection that never comes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import ipaddress
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, Protocol

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from tagstream.errors import UsageError

__all__ = [
    "CURVE_MODES",
    "NO_KEYS",
    "AuthenticationError",
    "CurveSettings",
    "HandshakeWatch",
    "SecurityError",
    "SecuritySettings",
    "auth_rejected",
    "check_server",
    "curve_enabled",
    "is_local_endpoint",
    "secure_client",
    "secure_server",
    "start_authenticator",
    "watch_handshake",
]

logger = logging.getLogger(__name__)

CURVE_MODES: Final = ("auto", "on", "off")
_KEYS_HINT: Final = "create keys with: python -m tools.keys generate --out DIR"
#: At most one log line per this many seconds about refused client keys (the rest are counted).
AUTH_LOG_INTERVAL_S: Final = 5.0
#: Handshakes in a row that the worker cut off without a reason before a client gives up.
HANDSHAKE_FAILURES: Final = 3


class SecurityError(UsageError):
    """A security setting is missing, unreadable or not allowed; the message names it."""


class AuthenticationError(SecurityError):
    """The worker refused this client's CURVE handshake; the message says which key to fix."""


class SecuritySettings(Protocol):
    """What the transport reads: ``config.SecurityConfig`` and :class:`CurveSettings` are two.

    Attributes
    ----------
    curve : {"auto", "on", "off"}
    server_secret_key : str
        The worker's ``NAME.key_secret`` file ("" = not set).
    server_public_key : str
        The worker's ``NAME.key`` file, for clients.
    client_secret_key : str
        A client's ``NAME.key_secret`` file.
    allowed_clients_dir : str
        Folder of the client public keys (``*.key``) the worker admits.
    """

    @property
    def curve(self) -> str: ...
    @property
    def server_secret_key(self) -> str: ...
    @property
    def server_public_key(self) -> str: ...
    @property
    def client_secret_key(self) -> str: ...
    @property
    def allowed_clients_dir(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class CurveSettings:
    """A :class:`SecuritySettings` value for code without a settings file.

    ``CurveSettings()`` is the default: ``"auto"`` with no keys, so loopback
    and ``ipc://`` work in the clear and anything beyond is refused.

    >>> CurveSettings(client_secret_key="keys/studio-a.key_secret",
    ...               server_public_key="keys/worker.key")  # doctest: +SKIP
    """

    curve: str = "auto"
    server_secret_key: str = ""
    server_public_key: str = ""
    client_secret_key: str = ""
    allowed_clients_dir: str = ""


#: The defaults: ``"auto"``, no keys.
NO_KEYS: Final = CurveSettings()


def is_local_endpoint(endpoint: str) -> bool:
    """Whether ``endpoint`` stays on this machine (loopback tcp, ``ipc://``, ``inproc://``).

    Parameters
    ----------
    endpoint : str
        A ZeroMQ endpoint, e.g. ``"tcp://127.0.0.1:5555"`` or ``"tcp://*:5555"``.
    """
    transport, sep, address = endpoint.partition("://")
    if not sep:
        return False
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    address = address.rpartition(";")[2]  # "tcp://iface;host:port": the remote part
    host = address.rsplit(":", 1)[0] if ":" in address else address
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", a host name, an interface name
        return False


def _keys_configured(settings: SecuritySettings, role: str) -> bool:
    if role == "server":
        return bool(settings.server_secret_key)
    return bool(settings.client_secret_key or settings.server_public_key)


def curve_enabled(settings: SecuritySettings, endpoint: str, *, role: str) -> bool:
    """Whether a socket of ``role`` ("server" binds, "client" connects) on ``endpoint`` uses CURVE.

    Raises
    ------
    ValueError
        If ``role`` is not "server" or "client" (a programming error).
    SecurityError
        If ``settings.curve`` is not one of :data:`CURVE_MODES`.
    """
    if role not in ("server", "client"):
        raise ValueError(f"role={role!r} must be 'server' or 'client'")
    if settings.curve not in CURVE_MODES:
        raise SecurityError(
            f"security.curve: expected one of {', '.join(CURVE_MODES)}, got {settings.curve!r}"
        )
    if settings.curve == "off":
        return False
    if settings.curve == "on":
        return True
    return _keys_configured(settings, role) or not is_local_endpoint(endpoint)


def _why(settings: SecuritySettings, endpoint: str) -> str:
    if settings.curve == "on":
        return 'security.curve = "on"'
    if not is_local_endpoint(endpoint):
        return f"{endpoint} is beyond loopback"
    return "other security keys are set"


def _require(settings: SecuritySettings, name: str, endpoint: str) -> str:
    value = str(getattr(settings, name))
    if not value:
        raise SecurityError(
            f"security.{name} is not set; CURVE is required because "
            f"{_why(settings, endpoint)} ({_KEYS_HINT})"
        )
    return os.path.expanduser(value)


def _load(name: str, path: str, *, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"security.{name}={path!r}: cannot read key file ({exc})") from None
    if secret and secret_key is None:
        raise SecurityError(
            f"security.{name}={path!r} holds no secret key; use the NAME.key_secret file"
        )
    return public, secret_key


def check_server(settings: SecuritySettings, endpoints: Iterable[str]) -> list[str]:
    """Check the server settings for ``endpoints``; return those served with CURVE.

    Cheap and without side effects: the worker calls it before loading its model.

    Raises
    ------
    SecurityError
        A required setting is missing, or the key file or the folder is unusable.
    """
    secured = [e for e in endpoints if curve_enabled(settings, e, role="server")]
    if secured:
        path = _require(settings, "server_secret_key", secured[0])
        _load("server_secret_key", path, secret=True)
        folder = _require(settings, "allowed_clients_dir", secured[0])
        if not Path(folder).is_dir():
            raise SecurityError(f"security.allowed_clients_dir={folder!r}: no such folder")
    return secured


def start_authenticator(
    context: zmq.Context[Any], settings: SecuritySettings, endpoints: Iterable[str]
) -> ThreadAuthenticator | None:
    """Start the ZAP authenticator on ``context`` if any of ``endpoints`` is served with CURVE.

    Checks every server setting first, so a missing key fails before anything binds.

    Returns
    -------
    ThreadAuthenticator or None
        Started, admitting the public keys in ``allowed_clients_dir``; call
        ``.stop()`` before terminating the context.  ``None`` when CURVE is off.

    Raises
    ------
    SecurityError
        A required setting is missing, or a key file or the folder is unusable.
    """
    secured = check_server(settings, endpoints)
    if not secured:
        return None
    folder = _require(settings, "allowed_clients_dir", secured[0])
    allowed = sorted(Path(folder).glob("*.key"))
    if not allowed:
        logger.warning("no client keys in allowed_clients_dir=%s: every client is refused", folder)
    auth = _Authenticator(context, allowed_clients_dir=folder)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=auth)
    logger.info("curve on endpoints=%s allowed_clients=%d", ",".join(secured), len(allowed))
    return auth


class _Authenticator(ThreadAuthenticator):
    """The ZAP authenticator that says whom it refused: logged (rate-limited) and counted.

    Admits exactly the keys ``zmq.auth`` reads from ``allowed_clients_dir`` (as
    ``configure_curve`` does); it is its own credentials provider so that it sees
    each refused key, and it notes the peer's address from the ZAP request.
    Everything but :attr:`rejected` runs in the authenticator's thread.
    """

    def __init__(self, context: zmq.Context[Any], *, allowed_clients_dir: str) -> None:
        super().__init__(context, log=logging.getLogger("zmq.auth"))
        self.allowed_clients_dir = allowed_clients_dir
        self._allowed_keys = set(zmq.auth.load_certificates(allowed_clients_dir))
        #: Handshakes refused so far (written by the authenticator's thread only).
        self.rejected = 0
        self._address = ""
        self._last_log = float("-inf")
        self._unlogged = 0

    def handle_zap_message(self, msg: list[bytes]) -> Any:
        # One request at a time in the authenticator's thread: the callback below is for it.
        address = msg[3] if len(msg) > 3 else b""
        self._address = address[:64].decode("utf-8", "replace") or "?"
        return super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        """``zmq.auth``'s credentials provider: whether the z85 public ``key`` is allowed."""
        if key in self._allowed_keys:
            return True
        self.rejected += 1
        now = time.monotonic()
        if now - self._last_log < AUTH_LOG_INTERVAL_S:
            self._unlogged += 1
            return False
        logger.warning(
            "rejected CURVE handshake peer=%s client_key=%s rejected_total=%d unlogged=%d: the "
            "client's key is not in security.allowed_clients_dir=%s; if it should connect, copy "
            "its public key file (NAME.key) there and restart the worker",
            self._address,
            key[:40].decode("ascii", "replace"),
            self.rejected,
            self._unlogged,
            self.allowed_clients_dir,
        )
        self._last_log = now
        self._unlogged = 0
        return False


def auth_rejected(auth: ThreadAuthenticator | None) -> collections.Counter[str]:
    """Client keys the worker's authenticator refused: ``{"auth": n}`` (empty when none).

    For the worker's rejected counters (``WorkerStats.rejected``, the metric
    ``tagstream_worker_rejected_messages_total{reason="auth"}``).
    """
    count = getattr(auth, "rejected", 0)
    return collections.Counter({"auth": count} if count else {})


def secure_server(
    socket: zmq.Socket[Any],
    settings: SecuritySettings,
    auth: ThreadAuthenticator | None,
    *,
    endpoint: str,
) -> bool:
    """Make ``socket`` a CURVE server before it binds ``endpoint`` (when CURVE applies).

    Parameters
    ----------
    socket : zmq.Socket
        Not yet bound.
    settings : SecuritySettings
    auth : ThreadAuthenticator or None
        From :func:`start_authenticator` on the socket's context.
    endpoint : str
        What the socket is about to bind.

    Returns
    -------
    bool
        Whether CURVE was switched on.
    """
    if not curve_enabled(settings, endpoint, role="server"):
        return False
    if auth is None:
        raise RuntimeError("secure_server() needs the authenticator of start_authenticator()")
    path = _require(settings, "server_secret_key", endpoint)
    public, secret = _load("server_secret_key", path, secret=True)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return True


def secure_client(
    socket: zmq.Socket[Any], settings: SecuritySettings, *, endpoints: Iterable[str]
) -> bool:
    """Make ``socket`` a CURVE client before it connects to ``endpoints`` (when CURVE applies).

    Returns
    -------
    bool
        Whether CURVE was switched on (for all endpoints: the options are per socket).

    Raises
    ------
    SecurityError
        CURVE is required and ``client_secret_key`` or ``server_public_key`` is
        missing or unreadable.
    """
    secured = [e for e in endpoints if curve_enabled(settings, e, role="client")]
    if not secured:
        return False
    client_path = _require(settings, "client_secret_key", secured[0])
    server_path = _require(settings, "server_public_key", secured[0])
    public, secret = _load("client_secret_key", client_path, secret=True)
    server_public, _ = _load("server_public_key", server_path, secret=False)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public
    return True


def watch_handshake(socket: zmq.Socket[Any], settings: SecuritySettings) -> HandshakeWatch:
    """A :class:`HandshakeWatch` on a CURVE client ``socket``; call before ``connect``."""
    return HandshakeWatch(socket, client_key=str(settings.client_secret_key))


class HandshakeWatch:
    """A CURVE client's handshakes (a ZeroMQ socket monitor): refused ones raise.

    libzmq retries a refused handshake quietly for ever; the client calls
    :meth:`check` whenever it waits (before each send, each receive poll) and
    stops with one line naming the key to fix.

    Parameters
    ----------
    socket : zmq.Socket
        A CURVE client socket (:func:`secure_client`), not yet connected.
    client_key : str
        Its ``client_secret_key`` file, named in the message.
    """

    _EVENTS: Final = (
        zmq.EVENT_HANDSHAKE_SUCCEEDED
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    )

    def __init__(self, socket: zmq.Socket[Any], *, client_key: str = "") -> None:
        self._socket: zmq.Socket[Any] | None = socket
        self.client_key = client_key
        self._monitor: zmq.Socket[Any] | None = socket.get_monitor_socket(self._EVENTS)
        self._failures_in_a_row = 0
        #: Handshakes that succeeded so far.
        self.succeeded = 0

    def check(self) -> None:
        """Read the handshake events so far (never blocks).

        Raises
        ------
        AuthenticationError
            The worker refused this client's key, speaks no CURVE, or cut off
            :data:`HANDSHAKE_FAILURES` handshakes in a row (a wrong server key).
        """
        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            kind, value = event["event"], event["value"]
            endpoint = bytes(event["endpoint"])[:200].decode("utf-8", "replace")
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded += 1
                self._failures_in_a_row = 0
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise AuthenticationError(self._refused(endpoint, value))
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                raise AuthenticationError(self._protocol(endpoint, value))
            else:  # EVENT_HANDSHAKE_FAILED_NO_DETAIL: the worker closed the connection
                self._failures_in_a_row += 1
                if self._failures_in_a_row >= HANDSHAKE_FAILURES:
                    raise AuthenticationError(
                        f"authentication failed: the worker at {endpoint} cut off "
                        f"{self._failures_in_a_row} CURVE handshakes in a row; check that "
                        "security.server_public_key is the worker's public key (NAME.key) "
                        "and that the worker has CURVE on"
                    )

    def _refused(self, endpoint: str, status: int) -> str:
        if status == 400:
            public = self.client_key.removesuffix("_secret") or "this client's NAME.key"
            return (
                f"authentication failed: the worker does not accept this client key; copy "
                f"{public} into the worker's security.allowed_clients_dir and restart the "
                f"worker (endpoint {endpoint})"
            )
        return (
            f"authentication failed: the worker at {endpoint} answered ZAP status {status}; "
            "see the worker's log"
        )

    @staticmethod
    def _protocol(endpoint: str, code: int) -> str:
        if code == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return (
                f"authentication failed: the worker at {endpoint} does not use CURVE; set "
                'security.curve the same on both sides (or "off" here for a worker without '
                "keys on loopback)"
            )
        if code == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return (
                f"authentication failed: the CURVE handshake with {endpoint} did not decrypt; "
                "check that security.server_public_key is the worker's public key (NAME.key)"
            )
        return (
            f"authentication failed: the CURVE handshake with {endpoint} broke the protocol "
            f"(ZeroMQ error 0x{code:08x}); check both sides' security settings"
        )

    def close(self) -> None:
        """Stop watching (before the socket closes); safe to call twice."""
        if self._socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._socket.disable_monitor()
            self._socket = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
