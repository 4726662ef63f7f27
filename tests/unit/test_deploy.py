"""The shipped Grafana dashboard and Prometheus config must match the exported metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from app.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "dars-router.json"
METRIC_NAME = re.compile(r"\bdars_[a-z_]+\b")
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_info", "_created")


def exported_sample_names() -> set[str]:
    """Every sample name the service can expose, e.g. dars_requests_total, dars_x_bucket."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES)
    return names


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used, "dashboard has no dars_* queries"
    unknown = used - exported_sample_names()
    assert not unknown, f"dashboard queries metrics the service does not export: {sorted(unknown)}"


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} <= uids


def test_prometheus_scrapes_the_router_service_port() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["router:8000"]
    assert "router" in compose["services"]
    assert "8000:8000" in compose["services"]["router"]["ports"]
