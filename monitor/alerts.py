"""Alert rules: which tag updates and events deserve telling a person, as a pure library.

The rule engine knows no sockets, threads or clocks: it is fed updates, events
and the current time, and returns the :class:`Alert` objects to deliver, so a
test drives it deterministically::

    >>> rules = load_rules("rules.toml")                    # doctest: +SKIP
    >>> engine = AlertEngine(rules, start_time=time.time())  # doctest: +SKIP
    >>> for alert in engine.on_update(update, now=time.time()):  # doctest: +SKIP
    ...     sinks.submit(alert)
    >>> engine.tick(now=time.time())        # streams missing, dead air lasting  # doctest: +SKIP

``python -m tools.alert`` is the command around it and :mod:`monitor.sinks`
delivers what it returns.  docs/ALERTS.md is the reference of the rules file;
in short::

    [alerts]
    quiet_seconds = 300              # default quiet period of every rule

    [[sink]]
    name = "chat"
    type = "webhook"                 # webhook, command or stdout
    url = "https://chat.example.org/hooks/abc"
    secret_env = "TAGSTREAM_WEBHOOK_SECRET"

    [[rule]]
    name = "metal on the classical station"
    kind = "threshold"               # threshold, change, missing, silence, behind or event
    streams = ["classic:*"]          # fnmatch patterns of stream ids
    family = "metal"                 # or tag = "heavy metal"
    at_least = 0.5
    for_seconds = 30

Time: a rule's ``for_seconds`` over tag scores (``threshold``, ``change``) is
counted in **audio seconds** of the stream (the updates' ``end_s``), so a file
streamed with ``--fast`` behaves as it would live.  ``missing``, ``silence``,
``behind`` and quiet periods are counted in **wall-clock seconds** (the ``now`` passed in),
since they are about time passing for the people told.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from config.schema import ConfigError, build, read_toml, setting
from model.contract import MSD_TAGS
from monitor.families import DEFAULT_FAMILIES, Families, families_from_toml, unknown_tag_error
from protocol import TagUpdate

__all__ = [
    "ALERT_VERSION",
    "EVENT_KINDS",
    "RULE_KINDS",
    "SINK_TYPES",
    "Alert",
    "AlertEngine",
    "AlertSettings",
    "RuleSpec",
    "Rules",
    "SinkSpec",
    "load_rules",
    "rules_from_toml",
]

logger = logging.getLogger(__name__)

#: Version of the alert JSON a sink receives (``"version"`` in every body).
ALERT_VERSION: Final = 1
#: Rule kinds; docs/ALERTS.md describes each.
RULE_KINDS: Final = ("threshold", "change", "missing", "silence", "behind", "event")
#: Sink types (:mod:`monitor.sinks`).
SINK_TYPES: Final = ("webhook", "command", "stdout")
#: Event kinds the worker will publish (issue 13; not built yet).  An ``event``
#: rule's patterns must match at least one, so a typo fails at start-up.  When
#: events reach the wire protocol this tuple moves there.
EVENT_KINDS: Final = (
    "silence_start",
    "silence_end",
    "content_change",
    "now_playing",
    "source_down",
    "source_up",
)
#: Seconds: a week, the most any duration in a rules file sensibly is.
_WEEK: Final = 7 * 86_400.0
_WILDCARD = re.compile(r"[*?\[]")


# ---------------------------------------------------------------------------
# The rules file
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AlertSettings:
    """``[alerts]``: settings every rule shares."""

    #: Default quiet period of a rule: repeats of one rule on one stream within
    #: this many seconds of a delivered alert are suppressed.
    quiet_seconds: float = setting(300.0, min=0, max=_WEEK)
    #: How often ``missing`` and ``silence`` rules are checked (wall-clock seconds).
    check_interval_seconds: float = setting(1.0, above=0, max=60)


@dataclasses.dataclass(frozen=True)
class SinkSpec:
    """One ``[[sink]]``: where alerts go.  Which keys apply depends on ``type``."""

    name: str = ""
    type: str = setting("stdout", choices=SINK_TYPES)
    #: webhook: the URL to POST to (http or https).
    url: str = ""
    #: webhook: the HMAC-SHA256 shared secret, inline ...
    secret: str = ""
    #: ... or the name of the environment variable holding it (preferred).
    secret_env: str = ""
    #: command: program and arguments (no shell); the alert JSON comes on stdin.
    command: tuple[str, ...] = ()
    #: stdout: one readable line per alert, or one JSON object per line.
    format: str = setting("text", choices=("text", "json"))
    #: webhook, command: seconds one attempt may take.
    timeout_seconds: float = setting(5.0, above=0, max=300)
    #: webhook, command: attempts after the first one fails.
    retries: int = setting(5, min=0, max=100)
    #: webhook, command: wait before the first retry; doubles per retry.
    backoff_seconds: float = setting(1.0, above=0, max=3600)
    #: webhook, command: the longest wait between two attempts.
    max_backoff_seconds: float = setting(60.0, above=0, max=_WEEK)
    #: Alerts waiting for this sink; beyond it the oldest waiting one is dropped.
    queue_size: int = setting(100, above=0, max=100_000)


#: Keys that only some sink types take.
_SINK_KEYS: Final[dict[str, frozenset[str]]] = {
    "webhook": frozenset(
        {"url", "secret", "secret_env", "timeout_seconds", "retries", "backoff_seconds",
         "max_backoff_seconds"}
    ),
    "command": frozenset(
        {"command", "timeout_seconds", "retries", "backoff_seconds", "max_backoff_seconds"}
    ),
    "stdout": frozenset({"format"}),
}  # fmt: skip
_SINK_COMMON: Final = frozenset({"name", "type", "queue_size"})


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    """One ``[[rule]]``.  Which keys apply depends on ``kind`` (docs/ALERTS.md)."""

    name: str = ""
    kind: str = setting("threshold", choices=RULE_KINDS)
    #: fnmatch patterns of the stream ids the rule watches.
    streams: tuple[str, ...] = ("*",)
    #: Sink names to deliver to; empty: every sink.
    sinks: tuple[str, ...] = ()
    #: Repeats within this many seconds are suppressed (default ``[alerts] quiet_seconds``).
    quiet_seconds: float = setting(300.0, min=0, max=_WEEK)
    #: Also deliver when the condition ends (threshold, missing, silence).
    resolved: bool = True
    #: threshold: one tag, or one family ...
    tag: str = ""
    family: str = ""
    #: threshold: the score must be at least / at most this (one or both).
    #: change: the new dominant's score must be at least this to count.
    at_least: float = setting(0.0, min=0, max=1)
    at_most: float = setting(1.0, min=0, max=1)
    #: How long the condition must hold before the rule fires (see the module doc).
    for_seconds: float = setting(0.0, min=0, max=_WEEK)
    #: threshold, change: the smoothed scores (default) or the window's own.
    score: str = setting("smoothed", choices=("smoothed", "window"))
    #: change: dominant tag or dominant family.
    of: str = setting("family", choices=("tag", "family"))
    #: change: only changes to a tag or family matching one of these patterns.
    to: tuple[str, ...] = ("*",)
    #: event: fnmatch patterns of event kinds (``silence_*``, ``source_down``).
    events: tuple[str, ...] = ()
    #: behind: the worker tags the stream more than this many seconds behind its audio
    #: (the updates' ``behind_s``; streaming mode's look-ahead alone is about 1.2 s).
    behind_seconds: float = setting(5.0, above=0, max=_WEEK)


_RULE_KEYS: Final[dict[str, frozenset[str]]] = {
    "threshold": frozenset({"tag", "family", "at_least", "at_most", "for_seconds", "score",
                            "resolved"}),
    "change": frozenset({"of", "to", "at_least", "for_seconds", "score"}),
    "missing": frozenset({"for_seconds", "resolved"}),
    "silence": frozenset({"for_seconds", "resolved"}),
    "behind": frozenset({"behind_seconds", "for_seconds", "resolved"}),
    "event": frozenset({"events"}),
}  # fmt: skip
_RULE_COMMON: Final = frozenset({"name", "kind", "streams", "sinks", "quiet_seconds"})


@dataclasses.dataclass(frozen=True)
class Rules:
    """A checked rules file.

    Attributes
    ----------
    settings : AlertSettings
    sinks : tuple of SinkSpec
    rules : tuple of RuleSpec
        Each rule's ``quiet_seconds`` is filled from ``settings`` where the file omits it.
    families : Families
        The file's ``[families]`` table, or :data:`monitor.families.DEFAULT_FAMILIES`.
    """

    settings: AlertSettings
    sinks: tuple[SinkSpec, ...]
    rules: tuple[RuleSpec, ...]
    families: Families = DEFAULT_FAMILIES

    def sinks_of(self, rule: RuleSpec) -> tuple[str, ...]:
        """The sink names ``rule`` delivers to."""
        return rule.sinks or tuple(sink.name for sink in self.sinks)


def _table_list(data: Mapping[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
    raw = data.get(key, [])
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError(f"{key}: expected [[{key}]] tables, got {raw!r}")
    return [(f"{key}[{i}]", item) for i, item in enumerate(raw, start=1)]


def _check_name(where: str, item: Mapping[str, Any], seen: set[str]) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name: required; give it a short unique name")
    if name in seen:
        raise ConfigError(f"{where}.name: {name!r} is used twice; names must be unique")
    seen.add(name)
    return name


def _check_keys(
    where: str,
    item: Mapping[str, Any],
    what: str,
    allowed: frozenset[str],
    common: frozenset[str],
    schema: type,
) -> None:
    """Refuse a key this sink type or rule kind does not take, naming the keys it does."""
    fields = {f.name for f in dataclasses.fields(schema)}
    takes = ", ".join(sorted(common | allowed))
    for key in sorted(set(item) - common - allowed):
        problem = "does not apply to" if key in fields else "unknown key for"
        raise ConfigError(f"{where}.{key}: {problem} {what}; it takes {takes}")


def _sink(where: str, item: dict[str, Any], seen: set[str], env: Mapping[str, str]) -> SinkSpec:
    _check_name(where, item, seen)
    if "type" not in item:
        raise ConfigError(f"{where}.type: required; one of {', '.join(SINK_TYPES)}")
    if isinstance(item["type"], str) and item["type"] in _SINK_KEYS:
        what = f'a sink of type = "{item["type"]}"'
        _check_keys(where, item, what, _SINK_KEYS[item["type"]], _SINK_COMMON, SinkSpec)
    spec = build(SinkSpec, item, prefix=f"{where}.", wrap_string=False)
    if spec.type == "webhook":
        if not re.match(r"^https?://[^\s/]+", spec.url):
            raise ConfigError(f"{where}.url: expected an http:// or https:// URL, got {spec.url!r}")
        if spec.secret and spec.secret_env:
            raise ConfigError(f"{where}.secret_env: give secret or secret_env, not both")
        if spec.secret_env:
            secret = env.get(spec.secret_env, "")
            if not secret:
                raise ConfigError(
                    f"{where}.secret_env: environment variable {spec.secret_env} is not set "
                    "or empty; set it to the webhook's shared secret"
                )
            spec = dataclasses.replace(spec, secret=secret)
    if spec.type == "command" and not spec.command:
        raise ConfigError(f'{where}.command: required; e.g. ["/usr/local/bin/page-oncall"]')
    return spec


def _check_patterns(key: str, patterns: Sequence[str]) -> None:
    if not patterns or any(not p for p in patterns):
        raise ConfigError(f"{key}: expected non-empty patterns, got {list(patterns)!r}")


def _rule(
    where: str,
    item: dict[str, Any],
    seen: set[str],
    *,
    settings: AlertSettings,
    sink_names: Sequence[str],
    families: Families,
    tags: Sequence[str],
) -> RuleSpec:
    _check_name(where, item, seen)
    if "kind" not in item:
        raise ConfigError(f"{where}.kind: required; one of {', '.join(RULE_KINDS)}")
    if isinstance(item["kind"], str) and item["kind"] in _RULE_KEYS:
        what = f'a rule of kind = "{item["kind"]}"'
        _check_keys(where, item, what, _RULE_KEYS[item["kind"]], _RULE_COMMON, RuleSpec)
    spec = build(RuleSpec, item, prefix=f"{where}.", wrap_string=True)
    _check_patterns(f"{where}.streams", spec.streams)
    for sink in spec.sinks:
        if sink not in sink_names:
            raise ConfigError(
                f"{where}.sinks: no [[sink]] is named {sink!r}; the sinks are "
                + ", ".join(sink_names)
            )
    if "quiet_seconds" not in item:
        spec = dataclasses.replace(spec, quiet_seconds=settings.quiet_seconds)
    if spec.kind == "threshold":
        if bool(spec.tag) == bool(spec.family):
            raise ConfigError(f"{where}: a threshold rule names one tag or one family")
        if spec.tag and spec.tag not in tags:
            raise unknown_tag_error(f"{where}.tag", spec.tag, tags)
        if spec.family and spec.family not in families.names:
            raise ConfigError(
                f"{where}.family: no family {spec.family!r}; the families are "
                + ", ".join(families.names)
            )
        if "at_least" not in item and "at_most" not in item:
            raise ConfigError(f"{where}: a threshold rule needs at_least, at_most or both")
        if spec.at_least > spec.at_most:
            raise ConfigError(
                f"{where}: at_least={spec.at_least} and at_most={spec.at_most} can never both hold"
            )
    elif spec.kind == "change":
        _check_patterns(f"{where}.to", spec.to)
        names = families.names if spec.of == "family" else tuple(tags)
        for pattern in spec.to:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise ConfigError(
                    f"{where}.to: {pattern!r} matches no {spec.of}; the "
                    f"{'families' if spec.of == 'family' else 'tags'} are " + ", ".join(names)
                )
    elif spec.kind == "event":
        _check_patterns(f"{where}.events", spec.events)
        for pattern in spec.events:
            if not any(fnmatch.fnmatchcase(kind, pattern) for kind in EVENT_KINDS):
                raise ConfigError(
                    f"{where}.events: {pattern!r} matches no event kind; the kinds are "
                    + ", ".join(EVENT_KINDS)
                )
    return spec


def rules_from_toml(
    data: Mapping[str, Any],
    *,
    tags: Sequence[str] = MSD_TAGS,
    env: Mapping[str, str] | None = None,
) -> Rules:
    """Check a parsed rules file and build :class:`Rules`.

    Parameters
    ----------
    data : mapping
        The parsed TOML (``[alerts]``, ``[[sink]]``, ``[[rule]]``, ``[families]``).
    tags : sequence of str
        The model's tags (tag names in rules and families must be among them).
    env : mapping or None
        Where ``secret_env`` names are looked up (default ``os.environ``).

    Raises
    ------
    config.ConfigError
        One line naming the key: unknown sections or keys, a key that does not
        apply to the sink's type or the rule's kind, wrong types, values out of
        range, unknown tags, families, sinks or event kinds, missing secrets.
    """
    known = ("alerts", "sink", "rule", "families")
    for unknown in sorted(set(data) - set(known)):
        raise ConfigError(f"{unknown}: unknown section; the sections are " + ", ".join(known))
    alerts = data.get("alerts", {})
    if not isinstance(alerts, dict):
        raise ConfigError(f"alerts: expected a [section], got {alerts!r}")
    settings = build(AlertSettings, alerts, prefix="alerts.")
    families = DEFAULT_FAMILIES
    if "families" in data:
        families = families_from_toml(data["families"], tags=tags)
    env = os.environ if env is None else env
    seen: set[str] = set()
    sinks = tuple(_sink(where, item, seen, env) for where, item in _table_list(data, "sink"))
    if not sinks:
        raise ConfigError(
            'sink: no [[sink]]; add one, e.g. [[sink]] name = "console" type = "stdout"'
        )
    sink_names = tuple(sink.name for sink in sinks)
    seen = set()
    rules = tuple(
        _rule(
            where,
            item,
            seen,
            settings=settings,
            sink_names=sink_names,
            families=families,
            tags=tags,
        )
        for where, item in _table_list(data, "rule")
    )
    if not rules:
        raise ConfigError("rule: no [[rule]]; there is nothing to alert on")
    return Rules(settings=settings, sinks=sinks, rules=rules, families=families)


def load_rules(
    path: str | os.PathLike[str],
    *,
    tags: Sequence[str] = MSD_TAGS,
    env: Mapping[str, str] | None = None,
) -> Rules:
    """Read and check a rules file (:func:`rules_from_toml`); errors name ``path``'s keys."""
    return rules_from_toml(read_toml(path), tags=tags, env=env)


