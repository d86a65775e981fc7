"""Subscriber-side libraries: what the dashboards, the recorder and the report share.

- :mod:`monitor.history`: every stream's recent updates, dominant tag and health
  (the model of the terminal dashboard, the web page and ``tools.live``);
- :mod:`monitor.store`: the recording database (schema, writer, reader) of
  ``tools.record`` and ``tools.report``;
- :mod:`monitor.recorder`: a subscription recorded into that database;
- :func:`connect`: a :class:`protocol.subscriber.Subscriber` whose connection
  failures are :class:`~tagstream.errors.EndpointError` (exit status 4).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tagstream.errors import EndpointError

if TYPE_CHECKING:
    from protocol.security import SecuritySettings
    from protocol.subscriber import Subscriber

__all__ = ["connect"]


def connect(
    endpoints: str | Iterable[str],
    *,
    streams: Iterable[str] | None = None,
    security: SecuritySettings | None = None,
    context: Any = None,
    events: bool = False,
) -> Subscriber:
    """Subscribe to worker PUB endpoints (see :class:`protocol.subscriber.Subscriber`).

    Parameters
    ----------
    endpoints : str or iterable of str
        Worker publish endpoints.
    streams : iterable of str or None
        Only these stream ids (``None``: all).
    security : protocol.security.SecuritySettings or None
        CURVE keys, e.g. ``config.SecurityConfig`` (``[security]``).
    context : zmq.Context or None
        Defaults to ``zmq.Context.instance()``.
    events : bool
        Also receive the worker's events (``Subscriber.receive_message``).

    Raises
    ------
    tagstream.errors.EndpointError
        An endpoint is malformed or cannot be connected to.
    """
    import zmq

    from protocol.subscriber import Subscriber

    endpoint_list = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    try:
        return Subscriber(
            endpoint_list, streams=streams, context=context, security=security, events=events
        )
    except zmq.ZMQError as exc:
        raise EndpointError(
            f"cannot subscribe to {', '.join(endpoint_list)}: {exc}; "
            "check --endpoint or [subscribe] endpoints"
        ) from None
