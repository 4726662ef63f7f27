"""The shipped Grafana dashboard and Prometheus config must match the exported metrics."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from app.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "dars-router.json"
COMPOSE = ROOT / "docker-compose.yml"
# The Compose specification's JSON schema, vendored (source and licence in SOURCE.md there).
COMPOSE_SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec" / "compose-spec.json"
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


def compose_errors(compose: dict[str, Any]) -> list[str]:
    """Violations of the Compose specification's schema, as ``path: message`` lines."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in sorted(validator.iter_errors(compose), key=lambda e: list(map(str, e.path)))
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert compose_errors(compose) == []


def test_compose_schema_catches_a_misspelt_key() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    broken = copy.deepcopy(compose)
    broken["services"]["router"]["enviroment"] = {"DARS_PORT": "8000"}
    assert any("enviroment" in error for error in compose_errors(broken))


def test_vendored_compose_schema_is_the_documented_file() -> None:
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert digest in (COMPOSE_SCHEMA.parent / "SOURCE.md").read_text()
    assert (COMPOSE_SCHEMA.parent / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_compose_mounts_what_prometheus_and_grafana_read() -> None:
    """Every bind-mounted host path exists, and Prometheus gets every rule file it loads."""
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts: dict[str, str] = {}
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            host, container = volume.split(":")[:2]
            if host.startswith("./"):
                assert (ROOT / host).exists(), host
                mounts[container] = host
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert config["rule_files"], "no alert rules loaded"
    for rule_file in config["rule_files"]:
        host = mounts.get(f"/etc/prometheus/{rule_file}")
        assert host is not None, f"{rule_file} is not mounted into the Prometheus container"
        assert (ROOT / host).resolve() == (ROOT / "deploy/prometheus" / rule_file).resolve()
