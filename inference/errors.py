"""Why a worker cannot start, each with the exit status ``python -m inference`` returns.

- :class:`SettingsError` (exit 2): the settings cannot work with the model
  (window, hop, mode) or with the endpoints (security keys);
- :class:`EndpointBindError` (exit 4): an endpoint or the metrics port cannot be bound.

A model that cannot be loaded raises :class:`model.ModelLoadError` or
:class:`model.ContractError` (exit status 3). Nothing a peer sends raises:
bad input is counted and logged (:mod:`inference.worker`).
"""

from __future__ import annotations

from tagstream.errors import EndpointError, TagstreamError, UsageError

__all__ = ["EndpointBindError", "SettingsError", "WorkerError"]


class WorkerError(TagstreamError):
    """The worker cannot start; :attr:`reason` says which kind of problem it is."""

    #: "settings" (:class:`SettingsError`) or "endpoint" (:class:`EndpointBindError`).
    reason: str = "settings"


class SettingsError(WorkerError, UsageError, ValueError):
    """Settings that cannot work with the model or the endpoints (exit status 2)."""

    reason = "settings"


class EndpointBindError(WorkerError, EndpointError):
    """An endpoint or port cannot be bound (exit status 4)."""

    reason = "endpoint"
