"""``GET /metrics`` after known traffic: every metric family is there and counted exactly.

Traffic (router scores 0.5, threshold 0.7): 2 chat requests to the edge (one repeated text:
a cache hit), 1 streamed to the edge, 1 to the cloud by ``router-0.2``, 1 forced to the cloud,
1 failed over from the edge (500 twice) to the cloud, 1 unknown model (404), and 3 rejected
before the handler runs: malformed JSON (400), a schema error (400) and a body over the limit
(413): 10 chat requests in all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from helpers.onnx_routers import make_linear_router
from integration.upstream_server import (
    CLOUD_MODEL,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    FakeUpstream,
    router_settings,
    running_router,
)
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
EDGE_PRICES, CLOUD_PRICES = (0.1, 0.2), (2.5, 10.0)  # router_settings' USD per million tokens
MAX_BODY = 4096
CHAT_REQUESTS = 10


def cost(prices: tuple[float, float], requests: int) -> float:
    return requests * (PROMPT_TOKENS * prices[0] + COMPLETION_TOKENS * prices[1]) / 1e6


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory, encoder: SentenceTransformer
) -> Iterator[tuple[str, Samples]]:
    router = make_linear_router(
        tmp_path_factory.mktemp("router") / "router.onnx", bias=0.0, default_threshold=0.7
    )
    edge, cloud = FakeUpstream("edge").start(), FakeUpstream("cloud").start()
    try:
        settings = router_settings(router, edge, cloud, max_body_bytes=MAX_BODY)
        with (
            running_router(settings, encoder) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            _traffic(client, edge)
            text = client.get("/metrics").text
    finally:
        edge.stop()
        cloud.stop()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    yield text, samples


def _traffic(client: httpx.Client, edge: FakeUpstream) -> None:
    def chat(model: str, text: str, **extra: object) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
        return client.post("/v1/chat/completions", json=body)

    assert chat("router", "What is 2 + 2?").status_code == 200
    assert chat("router", "What is 2 + 2?").status_code == 200  # cache hit
    streamed = chat("router", "Write a haiku about rain.", stream=True)
    assert streamed.status_code == 200
    assert streamed.text.endswith("data: [DONE]\n\n")
    assert chat("router-0.2", "Explain general relativity.").status_code == 200
    assert chat(CLOUD_MODEL, "anything").status_code == 200
    edge.fail("500", times=2)
    failed_over = chat("router", "Edge is broken now.")
    assert failed_over.headers["x-dars-reason"] == "fallback"
    assert chat("no-such-model", "x").status_code == 404
    json_type = {"content-type": "application/json"}
    malformed = client.post("/v1/chat/completions", content=b"{", headers=json_type)
    assert malformed.status_code == 400
    assert client.post("/v1/chat/completions", json={"model": "router"}).status_code == 400
    assert chat("router", "x" * MAX_BODY).status_code == 413


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_by_route_reason_status(scraped: tuple[str, Samples]) -> None:
    _, samples = scraped
    name = "dars_requests_total"
    assert value(samples, name, route="edge", reason="threshold", status="200") == 3
    assert value(samples, name, route="cloud", reason="threshold", status="200") == 1
    assert value(samples, name, route="cloud", reason="forced", status="200") == 1
    assert value(samples, name, route="cloud", reason="fallback", status="200") == 1
    assert value(samples, name, route="none", reason="none", status="404") == 1


def test_requests_rejected_before_the_handler_are_counted_once(
    scraped: tuple[str, Samples],
) -> None:
    # Regression (issue 7): malformed JSON, schema errors and 413 were not counted.
    _, samples = scraped
    name = "dars_requests_total"
    assert value(samples, name, route="none", reason="none", status="400") == 2
    assert value(samples, name, route="none", reason="none", status="413") == 1
    total = sum(count for (sample, _), count in samples.items() if sample == name)
    assert total == CHAT_REQUESTS


def test_decisions_scores_threshold_and_cloud_share(scraped: tuple[str, Samples]) -> None:
    _, samples = scraped
    assert value(samples, "dars_decisions_total", route="edge", reason="threshold") == 4
    assert value(samples, "dars_decisions_total", route="cloud", reason="threshold") == 1
    assert value(samples, "dars_decisions_total", route="cloud", reason="forced") == 1
    assert value(samples, "dars_router_score_count") == 5
    assert value(samples, "dars_threshold") == 0.7
    assert value(samples, "dars_cloud_share") == pytest.approx(1 / 5)


def test_tokens_cost_and_saving(scraped: tuple[str, Samples]) -> None:
    _, samples = scraped
    # The edge answered 3 requests (one streamed: its usage chunk was counted, then stripped).
    assert value(samples, "dars_tokens_total", upstream="edge", direction="input") == (
        3 * PROMPT_TOKENS
    )
    assert value(samples, "dars_tokens_total", upstream="edge", direction="output") == (
        3 * COMPLETION_TOKENS
    )
    assert value(samples, "dars_tokens_total", upstream="cloud", direction="input") == (
        3 * PROMPT_TOKENS
    )
    assert value(samples, "dars_cost_usd_total", upstream="edge") == pytest.approx(
        cost(EDGE_PRICES, 3)
    )
    assert value(samples, "dars_cost_usd_total", upstream="cloud") == pytest.approx(
        cost(CLOUD_PRICES, 3)
    )
    assert value(samples, "dars_saving_usd_total") == pytest.approx(
        cost(CLOUD_PRICES, 3) - cost(EDGE_PRICES, 3)
    )


@pytest.mark.parametrize(
    ("stage", "count"),
    [
        ("embedding", 4),  # 5 scored requests, one of them a cache hit
        ("scoring", 5),
        ("decision", 5),
        ("upstream_ttfb", 6),
        ("upstream_total", 6),
    ],
)
def test_latency_stages(scraped: tuple[str, Samples], stage: str, count: int) -> None:
    _, samples = scraped
    assert value(samples, "dars_latency_seconds_count", stage=stage) == count


def test_cache_lookups(scraped: tuple[str, Samples]) -> None:
    _, samples = scraped
    assert value(samples, "dars_cache_requests_total", backend="memory", result="hit") == 1
    assert value(samples, "dars_cache_requests_total", backend="memory", result="miss") == 4
    assert value(samples, "dars_embedding_batch_size_count") >= 1


def test_upstream_errors_retries_and_fallbacks(scraped: tuple[str, Samples]) -> None:
    _, samples = scraped
    assert value(samples, "dars_upstream_errors_total", upstream="edge", kind="status_5xx") == 2
    assert value(samples, "dars_upstream_retries_total", upstream="edge") == 1
    assert value(samples, "dars_fallbacks_total", from_upstream="edge", to_upstream="cloud") == 1


def test_router_model_info(scraped: tuple[str, Samples]) -> None:
    text, _ = scraped
    info = next(line for line in text.splitlines() if line.startswith("dars_router_model_info{"))
    assert 'provider="CPUExecutionProvider"' in info
    assert 'embedding_model="sentence-transformers/all-MiniLM-L6-v2"' in info