# ---------------------------------------------------------------------------
# Alerts
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Alert:
    """One thing to tell: a rule fired or resolved on a stream, or an event matched.

    Attributes
    ----------
    rule : str
        The rule's name.
    kind : str
        The rule's kind (:data:`RULE_KINDS`).
    status : str
        ``"firing"``, ``"resolved"`` (the condition ended) or ``"event"``.
    stream : str
    time : float
        Unix time it happened (the ``now`` the engine was given, or the event's time).
    at_s : float or None
        Audio seconds of the stream where it happened, where known.
    text : str
        One human-readable line (what chat webhooks display).
    details : dict
        Kind-specific, JSON-serialisable fields (docs/ALERTS.md).
    """

    rule: str
    kind: str
    status: str
    stream: str
    time: float
    at_s: float | None
    text: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON body every sink delivers (``version`` :data:`ALERT_VERSION`)."""
        return {
            "version": ALERT_VERSION,
            "text": self.text,
            "status": self.status,
            "rule": self.rule,
            "kind": self.kind,
            "stream": self.stream,
            "time": self.time,
            "at_s": self.at_s,
            "details": self.details,
        }


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def _number(event: Mapping[str, Any], key: str) -> float | None:
    value = event.get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _quiet_before_event(event: Mapping[str, Any]) -> float | None:
    """Seconds the audio was quiet before a ``silence_start`` (its ``silence_seconds``)."""
    at_s, since_s = _number(event, "at_s"), _number(event, "silence_since_s")
    return max(0.0, at_s - since_s) if at_s is not None and since_s is not None else None


def _event_text(kind: str, event: Mapping[str, Any]) -> str:
    """What an ``event`` rule's alert says about ``event``, for a person reading a chat;
    the kind alone where the fields it needs are missing."""
    text = kind.replace("_", " ")
    if kind == "silence_start":
        text = "dead air"
        if (quiet_s := _quiet_before_event(event)) is not None:
            text += f": quiet for {_fmt_s(quiet_s)}"
        if (level := _number(event, "level_dbfs")) is not None:
            text += f" (at most {level:.0f} dBFS)"
    elif kind == "silence_end" and (quiet_s := _number(event, "duration_s")) is not None:
        text = f"audio back after {_fmt_s(quiet_s)} of dead air"
    elif kind == "content_change" and event.get("content"):
        text = f"content {event.get('previous', '?')} -> {event['content']}"
    elif kind == "now_playing" and event.get("title"):
        text = f"now playing {event['title']!r}"
    elif kind == "source_down":
        text = "source down" + (f": {event['reason']}" if event.get("reason") else "")
    elif kind == "source_up" and (outage_s := _number(event, "outage_s")) is not None:
        text = f"source back after {_fmt_s(outage_s)}"
    return text


# ---------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Held:
    """A condition's state on one stream: since when it holds (None: not), and whether it fired."""

    since: float | None = None
    firing: bool = False
    delivered: bool = False
    value: Any = None


