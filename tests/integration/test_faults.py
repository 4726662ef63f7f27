"""Every way a request can go wrong, with the exact status and OpenAI error body the client gets.

Two services run in this module, both in front of the same two fake upstreams:
``guarded`` (client API keys, admin token, small body limit, edge->cloud failover on) and
``plain`` (no keys, admin API off, failover off). The router scores every query 0.5 and its
threshold is 0.7, so ``router`` goes to the edge.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from helpers.onnx_routers import make_linear_router
from integration.upstream_server import (
    CLOUD_MODEL,
    EDGE_MODEL,
    FakeUpstream,
    ServerThread,
    router_settings,
    running_router,
)

if TYPE_CHECKING:
    from integration.conftest import RedisServer
    from sentence_transformers import SentenceTransformer

CLIENT_KEY = "client-key-1"
ADMIN_TOKEN = "admin-token-for-faults"
MAX_BODY = 4096
MESSAGES = [{"role": "user", "content": "Summarise the plot of Hamlet."}]
CHAT = "/v1/chat/completions"


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    edge, cloud = FakeUpstream("edge", hang_s=3.0).start(), FakeUpstream("cloud").start()
    yield edge, cloud
    edge.stop()
    cloud.stop()


@pytest.fixture(scope="module")
def router_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_linear_router(
        tmp_path_factory.mktemp("router") / "router.onnx", bias=0.0, default_threshold=0.7
    )


@pytest.fixture(scope="module")
def guarded(
    router_file: Path, encoder: SentenceTransformer, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> Iterator[httpx.Client]:
    settings = router_settings(
        router_file,
        *upstreams,
        api_keys=f"{CLIENT_KEY}, another-key",
        admin_token=ADMIN_TOKEN,
        max_body_bytes=MAX_BODY,
        upstream_read_timeout_s=1.0,
    )
    with running_router(settings, encoder) as server, _client(server, CLIENT_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def plain(
    router_file: Path, encoder: SentenceTransformer, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> Iterator[httpx.Client]:
    settings = router_settings(
        router_file, *upstreams, failover_edge_to_cloud=False, upstream_read_timeout_s=1.0
    )
    with running_router(settings, encoder) as server, _client(server, None) as client:
        yield client


def _client(server: ServerThread, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


@pytest.fixture(autouse=True)
def _fresh_upstreams(upstreams: tuple[FakeUpstream, FakeUpstream]) -> Iterator[None]:
    for upstream in upstreams:
        upstream.reset()
    yield
    if upstreams[0]._server is None:  # a test stopped the edge: bring it back
        upstreams[0].start()


def chat(client: httpx.Client, **overrides: Any) -> httpx.Response:
    return client.post(CHAT, json={"model": "router", "messages": MESSAGES, **overrides})


# --- malformed requests


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [
        (
            b'{"model": "router", "messages": [',
            "application/json",
            error_body(
                "Malformed JSON body: Expecting value.",
                "invalid_request_error",
                code="invalid_json",
            ),
        ),
        (
            b'["router"]',
            "application/json",
            error_body(
                "Invalid request body: Input should be a valid dictionary or object to extract "
                "fields from.",
                "invalid_request_error",
                code="invalid_value",
            ),
        ),
        (
            b"",
            "application/json",
            error_body(
                "The request body is missing: send a JSON object with 'model', 'messages'.",
                "invalid_request_error",
                code="missing_body",
            ),
        ),
        (
            json.dumps({"model": "router", "messages": MESSAGES}).encode(),
            "application/x-www-form-urlencoded",
            error_body(
                "The body must be JSON sent as 'Content-Type: application/json'.",
                "invalid_request_error",
                code="invalid_content_type",
            ),
        ),
    ],
    ids=["malformed-json", "not-an-object", "empty", "not-json-content-type"],
)
def test_unparseable_bodies_are_400(
    guarded: httpx.Client, content: bytes, content_type: str, expected: dict[str, Any]
) -> None:
    response = guarded.post(CHAT, content=content, headers={"content-type": content_type})

    assert response.status_code == 400
    assert response.json() == expected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"model": "router"},
            error_body(
                "Missing required field 'messages'.",
                "invalid_request_error",
                param="messages",
                code="missing_field",
            ),
        ),
        (
            {"model": "router", "messages": []},
            error_body(
                "Invalid request body at 'messages': List should have at least 1 item after "
                "validation, not 0.",
                "invalid_request_error",
                param="messages",
                code="invalid_value",
            ),
        ),
        (
            {"model": "router", "messages": [{"role": "user", "content": 42}]},
            error_body(
                "Invalid request body at 'messages.0.content': Value error, content must be a "
                "string, a list of content parts, or null.",
                "invalid_request_error",
                param="messages.0.content",
                code="invalid_value",
            ),
        ),
        (
            {"model": "router", "messages": [{"role": "user", "content": "  \n "}]},
            error_body(
                "The last user message has no text content to route on.",
                "invalid_request_error",
                param="messages[0].content",
                code="no_query_text",
            ),
        ),
        (
            {
                "model": "router",
                "messages": [
                    {"role": "user", "content": "first question"},
                    {"role": "assistant", "content": "an answer"},
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}],
                    },
                ],
            },
            error_body(
                "The last user message has no text content to route on.",
                "invalid_request_error",
                param="messages[2].content",
                code="no_query_text",
            ),
        ),
        (
            {"model": "router", "messages": [{"role": "system", "content": "be nice"}]},
            error_body(
                "The request has no user message to route on.",
                "invalid_request_error",
                param="messages",
                code="no_user_message",
            ),
        ),
        (
            {"model": "router-1.5", "messages": MESSAGES},
            error_body(
                "threshold must be a number in [0, 1], got '1.5' in model 'router-1.5'; "
                "use router-<t>, e.g. router-0.35",
                "invalid_request_error",
                param="model",
                code="invalid_threshold",
            ),
        ),
        (
            {"model": "router--0.1", "messages": MESSAGES},
            error_body(
                "threshold must be a number in [0, 1], got '-0.1' in model 'router--0.1'; "
                "use router-<t>, e.g. router-0.35",
                "invalid_request_error",
                param="model",
                code="invalid_threshold",
            ),
        ),
        (
            {"model": "router-abc", "messages": MESSAGES},
            error_body(
                "threshold must be a number in [0, 1], got 'abc' in model 'router-abc'; "
                "use router-<t>, e.g. router-0.35",
                "invalid_request_error",
                param="model",
                code="invalid_threshold",
            ),
        ),
    ],
    ids=[
        "no-messages",
        "empty-messages",
        "content-not-text",
        "blank-content",
        "image-only-content",
        "no-user-message",
        "threshold-out-of-range",
        "threshold-negative",
        "threshold-not-a-number",
    ],
)
def test_invalid_requests_are_400(
    guarded: httpx.Client,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    payload: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    response = guarded.post(CHAT, json=payload)

    assert response.status_code == 400
    assert response.json() == expected
    assert upstreams[0].requests == upstreams[1].requests == []


def test_unknown_model_is_404(guarded: httpx.Client) -> None:
    response = chat(guarded, model="gpt-5")

    assert response.status_code == 404
    assert response.json() == error_body(
        f"model 'gpt-5' does not exist; use 'router', 'router-<threshold>', "
        f"'{EDGE_MODEL}' or '{CLOUD_MODEL}'",
        "invalid_request_error",
        param="model",
        code="model_not_found",
    )


def test_unknown_route_is_404_in_openai_shape(guarded: httpx.Client) -> None:
    response = guarded.post("/v1/embeddings", json={"input": "x"})

    assert response.status_code == 404
    assert response.json() == error_body(
        "Unknown URL: POST /v1/embeddings", "invalid_request_error", code="not_found"
    )


TOO_LARGE = error_body(
    f"Request body exceeds {MAX_BODY} bytes.", "invalid_request_error", code="payload_too_large"
)


def test_oversized_body_by_content_length_is_413(guarded: httpx.Client) -> None:
    big = [{"role": "user", "content": "x" * MAX_BODY}]
    response = chat(guarded, messages=big)

    assert response.status_code == 413
    assert response.json() == TOO_LARGE


def test_oversized_streamed_body_without_length_is_413(guarded: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer encoding: no Content-Length
        yield b'{"model": "router", "messages": [{"role": "user", "content": "'
        for _ in range(MAX_BODY // 512 + 1):
            yield b"y" * 512
        yield b'"}]}'

    response = guarded.post(CHAT, content=chunks(), headers={"content-type": "application/json"})

    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json() == TOO_LARGE


# --- client authentication


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API key: send 'Authorization: Bearer <key>'."),
        ({"Authorization": "Bearer wrong-key"}, "Incorrect API key provided."),
        (
            {"Authorization": f"Basic {CLIENT_KEY}"},
            "Missing API key: send 'Authorization: Bearer <key>'.",
        ),
    ],
    ids=["missing", "wrong", "not-bearer"],
)
def test_client_api_key_is_required(
    guarded: httpx.Client,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    headers: dict[str, str],
    message: str,
) -> None:
    body = {"model": "router", "messages": MESSAGES}
    response = httpx.post(f"{guarded.base_url}{CHAT}", json=body, headers=headers)

    assert response.status_code == 401
    assert response.json() == error_body(message, "authentication_error", code="invalid_api_key")
    assert upstreams[0].requests == []


def test_second_client_api_key_is_accepted(guarded: httpx.Client) -> None:
    body = {"model": EDGE_MODEL, "messages": MESSAGES}
    headers = {"Authorization": "Bearer another-key"}
    response = httpx.post(f"{guarded.base_url}{CHAT}", json=body, headers=headers)

    assert response.status_code == 200


# --- upstream failures: failover on (guarded) and off (plain)


def _edge_down(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    upstreams[0].stop()


def _edge_hangs(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    upstreams[0].always = "hang"


def _edge_500(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    upstreams[0].always = "500"


def _edge_429(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    upstreams[0].always = "429"


def _edge_bad_json(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    upstreams[0].always = "bad_json"


FAULTS: dict[str, tuple[Callable[[tuple[FakeUpstream, FakeUpstream]], None], int, str, str, str]]
FAULTS = {  # setup, status, type, code, what the message says after "edge (<base url>): "
    "down": (
        _edge_down,
        502,
        "upstream_error",
        "upstream_error",
        "connection refused (check DARS_EDGE_BASE_URL)",
    ),
    "timeout": (
        _edge_hangs,
        504,
        "upstream_error",
        "timeout",
        "timed out (check DARS_UPSTREAM_READ_TIMEOUT_S)",
    ),
    "500": (_edge_500, 502, "upstream_error", "upstream_error", "status 500"),
    "429": (_edge_429, 429, "rate_limit_error", "rate_limit_exceeded", "rate limited (status 429)"),
    "bad-json": (
        _edge_bad_json,
        502,
        "upstream_error",
        "upstream_error",
        "sent an invalid response",
    ),
}


def fault_body(fault: str, edge: FakeUpstream) -> dict[str, Any]:
    _, _, type_, code, what = FAULTS[fault]
    return error_body(f"Upstream failed: edge ({edge.base_url}): {what}.", type_, code=code)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_failing_edge_fails_over_to_cloud(
    guarded: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream], fault: str
) -> None:
    FAULTS[fault][0](upstreams)

    response = chat(guarded)

    assert response.status_code == 200
    assert response.headers["x-dars-route"] == "cloud"
    assert response.headers["x-dars-reason"] == "fallback"
    assert response.headers["x-dars-score"] == "0.500000"
    assert response.json()["choices"][0]["message"]["content"] == "Hello from cloud."
    assert [r.body["model"] for r in upstreams[1].requests] == [CLOUD_MODEL]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_failing_edge_without_failover_is_an_error(
    plain: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream], fault: str
) -> None:
    setup, status, *_ = FAULTS[fault]
    setup(upstreams)

    response = chat(plain)

    assert response.status_code == status
    assert response.json() == fault_body(fault, upstreams[0])
    assert upstreams[1].requests == []


@pytest.mark.parametrize(("fault", "attempts"), [("500", 2), ("429", 2), ("hang", 1)])
def test_retries_only_retryable_failures(
    plain: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream], fault: str, attempts: int
) -> None:
    upstreams[0].always = fault  # type: ignore[assignment]

    chat(plain)

    assert len(upstreams[0].requests) == attempts  # upstream_retries=1; timeouts not retried


def test_transient_500_is_retried_on_the_same_upstream(
    plain: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    upstreams[0].fail("500", times=1)

    response = chat(plain)

    assert response.status_code == 200
    assert response.headers["x-dars-route"] == "edge"
    assert response.headers["x-dars-reason"] == "threshold"
    assert len(upstreams[0].requests) == 2


def test_upstream_rejecting_the_body_is_400_without_failover(
    guarded: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    upstreams[0].always = "400"

    response = chat(guarded)

    assert response.status_code == 400
    assert response.json() == error_body(
        f"Upstream failed: edge ({upstreams[0].base_url}): rejected the request: This model's "
        "maximum context length is 8 tokens.",
        "invalid_request_error",
        code="invalid_request",
    )
    assert upstreams[1].requests == []


# --- streaming failures


def _events(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.iter_lines() if line]


def test_stream_open_failure_fails_over_before_any_byte(
    guarded: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    upstreams[0].always = "500"
    with guarded.stream(
        "POST", CHAT, json={"model": "router", "messages": MESSAGES, "stream": True}
    ) as response:
        events = _events(response)

    assert response.status_code == 200
    assert response.headers["x-dars-route"] == "cloud"
    assert response.headers["x-dars-reason"] == "fallback"
    assert events[-1] == "[DONE]"
    assert "Hello" in events[1]


def test_stream_open_failure_without_failover_is_a_json_error(
    plain: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    upstreams[0].always = "500"

    response = chat(plain, stream=True)

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json() == fault_body("500", upstreams[0])


def test_mid_stream_drop_becomes_an_error_event_then_done(
    plain: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    upstreams[0].always = "drop"  # two chunks, then the connection is cut
    with plain.stream(
        "POST", CHAT, json={"model": "router", "messages": MESSAGES, "stream": True}
    ) as response:
        events = _events(response)

    assert response.status_code == 200
    assert len(events) == 4
    assert json.loads(events[1])["choices"][0]["delta"] == {"content": "Hello"}
    assert json.loads(events[2]) == error_body(
        f"Upstream failed: edge ({upstreams[0].base_url}): the connection failed.",
        "upstream_error",
        code="upstream_error",
    )
    assert events[3] == "[DONE]"


# --- admin


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing admin token: send 'Authorization: Bearer <token>'."),
        ({"Authorization": "Bearer not-the-token"}, "Incorrect admin token."),
        ({"Authorization": f"Bearer {CLIENT_KEY}"}, "Incorrect admin token."),
    ],
    ids=["missing", "wrong", "client-key"],
)
def test_admin_needs_the_admin_token(
    guarded: httpx.Client, headers: dict[str, str], message: str
) -> None:
    response = httpx.put(
        f"{guarded.base_url}/admin/threshold", json={"value": 0.1}, headers=headers
    )

    assert response.status_code == 401
    assert response.json() == error_body(message, "authentication_error", code="invalid_api_key")
    threshold = httpx.get(
        f"{guarded.base_url}/admin/threshold", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert threshold.json()["value"] == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/admin/threshold"), ("PUT", "/admin/threshold"), ("POST", "/admin/router/reload")],
)
def test_admin_api_is_off_without_a_token(plain: httpx.Client, method: str, path: str) -> None:
    headers = {"Authorization": "Bearer anything"}
    response = plain.request(method, path, json={"value": 0.1}, headers=headers)

    assert response.status_code == 403
    assert response.json() == error_body(
        "The admin API is disabled: set DARS_ADMIN_TOKEN to enable it.",
        "permission_error",
        code="admin_disabled",
    )


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all", b"\x08\x07" * 64])
def test_corrupt_router_on_reload_keeps_the_old_one(
    guarded: httpx.Client, router_file: Path, tmp_path: Path, content: bytes
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(content)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    response = guarded.post("/admin/router/reload", json={"path": str(broken)}, headers=admin)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "path",
        "router_load_failed",
    )
    assert error["message"].startswith("Router model rejected; the previous one keeps serving: ")
    assert guarded.get("/readyz").json()["router"]["path"] == str(router_file)
    served = chat(guarded)
    assert served.status_code == 200
    assert served.headers["x-dars-score"] == "0.500000"


def test_reload_of_a_missing_file_keeps_the_old_one(guarded: httpx.Client, tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = guarded.post(
        "/admin/router/reload", json={"path": str(tmp_path / "nope.onnx")}, headers=admin
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "router_load_failed"
    assert chat(guarded).status_code == 200


# --- Redis


def test_requests_are_answered_when_redis_dies(
    router_file: Path,
    encoder: SentenceTransformer,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    redis_server: RedisServer,
    kill_redis: Callable[[], None],
) -> None:
    settings = router_settings(router_file, *upstreams, redis_url=redis_server.url)
    with running_router(settings, encoder) as server, _client(server, None) as client:
        assert client.get("/readyz").json()["cache_backend"] == "redis"
        first = chat(client)
        second = client.post("/v1/route", json={"model": "router", "messages": MESSAGES})
        assert (first.status_code, second.json()["cache_hit"]) == (200, True)

        kill_redis()
        answers = [chat(client, messages=[{"role": "user", "content": f"q{i}"}]) for i in range(5)]
        again = chat(client)

    assert [a.status_code for a in answers] == [200] * 5
    assert again.status_code == 200
    assert again.headers["x-dars-score"] == "0.500000"


# --- issue 7: failover errors, forced models, request ids and headers on errors, secrets


def test_error_after_failover_names_every_upstream_tried(
    guarded: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    edge, cloud = upstreams
    edge.stop()
    cloud.always = "500"

    response = chat(guarded)

    assert response.status_code == 502
    assert response.json() == error_body(
        f"Upstreams failed: edge ({edge.base_url}): connection refused (check "
        f"DARS_EDGE_BASE_URL); cloud ({cloud.base_url}): status 500.",
        "upstream_error",
        code="upstream_error",
    )


def _retries(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('dars_upstream_retries_total{upstream="edge"}'):
            return float(line.split()[-1])
    return 0.0


def test_an_unreachable_upstream_fails_fast(
    plain: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    # Regression (issue 7): a refused connection was retried with backoff (~5 s stacked).
    upstreams[0].stop()
    before = _retries(plain)

    response = chat(plain)

    assert response.status_code == 502
    assert _retries(plain) == before  # upstream_retries=1, yet no retry of a refused connection
    assert response.elapsed.total_seconds() < 1.0


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_model_does_not_fail_over(
    guarded: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream], stream: bool
) -> None:
    upstreams[0].always = "500"

    response = chat(guarded, model=EDGE_MODEL, stream=stream)

    assert response.status_code == 502
    assert response.json() == fault_body("500", upstreams[0])
    assert (response.headers["x-dars-route"], response.headers["x-dars-reason"]) == (
        "edge",
        "forced",
    )
    assert upstreams[1].requests == []


def test_errors_after_a_decision_carry_the_route_headers(
    plain: httpx.Client, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    upstreams[0].always = "500"

    response = chat(plain)

    assert response.status_code == 502
    assert response.headers["x-dars-route"] == "edge"
    assert response.headers["x-dars-reason"] == "threshold"
    assert response.headers["x-dars-score"] == "0.500000"
    assert response.headers["x-dars-threshold"] == "0.700000"


REQUESTS: dict[str, tuple[str, str, dict[str, Any] | None, int]] = {
    "chat": ("POST", CHAT, {"model": "router", "messages": MESSAGES}, 200),
    "malformed-json": ("POST", CHAT, None, 400),
    "schema-error": ("POST", CHAT, {"model": "router"}, 400),
    "unknown-model": ("POST", CHAT, {"model": "gpt-5", "messages": MESSAGES}, 404),
    "too-large": (
        "POST",
        CHAT,
        {"model": "router", "messages": [{"content": "x" * MAX_BODY}]},
        413,
    ),
    "unknown-url": ("GET", "/v1/nope", None, 404),
    "route": ("POST", "/v1/route", {"model": "router", "messages": MESSAGES}, 200),
    "models": ("GET", "/v1/models", None, 200),
    "healthz": ("GET", "/healthz", None, 200),
    "readyz": ("GET", "/readyz", None, 200),
    "metrics": ("GET", "/metrics", None, 200),
    "openapi": ("GET", "/openapi.json", None, 200),
    "admin-bad-value": ("PUT", "/admin/threshold", {"value": 2}, 400),
}


def _send(client: httpx.Client, name: str, headers: dict[str, str]) -> httpx.Response:
    method, path, body, _ = REQUESTS[name]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if path.startswith("/admin") else {}
    if body is None and method == "POST":
        return client.post(path, content=b"{oops", headers={**headers, **admin})
    return client.request(method, path, json=body, headers={**headers, **admin})


@pytest.mark.parametrize("name", list(REQUESTS))
def test_every_response_echoes_a_sane_request_id(guarded: httpx.Client, name: str) -> None:
    response = _send(guarded, name, {"x-request-id": f"client-{name}-42"})

    assert response.status_code == REQUESTS[name][3]
    assert response.headers["x-request-id"] == f"client-{name}-42"


@pytest.mark.parametrize("sent", [None, "bad id with spaces", "x" * 129, "line\tbreak"])
@pytest.mark.parametrize("name", ["chat", "malformed-json", "too-large", "healthz"])
def test_a_request_id_is_generated_when_none_or_an_insane_one_is_sent(
    guarded: httpx.Client, name: str, sent: str | None
) -> None:
    response = _send(guarded, name, {} if sent is None else {"x-request-id": sent})

    generated = response.headers["x-request-id"]
    assert generated != sent
    assert len(generated) == 32 and int(generated, 16) >= 0


def test_the_request_id_is_in_the_logs_of_the_request(
    plain: httpx.Client,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstreams[0].always = "500"
    access = "request trace-me-7: POST /v1/chat/completions -> 502"

    def messages() -> list[str]:
        ours = [r for r in caplog.records if getattr(r, "request_id", None) == "trace-me-7"]
        return [record.getMessage() for record in ours]

    with caplog.at_level(logging.INFO, logger="app"):
        response = plain.post(
            CHAT,
            json={"model": "router", "messages": MESSAGES},
            headers={"x-request-id": "trace-me-7"},
        )
        # The access line is written once the response is sent: the client may see it first.
        deadline = time.monotonic() + 5.0
        while not any(m.startswith(access) for m in messages()) and time.monotonic() < deadline:
            time.sleep(0.01)

    assert response.status_code == 502
    assert any("edge" in message and "status 500" in message for message in messages())
    assert any(message.startswith(access) for message in messages())


def test_secrets_are_never_returned_or_logged(
    router_file: Path,
    encoder: SentenceTransformer,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_password, client_key, admin_token = "redis-pw-s3cret", "client-s3cret", "admin-s3cret"
    settings = router_settings(
        router_file,
        *upstreams,
        redis_url=f"redis://:{redis_password}@127.0.0.1:1/0",
        api_keys=client_key,
        admin_token=admin_token,
    )
    secrets = (redis_password, client_key, admin_token, "sk-edge-upstream", "sk-cloud-upstream")
    with (
        caplog.at_level(logging.DEBUG, logger="app"),
        running_router(settings, encoder) as server,
        _client(server, client_key) as client,
    ):
        admin = {"Authorization": f"Bearer {admin_token}"}
        answers = [
            chat(client),
            client.get("/readyz"),
            client.get("/v1/models"),
            client.get("/admin/threshold", headers=admin),
            client.post("/admin/router/reload", json={}, headers=admin),
            client.get("/metrics"),
            client.get("/openapi.json"),
        ]

    assert [answer.status_code for answer in answers] == [200] * len(answers)
    shown = [answer.text for answer in answers] + [repr(settings), caplog.text]
    shown += [str(answer.headers) for answer in answers]
    assert not [secret for secret in secrets for text in shown if secret in text]
    assert settings.redis_url is not None
    assert "**********" in repr(settings.redis_url)


def test_readyz_reports_numbers_as_numbers(guarded: httpx.Client) -> None:
    router = guarded.get("/readyz").json()["router"]

    assert router["default_threshold"] == 0.7
    assert router["threshold"] == 0.7
    assert router["threshold_source"] == "default"
