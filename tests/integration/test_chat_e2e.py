"""End to end: the real ``openai`` SDK against the router on a loopback port, in front of two
fake OpenAI upstreams; real encoder, real (tiny) ONNX router.

The router scores every query 0.5 (zero weights, bias 0) and its default threshold is 0.7,
so ``router`` goes to the edge and ``router-0.3`` to the cloud, whatever the text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import openai
import pytest
from helpers.onnx_routers import make_linear_router
from integration.upstream_server import (
    CLOUD_KEY,
    CLOUD_MODEL,
    EDGE_KEY,
    EDGE_MODEL,
    PROMPT_TOKENS,
    FakeUpstream,
    ServerThread,
    router_settings,
    running_router,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

CLIENT_KEY = "sk-client-key-never-forwarded"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    encoder: SentenceTransformer,
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> Iterator[ServerThread]:
    router = make_linear_router(
        tmp_path_factory.mktemp("router") / "router.onnx", bias=0.0, default_threshold=0.7
    )
    with running_router(router_settings(router, *upstreams), encoder) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_upstreams(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    for upstream in upstreams:
        upstream.reset()


@pytest.fixture
def client(service: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key=CLIENT_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.mark.parametrize(
    ("model", "route", "reason", "threshold", "upstream_model"),
    [
        ("router", "edge", "threshold", "0.700000", EDGE_MODEL),
        ("router-0.3", "cloud", "threshold", "0.300000", CLOUD_MODEL),
        ("router-0.5", "cloud", "threshold", "0.500000", CLOUD_MODEL),  # score >= threshold
        ("router-1", "edge", "threshold", "1.000000", EDGE_MODEL),
        (CLOUD_MODEL, "cloud", "forced", None, CLOUD_MODEL),
        (EDGE_MODEL, "edge", "forced", None, EDGE_MODEL),
    ],
)
def test_model_field_selects_the_upstream(
    client: openai.OpenAI,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    model: str,
    route: str,
    reason: str,
    threshold: str | None,
    upstream_model: str,
) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    completion = raw.parse()

    assert raw.headers["x-dars-route"] == route
    assert raw.headers["x-dars-reason"] == reason
    assert raw.headers.get("x-dars-threshold") == threshold
    assert raw.headers.get("x-dars-score") == (None if reason == "forced" else "0.500000")
    assert completion.choices[0].message.content == f"Hello from {route}."
    assert completion.model == upstream_model  # the upstream's body, as is
    served = dict(zip(("edge", "cloud"), upstreams, strict=True))[route]
    other = dict(zip(("cloud", "edge"), upstreams, strict=True))[route]
    assert [r.body["model"] for r in served.requests] == [upstream_model]
    assert other.requests == []


def test_client_key_is_not_forwarded_and_each_upstream_gets_its_own(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    client.chat.completions.create(model="router", messages=MESSAGES)
    client.chat.completions.create(model="router-0.1", messages=MESSAGES)

    edge, cloud = upstreams
    assert edge.requests[0].headers["authorization"] == f"Bearer {EDGE_KEY}"
    assert cloud.requests[0].headers["authorization"] == f"Bearer {CLOUD_KEY}"
    for recorded in edge.requests + cloud.requests:
        assert CLIENT_KEY not in json.dumps(recorded.headers)
        assert CLIENT_KEY not in json.dumps(recorded.body)


def test_unknown_fields_and_multipart_content_are_forwarded_untouched(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this picture."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
    ]
    client.chat.completions.create(
        model="router",
        messages=messages,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
        n=2,
        seed=7,
        temperature=0.25,
        extra_body={"x_vendor_option": {"nested": [1, 2.5, None]}},
    )

    body = upstreams[0].requests[0].body
    assert body["messages"] == messages
    assert body["tools"] == tools
    assert body["response_format"] == {"type": "json_object"}
    assert (body["n"], body["seed"], body["temperature"]) == (2, 7, 0.25)
    assert body["x_vendor_option"] == {"nested": [1, 2.5, None]}
    assert body["model"] == EDGE_MODEL
    assert "stream_options" not in body


def test_stream_without_include_usage_gets_no_usage_chunk(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="router", messages=MESSAGES, stream=True
    )
    chunks = list(raw.parse())

    assert raw.headers["x-dars-route"] == "edge"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello from edge."
    )
    assert all(c.choices for c in chunks)  # the usage-only chunk was removed
    assert all(c.usage is None for c in chunks)
    # ... but the service asked the upstream for it, to count tokens.
    assert upstreams[0].requests[0].body["stream_options"] == {"include_usage": True}


def test_stream_with_include_usage_keeps_the_usage_chunk(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    stream = client.chat.completions.create(
        model="router-0.2",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == PROMPT_TOKENS
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello from cloud."
    )
    assert upstreams[1].requests[0].body["stream_options"] == {"include_usage": True}


def test_models_lists_router_and_both_upstreams(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [
        "router",
        "router-cascade",
        EDGE_MODEL,
        CLOUD_MODEL,
    ]


def test_route_endpoint_decides_without_forwarding(
    service: ServerThread, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    body = {"model": "router-0.4", "messages": MESSAGES}
    response = httpx.post(f"{service.url}/v1/route", json=body)

    assert response.status_code == 200
    decision = response.json()
    assert decision["route"] == "cloud"
    assert decision["reason"] == "threshold"
    assert decision["model"] == CLOUD_MODEL
    assert decision["score"] == pytest.approx(0.5)
    assert decision["threshold"] == pytest.approx(0.4)
    assert isinstance(decision["cache_hit"], bool)
    assert upstreams[0].requests == upstreams[1].requests == []


def test_repeated_query_hits_the_embedding_cache(service: ServerThread) -> None:
    body = {"model": "router", "messages": [{"role": "user", "content": "cache me, please"}]}
    first = httpx.post(f"{service.url}/v1/route", json=body).json()
    second = httpx.post(f"{service.url}/v1/route", json=body).json()

    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert first["score"] == second["score"]


def test_client_disconnect_closes_the_upstream_stream(
    service: ServerThread, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    edge = upstreams[0]
    edge.stream_chunks, edge.chunk_delay_s = 400, 0.05  # about 20 s if nobody hangs up
    body = {"model": "router", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{service.url}/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    # The client hung up after one event: the service must hang up on the upstream too.
    deadline = time.monotonic() + 15
    while edge.streams_cancelled == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert edge.streams_cancelled == 1
    assert edge.streams_completed == 0
    closed = 'dars_requests_total{reason="threshold",route="edge",status="499"} 1.0'
    assert closed in httpx.get(f"{service.url}/metrics").text


def test_health_and_readiness_report_where_things_run(service: ServerThread) -> None:
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.url}/readyz")

    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["router"]["provider"] == "CPUExecutionProvider"
    assert body["router"]["threshold"] == pytest.approx(0.7)
    assert body["encoder"] == {
        "model_id": "sentence-transformers/all-MiniLM-L6-v2",
        "dim": 384,
        "device": "cpu",
    }
    assert body["cache_backend"] == "memory"
