"""Upstream clients: headers, retries, error mapping, failover and cost (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.errors import (
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from app.metrics import Metrics
from app.settings import Settings, UpstreamSettings
from app.upstream import UpstreamClient, Upstreams, Usage, classify_error, public_url

Handler = Callable[[httpx.Request], httpx.Response]
URLS = {"edge_base_url": "http://edge.test/v1", "cloud_base_url": "http://cloud.test/v1"}
BODY = {"model": "router", "messages": [{"role": "user", "content": "hi"}], "seed": 3}
COMPLETION = {
    "id": "x",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 2000, "total_tokens": 3000},
}


def scripted(*steps: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering (or raising) ``steps`` in order, recording the requests it saw."""
    seen: list[httpx.Request] = []
    remaining: Iterator[httpx.Response | Exception] = iter(steps)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = next(remaining)
        if isinstance(step, Exception):
            raise step
        return step

    return handle, seen


def ok() -> httpx.Response:
    return httpx.Response(200, json=COMPLETION)


def status(code: int, message: str = "nope") -> httpx.Response:
    return httpx.Response(code, json={"error": {"message": message}})


def client(
    handler: Handler,
    *,
    name: str = "edge",
    retries: int = 2,
    key: str | None = "sk-upstream",
    metrics: Metrics | None = None,
    prices: tuple[float, float] = (0.0, 0.0),
) -> UpstreamClient:
    config = UpstreamSettings(
        base_url="http://upstream.test/v1/",
        model=f"{name}-model",
        api_key=SecretStr(key) if key else None,
        price_input_per_mtok=prices[0],
        price_output_per_mtok=prices[1],
    )
    return UpstreamClient(
        name,  # type: ignore[arg-type]
        config,
        retries=retries,
        backoff_s=0.0,
        metrics=metrics,
        transport=httpx.MockTransport(handler),
    )


async def test_request_carries_the_upstream_key_and_model_and_the_body_as_sent() -> None:
    handler, seen = scripted(ok())
    edge = client(handler)

    content, payload = await edge.call(lambda: edge.create_once(BODY))

    request = seen[0]
    assert request.url == "http://upstream.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-upstream"
    assert json.loads(request.content) == {**BODY, "model": "edge-model"}
    assert payload == COMPLETION
    assert json.loads(content) == COMPLETION
    await edge.aclose()


async def test_no_authorization_header_without_a_key() -> None:
    handler, seen = scripted(ok())
    edge = client(handler, key=None)

    await edge.call(lambda: edge.create_once(BODY))

    assert "authorization" not in seen[0].headers


async def test_5xx_and_429_are_retried_then_succeed() -> None:
    metrics = Metrics()
    handler, seen = scripted(status(503), status(429), ok())
    edge = client(handler, retries=3, metrics=metrics)

    _, payload = await edge.call(lambda: edge.create_once(BODY))

    assert payload == COMPLETION
    assert len(seen) == 3
    assert (
        metrics.registry.get_sample_value("dars_upstream_retries_total", {"upstream": "edge"}) == 2
    )
    for kind in ("status_5xx", "status_429"):
        labels = {"upstream": "edge", "kind": kind}
        assert metrics.registry.get_sample_value("dars_upstream_errors_total", labels) == 1


async def test_a_refused_connection_fails_fast_naming_upstream_url_and_setting() -> None:
    # Regression (issue 7): a connection refused was retried with backoff before failing.
    metrics = Metrics()
    config = UpstreamSettings(
        base_url="http://user:sk-in-url@127.0.0.1:1/v1?api_key=sk-in-query",
        model="edge-model",
        api_key=SecretStr("sk-upstream"),
    )
    edge = UpstreamClient("edge", config, retries=5, backoff_s=10.0, metrics=metrics)

    with pytest.raises(UpstreamError) as raised:
        await edge.call(lambda: edge.create_once(BODY))

    assert raised.value.message == (
        "Upstream failed: edge (http://127.0.0.1:1/v1): connection refused "
        "(check DARS_EDGE_BASE_URL)."
    )
    assert (
        metrics.registry.get_sample_value("dars_upstream_retries_total", {"upstream": "edge"})
        == 0  # zero-initialised at start-up; a refused connection is not retried
    )
    await edge.aclose()


