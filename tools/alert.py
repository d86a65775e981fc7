"""Tell people: deliver what alert rules select from tag updates to webhooks, commands, stdout.

    python -m tools.alert --rules rules.toml [--endpoint E ...] [--check]
                          [--config PATH] [--traceback]
    python -m tools.alert --print-families

The rules file (docs/ALERTS.md; ``deploy/alerts.example.toml``) is checked
before anything connects: an unknown key, a wrong type or an unknown tag,
family, sink or event kind is one line naming the key and exit status 2.
``--check`` stops there (exit 0 for a good file).  Endpoints and transport
security come from the settings file's ``[subscribe]`` and ``[security]``.

The rule engine (:mod:`monitor.alerts`) and the sinks (:mod:`monitor.sinks`)
are libraries; this command subscribes, feeds the engine with each update and
the wall clock, and hands what fires to the sinks.  Ctrl-C and SIGTERM stop it
(exit 0) after at most about a second of draining the sinks' queues.

Exit status (README "Exit status"): 0 stopped, 1 unexpected error, 2 usage,
settings or rules-file error, 4 an endpoint that cannot be subscribed to.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from monitor import connect
from monitor.alerts import AlertEngine, Rules, load_rules
from monitor.families import DEFAULT_FAMILIES
from monitor.sinks import SinkSet
from protocol import Event
from tagstream import cli
from tools import add_subscription_arguments

if TYPE_CHECKING:
    from protocol.security import SecuritySettings

__all__ = ["build_parser", "main", "run", "run_alerts"]

logger = logging.getLogger(__name__)

#: Seconds a stopped command waits for the sinks to deliver what is queued.
DRAIN_SECONDS = 0.8


def run_alerts(
    rules: Rules,
    endpoints: list[str] | tuple[str, ...],
    *,
    stop: threading.Event,
    stdout: TextIO,
    security: SecuritySettings | None = None,
) -> SinkSet:
    """Subscribe, evaluate ``rules`` on every update and deliver until ``stop`` is set.

    Parameters
    ----------
    rules : Rules
        A checked rules file (:func:`monitor.alerts.load_rules`).
    endpoints : sequence of str
        Worker PUB endpoints.
    stop : threading.Event
        Set to leave (a signal handler sets it).
    stdout : text stream
        Where ``type = "stdout"`` sinks write.
    security : protocol.security.SecuritySettings or None
        CURVE keys for the subscription.

    Returns
    -------
    SinkSet
        The closed sinks, with their delivery counts.

    Raises
    ------
    tagstream.errors.EndpointError
        An endpoint cannot be subscribed to.
    """
    engine = AlertEngine(rules, start_time=time.time())
    sinks = SinkSet.from_rules(rules, stdout=stdout)
    interval = rules.settings.check_interval_seconds
    with connect(endpoints, security=security, events=True) as subscriber:
        sinks.start()
        logger.info(
            "alerting rules=%d sinks=%s endpoints=%s",
            len(rules.rules),
            ",".join(sinks.sinks),
            ",".join(endpoints),
        )
        try:
            next_check = time.monotonic()
            while not stop.is_set():
                message = subscriber.receive_message(timeout_s=min(interval, 0.25))
                now = time.time()
                if isinstance(message, Event):  # dead air, talk, titles, source outages
                    for alert in engine.on_event(message.to_json_dict(), now=now):
                        sinks.submit(alert)
                elif message is not None:
                    for alert in engine.on_update(message, now=now):
                        sinks.submit(alert)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + interval
                    for alert in engine.tick(now):
                        sinks.submit(alert)
        finally:
            sinks.close(timeout_s=DRAIN_SECONDS)
    for name, stats in sinks.stats().items():
        logger.info(
            "sink stopped sink=%s delivered=%d failed=%d dropped=%d retries=%d",
            name, stats.delivered, stats.failed, stats.dropped, stats.retries,
        )  # fmt: skip
    if engine.suppressed:
        logger.info("suppressed by quiet periods %s", dict(engine.suppressed))
    return sinks


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m tools.alert",
        "Deliver alerts selected by rules from tag updates to webhooks, commands or stdout.",
        epilog="The rules file is described in docs/ALERTS.md. Endpoints default to "
        "config.toml [subscribe] endpoints.",
    )
    parser.add_argument("--rules", metavar="PATH", help="rules file (TOML)")
    add_subscription_arguments(parser, streams=False)
    parser.add_argument(
        "--check", action="store_true", help="check the rules file and exit (0: it is good)"
    )
    parser.add_argument(
        "--print-families",
        action="store_true",
        help="print the default tag families as a [families] table and exit",
    )
    return parser


def run(ctx: cli.Context) -> int:
    """The command's body: check the rules, then alert until a signal."""
    args = ctx.args
    if args.print_families:
        ctx.stdout.write(DEFAULT_FAMILIES.to_toml())
        return cli.ExitStatus.OK
    if not args.rules:
        raise cli.usage("--rules PATH is required (see docs/ALERTS.md)")
    cfg = ctx.load_config()
    rules = load_rules(args.rules)
    if args.check:
        ctx.stdout.write(
            f"{args.rules}: {len(rules.rules)} rules, {len(rules.sinks)} sinks, "
            f"{len(rules.families.names)} families: ok\n"
        )
        return cli.ExitStatus.OK
    with ctx.on_stop(lambda: None):  # the loop polls ctx.stop, set by the signal
        run_alerts(
            rules,
            cfg.subscribe.endpoints,
            stop=ctx.stop,
            stdout=ctx.stdout,
            security=cfg.security,
        )
    return cli.ExitStatus.OK


main = cli.command(build_parser, run, long_running=True)


if __name__ == "__main__":
    sys.exit(main())
