"""deploy/prometheus/: the scrape config and alert rules, checked and unit-tested by promtool.

promtool comes with Debian's ``prometheus`` package (``apt-get install prometheus``);
these tests skip with that reason where it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest

from tagstream.metrics import StreamerMetrics, WorkerMetrics

PROMETHEUS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed: apt-get install prometheus (scripts/install.sh --dev)",
)
#: Per-stream metrics the rules use before any worker exports them (issue 14, docs/ALERTS.md).
FUTURE_METRICS = {"tagstream_stream_last_update_timestamp_seconds", "tagstream_stream_silent"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


@needs_promtool
def test_scrape_config_and_rules_are_valid() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 6 rules found" in rules.stdout


@needs_promtool
def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    """alerts.test.yml: worker down, streamer up, behind, dropping, stream missing, dead air."""
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def exported_names() -> set[str]:
    """Metric names the worker and the streamer export today (their real registries)."""
    worker_stats = SimpleNamespace(
        streams=1, messages=1, windows=1, batches=1, gaps=0, samples_replaced=0, resets=0,
        ended=0, evicted_idle=0, dropped=0, refused=0, rejected={"size": 1},
    )  # fmt: skip
    worker = WorkerMetrics(lambda: worker_stats)
    worker.observe_batch(model_seconds=0.1, latencies_s=[0.2])
    streamer = StreamerMetrics(lambda: SimpleNamespace(sent=1, dropped_send=0, source={}))
    text = generate_latest(worker.registry) + generate_latest(streamer.registry)
    return set(re.findall(r"^(tagstream_\w+)", text.decode(), flags=re.MULTILINE))


def test_rules_use_only_exported_or_documented_metric_names() -> None:
    rules = (PROMETHEUS / "alerts.yml").read_text()
    used = set(re.findall(r"\b(tagstream_\w+)", rules))
    assert "tagstream_worker_latency_seconds_bucket" in used
    assert used - FUTURE_METRICS <= exported_names(), used - FUTURE_METRICS - exported_names()
    docs = (PROMETHEUS.parent.parent / "docs" / "ALERTS.md").read_text()
    for name in FUTURE_METRICS:
        assert f"`{name}" in docs, f"{name} is not documented in docs/ALERTS.md"
