"""``deploy/prometheus``: the alert rules load, pass their unit tests and use exported metrics.

``promtool`` comes from Debian's ``prometheus`` package (``.ci/run`` installs it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers.binaries import require_binary

from app.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
METRIC_NAME = re.compile(r"\bdars_[a-z_]+\b")
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_info", "_created")
# The alerts the README's "Deploy" section explains, one per failure it names.
EXPECTED_ALERTS = {
    "DarsUpstreamErrorRateHigh",
    "DarsRequestsFailing",
    "DarsCloudShareOffTarget",
    "DarsRedisDown",
    "DarsCacheErrors",
    "DarsDecisionLatencyHigh",
    "DarsNoTraffic",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool", "apt-get install prometheus")
    return subprocess.run(
        [binary, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts.test.yml"),
        ("check", "config", "prometheus.yml"),
    ],
    ids=["check-rules", "test-rules", "check-config"],
)
def test_promtool(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_is_unit_tested_and_documented() -> None:
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts == EXPECTED_ALERTS
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert firing == alerts, "every alert needs a test where it fires"
    readme = (ROOT / "README.md").read_text()
    assert [a for a in sorted(alerts) if f"`{a}`" not in readme] == []
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert {"summary", "description"} <= rule["annotations"].keys()


def test_alerts_query_only_exported_metrics() -> None:
    exported: set[str] = set()
    for family in Metrics().registry.collect():
        exported.update([family.name, *(family.name + s for s in SUFFIXES)])
    used = {name for rule in rules() for name in METRIC_NAME.findall(rule["expr"])}
    recorded = {r["record"] for r in rules() if "record" in r}
    assert used, "no dars_* metric in the alert rules"
    assert used - exported == set(), "alerts use metrics the service does not export"
    assert {"dars:cloud_share_target"} == recorded
    for rule in rules():
        if "alert" in rule and "dars_cloud_share" in rule["expr"]:
            assert "dars:cloud_share_target" in rule["expr"]
