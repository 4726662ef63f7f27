"""Every Grafana panel's PromQL, run by a real Prometheus against a real router.

A real ``prometheus`` (Debian's package) scrapes a router under uvicorn on loopback every
second, with the project's alert rules loaded (the cloud-share target is a recording rule).
The router serves traffic of every kind: edge, cloud, forced, fallback, upstream errors,
cache hits and misses (Redis), streams, and router reloads accepted and rejected. Then each
target of each panel in ``deploy/grafana/dashboards/dars-router.json`` goes through
``/api/v1/query`` with Grafana's variables substituted: a parse error or an empty result fails.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from helpers.binaries import require_binary
from helpers.onnx_routers import make_linear_router
from helpers.processes import free_port, log_tail, poll, stop_process, wait_until
from helpers.redis_server import RedisServer
from integration.upstream_server import (
    CLOUD_MODEL,
    EDGE_MODEL,
    FakeUpstream,
    router_settings,
    running_router,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "dars-router.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
TOKEN = "admin-secret"
SCRAPE_S = 1
# Grafana's variables, as Grafana would set them for a 1 s scrape interval.
VARIABLES = {
    "$__rate_interval": "20s",
    "$__interval": "5s",
    "$__range": "1m",
    "${__rate_interval}": "20s",
    "${__interval}": "5s",
}


def panel_queries() -> list[tuple[str, str]]:
    """``(panel title / refId, expression)`` of every target of every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    return expr


@pytest.fixture(scope="module")
def prometheus_for(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``prometheus_for(target)`` starts a Prometheus scraping ``target``; stopped at the end."""
    binary = require_binary("prometheus", "apt-get install prometheus")
    started: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        workdir = tmp_path_factory.mktemp("prometheus")
        every = f"{SCRAPE_S}s"
        config = {
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "dars-router", "static_configs": [{"targets": [target]}]}
            ],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        port = free_port()
        log = workdir / "prometheus.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(f"{url}/-/ready", timeout_s=30, process=process)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{log_tail(log)}") from exc
        return url

    yield start
    for process in started:
        stop_process(process)


def _traffic(client: httpx.Client, edge: FakeUpstream, cloud: FakeUpstream, round_: int) -> None:
    """One round of every kind of request; asserts the statuses the router answers."""

    def chat(model: str, text: str, *, stream: bool = False) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
        return client.post("/v1/chat/completions", json=body)

    assert chat("router", "what is the capital of France?").headers["x-dars-route"] == "edge"
    assert chat("router", "what is the capital of France?").status_code == 200  # cache hit
    assert chat("router-0.0", f"prove the theorem, round {round_}").headers["x-dars-route"] == (
        "cloud"
    )
    assert chat(EDGE_MODEL, "forced edge").status_code == 200
    assert chat(CLOUD_MODEL, "forced cloud").status_code == 200
    assert chat("router", f"streamed answer {round_}", stream=True).status_code == 200
    assert chat("router-0.0", f"streamed cloud {round_}", stream=True).status_code == 200
    edge.fail("500", 2)  # retried once, then failed over to the cloud
    reply = chat("router", f"edge is down {round_}")
    assert reply.headers["x-dars-reason"] == "fallback", reply.text
    edge.fail("429", 2)
    cloud.fail("500", 2)
    assert chat("router", f"both fail {round_}").status_code >= 500
    assert chat("no-such-model", "unknown").status_code == 404
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert client.post("/admin/router/reload", json={}, headers=auth).status_code == 200
    rejected = client.post("/admin/router/reload", json={"path": "/nonexistent.onnx"}, headers=auth)
    assert rejected.status_code == 400


def test_every_panel_query_returns_data(
    prometheus_for: Any,
    redis_server: RedisServer,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    tmp_path_factory: pytest.TempPathFactory,
    encoder: SentenceTransformer,
) -> None:
    edge, cloud = upstreams
    router = make_linear_router(
        tmp_path_factory.mktemp("router") / "router.onnx", bias=0.0, default_threshold=0.7
    )
    settings = router_settings(
        router, edge, cloud, admin_token=TOKEN, redis_url=redis_server.url, upstream_retries=1
    )
    started = time.monotonic()
    with (
        running_router(settings, encoder) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        prometheus = prometheus_for(f"127.0.0.1:{server.port}")
        api = httpx.Client(base_url=f"{prometheus}/api/v1", timeout=10)

        def scrapes() -> float:
            """Successful scrapes of the router in the last minute."""
            query = 'sum_over_time(up{job="dars-router"}[1m])'
            result = api.get("/query", params={"query": query}).json()["data"]["result"]
            return float(result[0]["value"][1]) if result else 0.0

        assert poll(lambda: scrapes() >= 2, timeout_s=15), "Prometheus never scraped the router"
        for round_ in range(2):  # two rounds a few scrapes apart: rates over a real increase
            _traffic(client, edge, cloud, round_)
            target = scrapes() + 3
            assert poll(lambda: scrapes() >= target, timeout_s=15), "scrapes stopped"  # noqa: B023
        edge.reset()
        cloud.reset()

        failures: list[str] = []
        queries = panel_queries()
        for name, expr in queries:
            reply = api.get("/query", params={"query": substitute(expr)})
            body = reply.json()
            if reply.status_code != 200 or body.get("status") != "success":
                failures.append(f"{name}: {body.get('errorType')}: {body.get('error')}")
            elif not body["data"]["result"]:
                failures.append(f"{name}: empty result for {substitute(expr)}")
        api.close()
    elapsed = time.monotonic() - started
    print(f"\n{len(queries)} panel queries checked against Prometheus in {elapsed:.1f} s")
    assert not failures, "\n".join(failures)


def test_known_series_exist_before_any_event(
    upstreams: tuple[FakeUpstream, FakeUpstream],
    tmp_path_factory: pytest.TempPathFactory,
    encoder: SentenceTransformer,
) -> None:
    """The issue's four metrics (and the rest) are on /metrics at start-up, at 0."""
    edge, cloud = upstreams
    router = make_linear_router(tmp_path_factory.mktemp("fresh") / "router.onnx")
    with running_router(router_settings(router, edge, cloud), encoder) as server:
        text = httpx.get(f"{server.url}/metrics").text
    for line in (
        'dars_fallbacks_total{from_upstream="edge",to_upstream="cloud"} 0.0',
        'dars_router_reloads_total{result="rejected"} 0.0',
        'dars_upstream_errors_total{kind="timeout",upstream="cloud"} 0.0',
        'dars_upstream_retries_total{upstream="edge"} 0.0',
        'dars_cache_requests_total{backend="memory",result="hit"} 0.0',
        'dars_latency_seconds_count{stage="upstream_ttfb"} 0.0',
        f'dars_upstream_model{{model="{EDGE_MODEL}",upstream="edge"}} 1.0',
    ):
        assert line in text, line
