"""deploy/prometheus/ and deploy/grafana/: checked and unit-tested by promtool.

The scrape config and alert rules, and the Grafana dashboard's queries as PromQL.
promtool comes with Debian's ``prometheus`` package (``apt-get install prometheus``);
these tests skip with that reason where it is absent.  Grafana is not in Debian: the
dashboard's structure is checked here and its metric names against a real worker's
``/metrics`` in ``tests/test_stream_metrics.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed: apt-get install prometheus (scripts/install.sh --dev)",
)
DASHBOARD = ROOT / "deploy" / "grafana" / "tagstream.json"


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
    assert "SUCCESS: 7 rules found" in rules.stdout


@needs_promtool
def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    """alerts.test.yml: worker down, streamer up, behind, stream behind, dropping, stream
    missing, dead air."""
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def used_names(text: str) -> set[str]:
    return set(re.findall(r"\b(tagstream_\w+)", text))


def dashboard_queries() -> list[str]:
    """The PromQL of deploy/grafana/tagstream.json: panel targets and query variables."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def test_every_metric_of_the_rules_and_the_dashboard_is_documented() -> None:
    """docs/ALERTS.md names what the rules and the dashboard use (tests/test_stream_metrics.py
    checks the same names against a real worker's /metrics)."""
    docs = (ROOT / "docs" / "ALERTS.md").read_text()
    used = used_names((PROMETHEUS / "alerts.yml").read_text())
    used |= set().union(*map(used_names, dashboard_queries()))
    for name in sorted(used):
        family = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert f"`{name}" in docs or f"`{family}" in docs, f"{name} is not in docs/ALERTS.md"


def test_the_dashboard_is_grafana_json_with_its_variables() -> None:
    """What can be checked without Grafana (not in Debian): structure and variables."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["stream"]["type"] == "query" and variables["stream"]["multi"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), ids
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert (
                "$stream" in target["expr"]
                or "tagstream_worker" in target["expr"]
                or (target["expr"].startswith("up{"))
            ), target["expr"]
    types = {panel["type"] for panel in dashboard["panels"]}
    assert {"state-timeline", "timeseries", "bargauge", "stat"} <= types


@needs_promtool
def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, its variables filled in, as a recording rule for promtool check rules."""
    filled = {"$__rate_interval": "1m", "$instance": ".*", "$stream": ".*"}
    rules = []
    for i, query in enumerate(dashboard_queries()):
        if query.startswith("label_values("):  # Grafana's, not PromQL: check its selector
            query = re.fullmatch(r"label_values\((.*), *\w+\)", query, flags=re.S)[1]  # type: ignore[index]
        for variable, value in filled.items():
            query = query.replace(variable, value)
        assert "$" not in query, query
        rules.append({"record": f"dashboard:query_{i}", "expr": query})
    path = tmp_path / "dashboard.rules.json"  # JSON is YAML
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
