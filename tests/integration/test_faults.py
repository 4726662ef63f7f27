"""Every way a request can go wrong, with the exact status and OpenAI error body the client gets.

Two services run in this module, both in front of the same two fake upstreams:
``guarded`` (client API keys, admin token, small body limit, edge->cloud failover on) and
``plain`` (no keys, admin API off, failover off). The router scores every query 0.5 and its
threshold is 0.7, so ``router`` goes to the edge.
"""

from __future__ import annotations

import json
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
            ),
        ),
        (
            b"",
            "application/json",
            error_body("Invalid request body: Field required.", "invalid_request_error"),
        ),
        (
            json.dumps({"model": "router", "messages": MESSAGES}).encode(),
            "application/x-www-form-urlencoded",
            error_body(
                "The body must be JSON sent as 'Content-Type: application/json'.",
                "invalid_request_error",
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
                "Invalid request body at 'messages': Field required.",
                "invalid_request_error",
                param="messages",
            ),
        ),
        (
            {"model": "router", "messages": []},
            error_body(
                "Invalid request body at 'messages': List should have at least 1 item after "
                "validation, not 0.",
                "invalid_request_error",
                param="messages",
            ),
        ),
        (
            {"model": "router", "messages": [{"role": "user", "content": 42}]},
            error_body(
                "Invalid request body at 'messages.0.content': Value error, content must be a "
                "string, a list of content parts, or null.",
                "invalid_request_error",
                param="messages.0.content",
            ),
        ),
        (
            {"model": "router", "messages": [{"role": "user", "content": "  \n "}]},
            error_body(
                "The last user message has no text content to route on.",
                "invalid_request_error",
                param="messages[0].content",
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
            ),
        ),
        (
            {"model": "router", "messages": [{"role": "system", "content": "be nice"}]},
            error_body(
                "The request has no user message to route on.",
                "invalid_request_error",
                param="messages",
            ),
        ),
        (
            {"model": "router-1.5", "messages": MESSAGES},
            error_body(
                "threshold must be a number in [0, 1], got 1.5",
                "invalid_request_error",
                param="model",
                code="invalid_threshold",
            ),
        ),
        (
            {"model": "router-abc", "messages": MESSAGES},
            error_body(
                "invalid threshold in model 'router-abc': use router-<t> with t in [0, 1], "
                "e.g. router-0.35",
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


FAULTS = {
    "down": (
        _edge_down,
        502,
        error_body("The edge upstream is unreachable.", "upstream_error", code="upstream_error"),
    ),
    "timeout": (
        _edge_hangs,
        504,
        error_body("The edge upstream timed out.", "upstream_error", code="timeout"),
    ),
    "500": (
        _edge_500,
        502,
        error_body(
            "The edge upstream failed with status 500.", "upstream_error", code="upstream_error"
        ),
    ),
    "429": (
        _edge_429,
        429,
        error_body(
            "The edge upstream is rate limiting requests.",
            "rate_limit_error",
            code="rate_limit_exceeded",
        ),
    ),
    "bad-json": (
        _edge_bad_json,
        502,
        error_body(
            "The edge upstream sent an invalid response.", "upstream_error", code="upstream_error"
        ),
    ),
}


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
    setup, status, expected = FAULTS[fault]
    setup(upstreams)

    response = chat(plain)

    assert response.status_code == status
    assert response.json() == expected
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
        "The edge upstream rejected the request: This model's maximum context length is 8 tokens.",
        "invalid_request_error",
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
    assert response.json() == FAULTS["500"][2]


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
        "The connection to the edge upstream failed.", "upstream_error", code="upstream_error"
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
        "The admin API is disabled: set DARS_ADMIN_TOKEN to enable it.", "permission_error"
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