@pytest.mark.parametrize(
    ("step", "error", "calls"),
    [
        (status(500), UpstreamError, 3),
        (status(429), RateLimited, 3),
        (httpx.ConnectError("refused"), UpstreamError, 1),
        (httpx.ConnectTimeout("slow connect"), UpstreamError, 1),
        (httpx.ReadTimeout("slow answer"), UpstreamTimeout, 1),
        (httpx.PoolTimeout("pool full"), UpstreamTimeout, 1),
        (httpx.RemoteProtocolError("garbage"), UpstreamError, 1),
        (httpx.Response(200, content=b"<html>"), UpstreamError, 1),
        (httpx.Response(200, json=[1, 2]), UpstreamError, 1),
        (status(400, "context too long"), InvalidRequest, 1),
        (status(413), PayloadTooLarge, 1),
        (status(401, "Incorrect API key provided: sk-up***eam"), UpstreamError, 1),
        (status(404), UpstreamError, 1),
    ],
)
async def test_failures_map_to_the_error_tree(
    step: httpx.Response | Exception, error: type[Exception], calls: int
) -> None:
    handler, seen = scripted(*[step] * 3)
    edge = client(handler, retries=2)

    with pytest.raises(error) as raised:
        await edge.call(lambda: edge.create_once(BODY))

    assert type(raised.value) is error
    assert len(seen) == calls
    assert raised.value.__cause__ is not None  # mapped ``from`` the original error
    assert "sk-up" not in str(raised.value)  # an upstream's key hint never reaches a client


async def test_upstream_400_message_is_relayed() -> None:
    handler, _ = scripted(status(400, "maximum context length is 8 tokens"))
    edge = client(handler)

    with pytest.raises(InvalidRequest, match="maximum context length is 8 tokens"):
        await edge.call(lambda: edge.create_once(BODY))


async def test_stream_with_error_status_is_closed_and_raised() -> None:
    handler, seen = scripted(status(502), status(502), status(502))
    edge = client(handler)

    with pytest.raises(UpstreamError):
        await edge.call(lambda: edge.open_stream_once({**BODY, "stream": True}))

    assert len(seen) == 3


def pair(
    edge_steps: list[httpx.Response | Exception],
    cloud_steps: list[httpx.Response | Exception],
    **options: Any,
) -> tuple[Upstreams, list[httpx.Request], list[httpx.Request], Metrics]:
    metrics = Metrics()
    edge_handler, edge_seen = scripted(*edge_steps)
    cloud_handler, cloud_seen = scripted(*cloud_steps)
    upstreams = Upstreams(
        client(edge_handler, retries=0, metrics=metrics, prices=(0.1, 0.2)),
        client(cloud_handler, name="cloud", retries=0, metrics=metrics, prices=(2.5, 10.0)),
        metrics=metrics,
        **options,
    )
    return upstreams, edge_seen, cloud_seen, metrics


async def test_edge_failure_fails_over_to_cloud() -> None:
    upstreams, _, cloud_seen, metrics = pair([status(500)], [ok()])

    reply = await upstreams.create("edge", BODY)

    assert (reply.upstream, reply.fell_back) == ("cloud", True)
    assert json.loads(cloud_seen[0].content)["model"] == "cloud-model"
    labels = {"from_upstream": "edge", "to_upstream": "cloud"}
    assert metrics.registry.get_sample_value("dars_fallbacks_total", labels) == 1


@pytest.mark.parametrize(
    ("route", "options"),
    [
        ("edge", {"failover_edge_to_cloud": False}),
        ("cloud", {}),  # cloud -> edge is off by default
    ],
)
async def test_no_failover_when_switched_off(route: str, options: dict[str, bool]) -> None:
    upstreams, edge_seen, cloud_seen, _ = pair([status(500)], [status(500)], **options)

    with pytest.raises(UpstreamError):
        await upstreams.create(route, BODY)  # type: ignore[arg-type]

    assert len(edge_seen) + len(cloud_seen) == 1


async def test_cloud_to_edge_failover_when_switched_on() -> None:
    upstreams, _, _, _ = pair([ok()], [httpx.ConnectError("down")], failover_cloud_to_edge=True)

    reply = await upstreams.create("cloud", BODY)

    assert (reply.upstream, reply.fell_back) == ("edge", True)


async def test_a_rejected_body_does_not_fail_over() -> None:
    upstreams, _, cloud_seen, _ = pair([status(400)], [ok()])

    with pytest.raises(InvalidRequest):
        await upstreams.create("edge", BODY)

    assert cloud_seen == []


async def test_usage_is_counted_with_cost_and_saving() -> None:
    upstreams, _, _, metrics = pair([ok()], [])

    reply = await upstreams.create("edge", BODY)

    assert reply.usage == Usage(prompt_tokens=1000, completion_tokens=2000)
    registry = metrics.registry
    edge_cost = (1000 * 0.1 + 2000 * 0.2) / 1e6
    cloud_cost = (1000 * 2.5 + 2000 * 10.0) / 1e6
    assert registry.get_sample_value("dars_cost_usd_total", {"upstream": "edge"}) == pytest.approx(
        edge_cost
    )
    assert registry.get_sample_value("dars_saving_usd_total") == pytest.approx(
        cloud_cost - edge_cost
    )
    labels = {"upstream": "edge", "direction": "output"}
    assert registry.get_sample_value("dars_tokens_total", labels) == 2000


