"""The aiohttp-backed httpx transport against a real server on loopback: bodies, SSE, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from helpers.processes import free_port
from integration.upstream_server import FakeUpstream

from app.aiohttp_transport import AiohttpTransport, upstream_transport

BODY = {"model": "m", "messages": [{"role": "user", "content": "Grüß Gott, tides?"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream("edge").start()
    yield server
    server.stop()


@pytest.fixture
async def client(upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    upstream.reset()
    transport = AiohttpTransport(max_connections_per_host=4)
    timeout = httpx.Timeout(2.0, connect=1.0)
    async with httpx.AsyncClient(
        base_url=upstream.base_url + "/", transport=transport, timeout=timeout
    ) as client:
        yield client


async def test_a_json_round_trip_keeps_body_and_headers(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    response = await client.post("chat/completions", json=BODY, headers={"X-Trace": "t-1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["choices"][0]["message"]["content"] == "Hello from edge."
    (recorded,) = upstream.requests
    assert recorded.body == BODY
    assert recorded.headers["x-trace"] == "t-1"
    assert recorded.headers["content-type"] == "application/json"


async def test_sse_arrives_chunk_by_chunk(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.stream_chunks, upstream.chunk_delay_s = 3, 0.05
    events = []
    async with client.stream("POST", "chat/completions", json={**BODY, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
            elif line == "data: [DONE]":
                events.append("DONE")
    assert events[-1] == "DONE" and len(events) >= 5
    assert upstream.streams_completed == 1


async def test_error_statuses_are_responses_not_exceptions(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.fail("429")
    response = await client.post("chat/completions", json=BODY)
    assert response.status_code == 429
    assert "error" in response.json()


async def test_connections_are_reused(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    await asyncio.gather(*(client.post("chat/completions", json=BODY) for _ in range(20)))
    assert len(upstream.requests) == 20


async def test_a_refused_connection_is_a_connect_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/"
    async with httpx.AsyncClient(base_url=url, transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("chat/completions", json=BODY)


async def test_a_hanging_upstream_is_a_read_timeout(upstream: FakeUpstream) -> None:
    upstream.reset()
    upstream.fail("hang")
    timeout = httpx.Timeout(0.3, connect=1.0)
    transport = AiohttpTransport()
    async with httpx.AsyncClient(
        base_url=upstream.base_url + "/", transport=transport, timeout=timeout
    ) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("chat/completions", json=BODY)


async def test_a_dropped_stream_is_a_protocol_error(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.fail("drop")
    with pytest.raises(httpx.TransportError):
        async with client.stream("POST", "chat/completions", json={**BODY, "stream": True}) as r:
            async for _ in r.aiter_lines():
                pass


async def test_closing_twice_is_harmless() -> None:
    transport = AiohttpTransport()
    await transport.aclose()
    await transport.aclose()


def test_the_setting_picks_the_transport() -> None:
    assert isinstance(upstream_transport("aiohttp", 7), AiohttpTransport)
    assert upstream_transport("aiohttp", 7).max_connections_per_host == 7  # type: ignore[union-attr]
    assert upstream_transport("httpx", 7) is None
    with pytest.raises(ValueError, match="h2"):
        upstream_transport("h2", 7)
