"""The shipped Grafana dashboard and Prometheus config must match the exported metrics."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml
from helpers.dockerfile import stages_by_name

from app.metrics import Metrics
from app.settings import Settings

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


# --- upstream defaults and the local model services ----------------------------------------

LOCAL_LLMS = ROOT / "deploy" / "local-llms"
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
# ${VAR}, ${VAR:-default}, ${VAR-default}: what compose substitutes when VAR is unset.
INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?-)([^}]*))?\}")
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s,;'\"]+", re.IGNORECASE)
MODEL_SERVICES = {"edge-llm": "EDGE", "cloud-llm": "CLOUD"}


def common_sh(name: str) -> str:
    """A value assigned in deploy/local-llms/common.sh (``${X:-default}`` gives the default)."""
    text = (LOCAL_LLMS / "common.sh").read_text()
    match = re.search(rf'^{name}="([^"]+)"', text, re.MULTILINE)
    assert match is not None, f"{name} not in common.sh"
    default = re.fullmatch(r"\$\{\w+:-([^}]*)\}", match.group(1))
    return default.group(1) if default else match.group(1)


def unset_value(value: object) -> str:
    """A compose environment value as the container gets it with no variable set anywhere."""
    return INTERPOLATION.sub(lambda m: m.group(3) or "", str(value))


def default_url_hosts(compose: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(service, variable, host) of every URL in an environment default."""
    found = []
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for variable, value in environment.items():
            for url in URL.findall(unset_value(value)):
                found.append((name, variable, urlsplit(url).hostname or ""))
    return found


def foreign_defaults(compose: dict[str, Any]) -> list[str]:
    """Default URLs whose host is neither a service of this file nor loopback."""
    allowed = set(compose["services"]) | LOOPBACK
    return [f"{s}.{v}: {h}" for s, v, h in default_url_hosts(compose) if h not in allowed]


def test_no_default_sends_anything_outside_the_compose_network() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    hosts = default_url_hosts(compose)
    assert {("router", "DARS_EDGE_BASE_URL"), ("router", "DARS_CLOUD_BASE_URL")} <= {
        (s, v) for s, v, _ in hosts
    }
    assert foreign_defaults(compose) == []


def test_a_third_party_default_is_caught() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    router_env = compose["services"]["router"]["environment"]
    router_env["DARS_CLOUD_BASE_URL"] = "${DARS_CLOUD_BASE_URL:-https://api.openai.com/v1}"
    router_env["DARS_SHADOW_JUDGE_BASE_URL"] = "http://user:pw@[2001:db8::1]:8080/v1"
    assert foreign_defaults(compose) == [
        "router.DARS_CLOUD_BASE_URL: api.openai.com",
        "router.DARS_SHADOW_JUDGE_BASE_URL: 2001:db8::1",
    ]
    # Set by the user (.env or the shell), the URL is theirs: only defaults are checked.
    assert unset_value("${DARS_CLOUD_BASE_URL}") == ""


def test_router_variables_are_real_settings() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    variables = set(compose["services"]["router"]["environment"])
    settings = {f"DARS_{name.upper()}" for name in Settings.model_fields}
    assert variables and variables <= settings, sorted(variables - settings)
    # With nothing set, the defaults make a valid configuration (distinct model names, ...).
    values = {
        key.removeprefix("DARS_").lower(): unset_value(value)
        for key, value in compose["services"]["router"]["environment"].items()
    }
    Settings(_env_file=None, **values)


def test_local_model_services_are_built_health_checked_and_awaited() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    router = compose["services"]["router"]
    for name in MODEL_SERVICES:
        service = compose["services"][name]
        assert service["build"]["target"] == "local-llm"
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and "/v1/models" in test[-1], test
        assert router["depends_on"][name] == {"condition": "service_healthy"}
        assert "ports" not in service, "the models stay on the compose network"


def test_router_defaults_point_at_the_local_model_services() -> None:
    """The router's default upstreams are the two services, by the names they serve, with the
    stand-in prices of common.sh (what `dars-router serve` uses for the same models)."""
    compose = yaml.safe_load(COMPOSE.read_text())
    router = {k: unset_value(v) for k, v in compose["services"]["router"]["environment"].items()}
    port = image_env()["LLM_PORT"]
    for name, role in MODEL_SERVICES.items():
        environment = compose["services"][name]["environment"]
        assert router[f"DARS_{role}_BASE_URL"] == f"http://{name}:{port}/v1"
        assert router[f"DARS_{role}_MODEL"] == environment["LLM_ALIAS"] == common_sh(f"{role}_NAME")
        price_in, price_out = common_sh(f"{role}_PRICE_IN"), common_sh(f"{role}_PRICE_OUT")
        assert float(router[f"DARS_{role}_PRICE_INPUT_PER_MTOK"]) == float(price_in)
        assert float(router[f"DARS_{role}_PRICE_OUTPUT_PER_MTOK"]) == float(price_out)


def image_env() -> dict[str, str]:
    return stages_by_name()["local-llm"].env()


def test_model_services_serve_the_files_the_build_hash_checks() -> None:
    """Each service's LLM_MODEL is a file the image build assembles and checks against the
    sha256 pinned in common.sh, the only place a model hash is written."""
    stages = stages_by_name()
    (run,) = stages["local-llm-build"].all("RUN")
    script, _venv, cache = run.split()
    assert script == "deploy/local-llms/image_build.sh"
    copied = [args.split() for args in stages["local-llm"].all("COPY")]
    model_dir = f"{cache}/models"
    assert ["--from=local-llm-build", model_dir, model_dir] in copied
    compose = yaml.safe_load(COMPOSE.read_text())
    files = {image_env()["LLM_MODEL"]}
    for name, role in MODEL_SERVICES.items():
        expected = common_sh(f"{role}_FILE").replace("$MODEL_DIR", model_dir)
        assert compose["services"][name]["environment"]["LLM_MODEL"] == expected
        files.add(expected)
    assert len(files) == 2, "the image's default model is one of the two"
    pinned = {common_sh("EDGE_SHA256"), common_sh("CLOUD_SHA256")}
    assert all(re.fullmatch(r"[0-9a-f]{64}", sha) for sha in pinned)
    sources = [ROOT / "Dockerfile", COMPOSE, *LOCAL_LLMS.glob("*.sh")]
    written = {sha for path in sources for sha in re.findall(r"\b[0-9a-f]{64}\b", path.read_text())}
    assert written == pinned, "a model hash other than common.sh's pins"
    install = (LOCAL_LLMS / "install_models.sh").read_text()
    for role in MODEL_SERVICES.values():
        assert re.search(rf'^ *install_checked .*"\${role}_FILE" "\${role}_SHA256"$', install, re.M)
