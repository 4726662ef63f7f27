"""``UpstreamClient`` on both transports against a real server on loopback: what goes on the wire.

The client builds its requests by hand (URL, raw headers with Host, a byte stream with its
Content-Length) and sends them straight to the transport, so both transports, httpx's own and
the aiohttp one (the default), must put the same well-formed request on the wire.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from integration.upstream_server import FakeUpstream
from pydantic import SecretStr

from app.aiohttp_transport import AiohttpTransport
from app.settings import Settings, UpstreamSettings
from app.upstream import UpstreamClient, Upstreams
from app.upstreams_file import configured_upstreams

HANG_GUARD_S = 30.0  # bounds a wait so that a broken pool fails instead of hanging
BODY = {"messages": [{"role": "user", "content": "Grüße: what is 2 + 2?"}], "temperature": 0.5}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream("edge").start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(params=["httpx", "aiohttp"])
async def client(
    request: pytest.FixtureRequest, upstream: FakeUpstream
) -> AsyncIterator[UpstreamClient]:
    upstream.reset()
    config = UpstreamSettings(
        base_url=upstream.base_url, model="edge-model", api_key=SecretStr("sk-edge")
    )
    transport = AiohttpTransport() if request.param == "aiohttp" else None
    client = UpstreamClient("edge", config, retries=0, transport=transport)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_call_sends_the_body_with_the_model_and_well_formed_headers(
    client: UpstreamClient, upstream: FakeUpstream
) -> None:
    raw, payload = await client.create_once(BODY)

    assert payload["choices"][0]["message"]["content"]
    assert json.loads(raw) == payload
    sent = upstream.requests[-1]
    assert sent.body == {**BODY, "model": "edge-model"}
    assert sent.headers["host"] == httpx.URL(upstream.base_url).netloc.decode()
    assert sent.headers["authorization"] == "Bearer sk-edge"
    assert sent.headers["content-type"] == "application/json"
    expected = json.dumps(
        {**BODY, "model": "edge-model"}, ensure_ascii=False, separators=(",", ":")
    )
    assert int(sent.headers["content-length"]) == len(expected.encode())


async def test_a_stream_arrives_as_server_sent_events(
    client: UpstreamClient, upstream: FakeUpstream
) -> None:
    response = await client.open_stream_once({**BODY, "stream": True})
    try:
        text = (await response.aread()).decode()
    finally:
        await response.aclose()

    assert response.status_code == 200
    assert text.rstrip().endswith("data: [DONE]")
    assert upstream.requests[-1].body["stream"] is True


async def test_a_non_ascii_key_goes_out_as_the_same_bytes_on_both_transports(
    upstream: FakeUpstream, transport_kind: str
) -> None:
    # Header values are built as UTF-8 bytes; a transport must send those bytes as they are
    # (aiohttp re-encodes its str headers as UTF-8, so it must be handed them decoded as such).
    upstream.reset()
    key = "sk-édge-κλειδί"
    config = UpstreamSettings(
        base_url=upstream.base_url, model="edge-model", api_key=SecretStr(key)
    )
    transport = AiohttpTransport() if transport_kind == "aiohttp" else None
    client = UpstreamClient("edge", config, retries=0, transport=transport)
    try:
        await client.create_once(BODY)
    finally:
        await client.aclose()

    # Starlette hands header values over decoded as latin-1: encode back to the wire bytes.
    sent = upstream.requests[-1].headers["authorization"].encode("latin-1")
    assert sent == f"Bearer {key}".encode()


@pytest.fixture(params=["httpx", "aiohttp"])
def transport_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


async def test_each_upstream_of_a_file_has_its_own_pool_of_its_own_size(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """``max_connections: 1`` on one upstream holds its second call until the first is done,
    while another upstream of the same file is not held by it (its own pool)."""
    upstream.reset()
    upstream.chunk_delay_s = 1.0  # a stream still arriving holds its connection (10 s at most)
    upstream.stream_chunks = 10
    (tmp_path / "upstreams.yaml").write_text(
        "upstreams:\n"
        f"  - {{name: small, base_url: '{upstream.base_url}', model: edge-model,"
        " max_connections: 1}\n"
        f"  - {{name: large, base_url: '{upstream.base_url}', model: cloud-model}}\n"
    )
    settings = Settings(_env_file=None, upstreams_file=tmp_path / "upstreams.yaml")  # type: ignore[call-arg]
    upstreams = Upstreams.from_config(configured_upstreams(settings), settings)  # aiohttp
    body = {**BODY, "stream": True}
    try:
        first = await upstreams["small"].open_stream_once(body)  # holds small's one connection
        second = asyncio.create_task(upstreams["small"].open_stream_once(body))
        other = await asyncio.wait_for(upstreams["large"].open_stream_once(body), HANG_GUARD_S)
        await other.aclose()
        assert not second.done()  # still waiting for small's connection
        await first.aclose()
        await (await asyncio.wait_for(second, HANG_GUARD_S)).aclose()
        models = [r.body["model"] for r in upstream.requests]
        assert models == ["edge-model", "cloud-model", "edge-model"]
    finally:
        await upstreams.aclose()
        upstream.reset()