@dataclasses.dataclass
class _Dominant:
    current: str | None = None
    candidate: str | None = None
    since_s: float = 0.0


@dataclasses.dataclass
class _Stream:
    last_seen: float
    last_end_s: float = -math.inf
    last_seq: int = -1


class AlertEngine:
    """Turns updates, events and the passing of time into :class:`Alert` objects.

    Parameters
    ----------
    rules : Rules
    start_time : float
        Unix time the engine starts watching: a ``missing`` rule's stream named
        without wildcards that never sends an update is missing ``for_seconds``
        after this.

    Attributes
    ----------
    suppressed : collections.Counter
        Alerts held back by a quiet period, by rule name.

    Notes
    -----
    Not thread-safe: feed it from one thread.  Every method returns the alerts
    to deliver now, possibly none.
    """

    def __init__(self, rules: Rules, *, start_time: float) -> None:
        self.rules = rules
        self.families = rules.families
        self.start_time = float(start_time)
        self.suppressed: Counter[str] = Counter()
        self._streams: dict[str, _Stream] = {}
        self._held: dict[tuple[str, str], _Held] = {}
        self._dominant: dict[tuple[str, str], _Dominant] = {}
        self._last_delivered: dict[tuple[str, ...], float] = {}
        self._silent_since: dict[str, float] = {}  # wall time of silence_start
        self._quiet_before: dict[str, float] = {}  # seconds quiet before silence_start

    # -- feeding ------------------------------------------------------------

    @staticmethod
    def _watches(rule: RuleSpec, stream: str) -> bool:
        return any(fnmatch.fnmatchcase(stream, pattern) for pattern in rule.streams)

    def on_update(self, update: TagUpdate, *, now: float) -> list[Alert]:
        """Feed one tag update received at Unix time ``now``."""
        alerts: list[Alert] = []
        stream = update.stream
        state = self._streams.get(stream)
        restarted = state is not None and (
            update.seq <= state.last_seq or update.end_s < state.last_end_s
        )
        if state is None:
            state = self._streams[stream] = _Stream(last_seen=now)
        if restarted:  # the stream started over, and its audio time with it
            for rule in self.rules.rules:
                key = (rule.name, stream)
                held = self._held.get(key)
                if rule.kind == "threshold" and held is not None and not held.firing:
                    del self._held[key]  # a condition not yet fired starts its clock again
                elif rule.kind == "change" and key in self._dominant:
                    self._dominant[key].candidate = None  # the dominant stays the reference
        state.last_seen, state.last_end_s, state.last_seq = now, update.end_s, update.seq
        for rule in self.rules.rules:
            if not self._watches(rule, stream):
                continue
            if rule.kind == "threshold":
                alerts.extend(self._threshold(rule, update, now))
            elif rule.kind == "change":
                alerts.extend(self._change(rule, update, now))
            elif rule.kind == "missing":
                alerts.extend(self._back(rule, stream, now, at_s=update.end_s))
            elif rule.kind == "behind":
                alerts.extend(self._behind(rule, update, now))
        return alerts

    def on_event(self, event: Mapping[str, Any], *, now: float) -> list[Alert]:
        """Feed one event (issue 13's ``{"stream", "event", "time", "at_s", ...}``).

        ``silence_start`` / ``silence_end`` also drive ``silence`` rules;
        ``time`` defaults to ``now`` when the event lacks it.
        """
        stream, kind = str(event.get("stream", "")), str(event.get("event", ""))
        when = float(event.get("time", now))
        at_s = _number(event, "at_s")
        alerts: list[Alert] = []
        if kind == "silence_start":
            self._silent_since.setdefault(stream, when)
            self._quiet_before.setdefault(stream, _quiet_before_event(event) or 0.0)
        elif kind == "silence_end":
            self._silent_since.pop(stream, None)
            self._quiet_before.pop(stream, None)
        for rule in self.rules.rules:
            if not self._watches(rule, stream):
                continue
            if rule.kind == "event" and any(
                fnmatch.fnmatchcase(kind, pattern) for pattern in rule.events
            ):
                text = f"{stream}: {_event_text(kind, event)}"
                extra = {k: v for k, v in event.items() if k not in ("stream", "event", "time")}
                alert = Alert(
                    rule.name,
                    rule.kind,
                    "event",
                    stream,
                    when,
                    at_s,
                    f"{text} (rule {rule.name!r})",
                    {"event": kind, **extra},
                )
                alerts.extend(self._gate(rule, alert, key=(rule.name, stream, kind), now=now))
            elif rule.kind == "silence":
                if kind == "silence_start":
                    alerts.extend(self._silence_check(rule, stream, now, at_s=at_s))
                elif kind == "silence_end":
                    held = self._held.pop((rule.name, stream), None)
                    if held is not None and held.firing:
                        back = f"{stream}: audio is back"
                        if (quiet_s := _number(event, "duration_s")) is not None:
                            back += f" after {_fmt_s(quiet_s)} of dead air"
                        alerts.extend(self._resolve(rule, stream, held, now, at_s=at_s, text=back))
        return alerts

    def tick(self, now: float) -> list[Alert]:
        """Check the rules that fire on time passing (``missing``, ``silence``) at ``now``."""
        alerts: list[Alert] = []
        for rule in self.rules.rules:
            if rule.kind == "missing":
                for stream in self._candidates(rule):
                    alerts.extend(self._missing_check(rule, stream, now))
            elif rule.kind == "silence":
                for stream in list(self._silent_since):
                    if self._watches(rule, stream):
                        alerts.extend(self._silence_check(rule, stream, now, at_s=None))
        return alerts

    # -- rule kinds -----------------------------------------------------------

    def _score(self, rule: RuleSpec, update: TagUpdate) -> float:
        values = update.smoothed if rule.score == "smoothed" else update.probabilities
        if rule.tag:
            try:
                return float(values[update.tags.index(rule.tag)])
            except ValueError:
                return 0.0
        scores = self.families.score_map(values, update.tags)
        return scores.get(rule.family, 0.0)

    def _threshold(self, rule: RuleSpec, update: TagUpdate, now: float) -> list[Alert]:
        key = (rule.name, update.stream)
        held = self._held.setdefault(key, _Held())
        score = self._score(rule, update)
        holds = rule.at_least <= score <= rule.at_most
        what = rule.tag or rule.family
        if not holds:
            self._held.pop(key, None)
            if held.firing:
                return self._resolve(
                    rule,
                    update.stream,
                    held,
                    now,
                    at_s=update.end_s,
                    text=f"{update.stream}: {what} back to {score:.2f}",
                    details={"score": round(score, 4)},
                )
            return []
        if held.since is None:
            held.since = update.end_s
        if held.firing or update.end_s - held.since < rule.for_seconds:
            return []
        held.firing = True
        bound = (
            f">= {rule.at_least:g}"
            if rule.at_most >= 1.0
            else f"<= {rule.at_most:g}"
            if rule.at_least <= 0.0
            else f"in [{rule.at_least:g}, {rule.at_most:g}]"
        )
        text = (
            f"{update.stream}: {what} {score:.2f} ({bound} for {_fmt_s(update.end_s - held.since)})"
            f" (rule {rule.name!r})"
        )
        details = {
            "tag" if rule.tag else "family": what,
            "score": round(score, 4),
            "at_least": rule.at_least,
            "at_most": rule.at_most,
            "for_seconds": rule.for_seconds,
            "since_s": held.since,
        }
        alert = Alert(
            rule.name, rule.kind, "firing", update.stream, now, update.end_s, text, details
        )
        delivered = self._gate(rule, alert, key=key, now=now)
        held.delivered = bool(delivered)
        return delivered

    def _behind(self, rule: RuleSpec, update: TagUpdate, now: float) -> list[Alert]:
        """The worker tags ``update.stream`` more than ``behind_seconds`` late, ``for_seconds``
        on the wall clock (it has more streams than it can tag, or a slow model)."""
        key = (rule.name, update.stream)
        behind_s = update.behind_s or 0.0
        details = {"behind_s": round(behind_s, 3), "shed": update.shed}
        if behind_s <= rule.behind_seconds:
            held = self._held.pop(key, None)
            if held is None or not held.firing:
                return []
            text = f"{update.stream}: tagged on time again ({behind_s:.1f} s behind its audio)"
            return self._resolve(
                rule, update.stream, held, now, at_s=update.end_s, text=text, details=details
            )
        held = self._held.setdefault(key, _Held())
        if held.since is None:
            held.since = now
        if held.firing or now - held.since < rule.for_seconds:
            return []
        held.firing = True
        text = (
            f"{update.stream}: tagged {behind_s:.1f} s behind its audio for "
            f"{_fmt_s(now - held.since)}, {update.shed} windows not tagged: the worker has "
            f"more than it can tag (rule {rule.name!r})"
        )
        details |= {"behind_seconds": rule.behind_seconds, "for_seconds": rule.for_seconds}
        alert = Alert(
            rule.name, rule.kind, "firing", update.stream, now, update.end_s, text, details
        )
        delivered = self._gate(rule, alert, key=key, now=now)
        held.delivered = bool(delivered)
        return delivered

    def _dominant_of(self, rule: RuleSpec, update: TagUpdate) -> tuple[str, float] | None:
        values = update.smoothed if rule.score == "smoothed" else update.probabilities
        if rule.of == "family":
            return self.families.dominant(values, update.tags, min_score=rule.at_least)
        best = int(np.argmax(values))
        score = float(values[best])
        return None if score < rule.at_least or score <= 0 else (update.tags[best], score)

    def _change(self, rule: RuleSpec, update: TagUpdate, now: float) -> list[Alert]:
        key = (rule.name, update.stream)
        dom = self._dominant.setdefault(key, _Dominant())
        found = self._dominant_of(rule, update)
        if found is None:
            dom.candidate = None
            return []
        name, score = found
        if name == dom.current:
            dom.candidate = None
            return []
        if name != dom.candidate:
            dom.candidate, dom.since_s = name, update.end_s
        if update.end_s - dom.since_s < rule.for_seconds:
            return []
        previous, dom.current, dom.candidate = dom.current, name, None
        if previous is None:  # the first dominant seen is where the stream is, not a change
            return []
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in rule.to):
            return []
        text = f"{update.stream}: {previous} -> {name} {score:.2f} (rule {rule.name!r})"
        details = {
            "of": rule.of,
            "from": previous,
            "to": name,
            "score": round(score, 4),
            "since_s": dom.since_s,
        }
        alert = Alert(
            rule.name, rule.kind, "firing", update.stream, now, update.end_s, text, details
        )
        return self._gate(rule, alert, key=key, now=now)

    def _candidates(self, rule: RuleSpec) -> list[str]:
        streams = {s for s in self._streams if self._watches(rule, s)}
        streams.update(p for p in rule.streams if not _WILDCARD.search(p))
        return sorted(streams)

    def _missing_check(self, rule: RuleSpec, stream: str, now: float) -> list[Alert]:
        key = (rule.name, stream)
        held = self._held.setdefault(key, _Held())
        if held.firing:
            return []
        state = self._streams.get(stream)
        last = state.last_seen if state is not None else self.start_time
        silent_for = now - last
        if silent_for < rule.for_seconds:
            return []
        held.firing, held.since = True, last
        if state is None:
            text = f"{stream}: no update since start-up {_fmt_s(silent_for)} ago"
        else:
            text = f"{stream}: no update for {_fmt_s(silent_for)}"
        details = {
            "for_seconds": rule.for_seconds,
            "last_update_time": last if state else None,
            "seen": state is not None,
        }
        alert = Alert(
            rule.name,
            rule.kind,
            "firing",
            stream,
            now,
            state.last_end_s if state is not None else None,
            f"{text} (rule {rule.name!r})",
            details,
        )
        delivered = self._gate(rule, alert, key=key, now=now)
        held.delivered = bool(delivered)
        return delivered

    def _back(self, rule: RuleSpec, stream: str, now: float, *, at_s: float) -> list[Alert]:
        held = self._held.pop((rule.name, stream), None)
        if held is None or not held.firing:
            return []
        return self._resolve(
            rule,
            stream,
            held,
            now,
            at_s=at_s,
            text=f"{stream}: updates are back after {_fmt_s(now - (held.since or now))}",
        )

    def _silence_check(
        self, rule: RuleSpec, stream: str, now: float, *, at_s: float | None
    ) -> list[Alert]:
        since = self._silent_since.get(stream)
        if since is None:
            return []
        key = (rule.name, stream)
        held = self._held.setdefault(key, _Held(since=since))
        if held.firing or now - since < rule.for_seconds:
            return []
        held.firing = True
        # The audio went quiet silence_seconds before the worker could call it dead air.
        quiet_s = now - since + self._quiet_before.get(stream, 0.0)
        text = f"{stream}: dead air for {_fmt_s(quiet_s)} (rule {rule.name!r})"
        alert = Alert(
            rule.name,
            rule.kind,
            "firing",
            stream,
            now,
            at_s,
            text,
            {"since": since, "for_seconds": rule.for_seconds, "quiet_s": round(quiet_s, 3)},
        )
        delivered = self._gate(rule, alert, key=key, now=now)
        held.delivered = bool(delivered)
        return delivered

    # -- quiet periods ---------------------------------------------------------

    def _gate(
        self, rule: RuleSpec, alert: Alert, *, key: tuple[str, ...], now: float
    ) -> list[Alert]:
        """Deliver ``alert`` unless the rule delivered for ``key`` within its quiet period."""
        last = self._last_delivered.get(key)
        if last is not None and now - last < rule.quiet_seconds:
            self.suppressed[rule.name] += 1
            logger.info(
                "alert suppressed rule=%s stream=%s quiet_seconds=%g",
                rule.name,
                alert.stream,
                rule.quiet_seconds,
            )
            return []
        self._last_delivered[key] = now
        return [alert]

    def _resolve(
        self,
        rule: RuleSpec,
        stream: str,
        held: _Held,
        now: float,
        *,
        at_s: float | None,
        text: str,
        details: dict[str, Any] | None = None,
    ) -> list[Alert]:
        """A resolution goes out only when its firing did and the rule asks for it."""
        if not (rule.resolved and held.delivered):
            return []
        return [
            Alert(
                rule.name,
                rule.kind,
                "resolved",
                stream,
                now,
                at_s,
                f"{text} (rule {rule.name!r})",
                dict(details or {}),
            )
        ]