def test_cost_uses_prices_per_million_tokens() -> None:
    handler, _ = scripted()
    cloud = client(handler, name="cloud", prices=(2.5, 10.0))
    assert cloud.cost_usd(Usage(prompt_tokens=1_000_000, completion_tokens=0)) == 2.5
    assert cloud.cost_usd(Usage(prompt_tokens=0, completion_tokens=500_000)) == 5.0


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 3, "completion_tokens": 4}, Usage(3, 4)),
        ({"prompt_tokens": -1, "completion_tokens": 4}, Usage(0, 4)),
        ({"prompt_tokens": 3}, None),
        ({"prompt_tokens": "3", "completion_tokens": 4}, None),
        (None, None),
        ([3, 4], None),
    ],
)
def test_usage_parsing(usage: object, expected: Usage | None) -> None:
    assert Usage.from_payload(usage) == expected


def test_from_settings_builds_both_upstreams_with_their_keys() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        **URLS,
        edge_model="small",
        cloud_model="large",
        cloud_api_key="sk-cloud",
        failover_edge_to_cloud=False,
    )
    upstreams = Upstreams.from_settings(settings)

    assert (upstreams["edge"].model, upstreams["cloud"].model) == ("small", "large")
    assert upstreams.failover_to == {"edge": None, "cloud": None}


def test_classify_refuses_foreign_errors() -> None:
    with pytest.raises(TypeError):
        classify_error("edge", KeyError("x"), base_url="http://edge.test/v1")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
        ("https://user:secret@api.example.com/v1/", "https://api.example.com/v1/"),
        ("https://api.example.com/v1?key=secret#frag", "https://api.example.com/v1"),
        ("http://[::1]:9000/v1", "http://[::1]:9000/v1"),
    ],
)
def test_public_url_drops_credentials(url: str, shown: str) -> None:
    assert public_url(url) == shown


async def test_error_after_failover_names_every_upstream_tried() -> None:
    # Regression (issue 7): with both down, the error named only the last upstream.
    upstreams, edge_seen, cloud_seen, _ = pair([httpx.ConnectError("down")], [status(503)])

    with pytest.raises(UpstreamError) as raised:
        await upstreams.create("edge", BODY)

    assert raised.value.message == (
        "Upstreams failed: edge (http://upstream.test/v1/): cannot connect "
        "(check DARS_EDGE_BASE_URL); cloud (http://upstream.test/v1/): status 503."
    )
    assert raised.value.status_code == 502
    assert (len(edge_seen), len(cloud_seen)) == (1, 1)


async def test_the_last_upstreams_error_class_decides_the_status() -> None:
    upstreams, _, _, _ = pair([status(500)], [httpx.ReadTimeout("slow")])

    with pytest.raises(UpstreamTimeout) as raised:
        await upstreams.create("edge", BODY)

    assert raised.value.code == "timeout"
    assert "edge (http://upstream.test/v1/): status 500; cloud" in raised.value.message
    assert "(check DARS_UPSTREAM_READ_TIMEOUT_S)" in raised.value.message


@pytest.mark.parametrize("stream", [False, True])
async def test_a_forced_request_does_not_fail_over_by_default(stream: bool) -> None:
    # Regression (issue 7): a client that named the edge model got the cloud's answer.
    upstreams, edge_seen, cloud_seen, _ = pair([status(500)], [ok()])

    with pytest.raises(UpstreamError, match="edge"):
        if stream:
            await upstreams.open_stream("edge", {**BODY, "stream": True}, forced=True)
        else:
            await upstreams.create("edge", BODY, forced=True)

    assert (len(edge_seen), cloud_seen) == (1, [])


async def test_a_forced_request_fails_over_when_configured() -> None:
    upstreams, _, _, _ = pair([status(500)], [ok()], failover_forced=True)

    reply = await upstreams.create("edge", BODY, forced=True)

    assert (reply.upstream, reply.fell_back) == ("cloud", True)


def test_failover_forced_is_a_setting() -> None:
    default = Upstreams.from_settings(Settings(_env_file=None, **URLS))  # type: ignore[call-arg]
    on = Upstreams.from_settings(
        Settings(_env_file=None, **URLS, failover_forced=True)  # type: ignore[call-arg]
    )

    assert (default.failover_forced, on.failover_forced) == (False, True)
