"""Streamed answers in the live loop: the relay keeps a drawn stream's text without changing a
byte of it, the judge grades it as the served answer, and a stream the client left is recorded
but never graded.

Real app under uvicorn, real encoder and ONNX router, fake OpenAI upstreams (edge, cloud and a
judge) on loopback, the real openai SDK as the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest
from helpers.onnx_routers import make_linear_router
from helpers.polling import until
from integration.upstream_server import (
    COMPLETION_TOKENS,
    EDGE_MODEL,
    PROMPT_TOKENS,
    FakeUpstream,
    router_settings,
    running_router,
    stream_chat,
)

from app.settings import UpstreamSettings
from app.streaming import AnswerCapture, StreamEnd, relay_sse
from app.upstream import UpstreamClient, Upstreams
from router_models.live.store import SqliteStore

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

KEY = "client-key"
MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def judge() -> Iterator[FakeUpstream]:
    server = FakeUpstream("judge", answers=["Rating: [[8]]"]).start()
    yield server
    server.stop()


@pytest.fixture
def router_file(tmp_path: Path) -> Path:
    router: Path = make_linear_router(tmp_path / "router.onnx", bias=-10.0)  # all to the edge
    return router


async def _relay(upstreams: Upstreams, capture: AnswerCapture | None) -> tuple[bytes, StreamEnd]:
    body = {"model": EDGE_MODEL, "messages": MESSAGES, "stream": True}
    body["stream_options"] = {"include_usage": True}
    stream = await upstreams.open_stream("edge", body)
    ends: list[StreamEnd] = []
    relayed = b"".join(
        [
            chunk
            async for chunk in relay_sse(
                stream, upstreams, strip_usage=True, on_finish=ends.append, capture=capture
            )
        ]
    )
    return relayed, ends[0]


async def test_the_relay_keeps_a_drawn_answer_without_changing_the_stream(
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> None:
    edge, cloud = upstreams
    clients = [
        UpstreamClient(fake.name, UpstreamSettings(base_url=fake.base_url, model=f"{fake.name}-m"))
        for fake in (edge, cloud)
    ]
    relay = Upstreams(*clients)
    try:
        plain, plain_end = await _relay(relay, None)
        kept, kept_end = await _relay(relay, AnswerCapture())
    finally:
        await relay.aclose()
    assert kept == plain  # capturing changes nothing the client sees
    assert b"Hello" in plain and b"prompt_tokens" not in plain  # the client did not ask
    assert plain_end.answer is None and plain_end.usage == kept_end.usage
    assert kept_end.status == "200" and kept_end.answer == edge.answer_text()
    assert kept_end.usage is not None
    assert (kept_end.usage.prompt_tokens, kept_end.usage.completion_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )


def _service(
    router: Path, ups: tuple[FakeUpstream, FakeUpstream], judge: FakeUpstream, db: Path
) -> Any:
    return router_settings(
        router,
        *ups,
        live_store=f"sqlite:///{db}",
        api_keys=KEY,
        shadow_rate=1.0,
        shadow_judge_base_url=judge.base_url,
        shadow_judge_model="judge-model",
        shadow_edge_samples=0,
        shadow_cloud_samples=0,
    )


def _stream(url: str) -> tuple[str, str]:
    """One streamed chat completion through the openai SDK: (request id, text)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    headers, text, _ = stream_chat(client, model="router", messages=MESSAGES)
    return headers["x-request-id"], text


def test_a_streamed_answer_is_recorded_with_its_cost_and_graded_as_served(
    tmp_path: Path,
    router_file: Path,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    judge: FakeUpstream,
    encoder: SentenceTransformer,
) -> None:
    db = tmp_path / "live.db"
    with running_router(_service(router_file, upstreams, judge, db), encoder) as server:
        request_id, text = _stream(server.url)
        store = SqliteStore(db)
        grades = until(lambda: list(store.grades()), lambda g: len(g) >= 1, 20.0)
    assert text == upstreams[0].answer_text()
    assert [(g.request_id, g.model, g.sample_id, g.served) for g in grades] == [
        (request_id, EDGE_MODEL, 0, True)
    ]
    assert grades[0].score == pytest.approx(7 / 9)
    assert text in judge.requests[0].body["messages"][0]["content"]  # the judge saw the answer
    record = store.get_record(request_id)
    assert record is not None and record.stream and record.status == "200"
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert record.cost_usd is not None and record.cost_usd > 0
    store.close()


def _leave_after_one_chunk(url: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="router", messages=[{"role": "user", "content": "What is 2+2?"}], stream=True
    ) as raw:
        next(iter(raw.parse()))
        return raw.headers["x-request-id"]


def test_a_stream_the_client_left_is_recorded_but_never_graded(
    tmp_path: Path,
    router_file: Path,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    judge: FakeUpstream,
    encoder: SentenceTransformer,
) -> None:
    edge = upstreams[0]
    db = tmp_path / "live.db"
    with running_router(_service(router_file, upstreams, judge, db), encoder) as server:
        edge.stream_chunks, edge.chunk_delay_s = 400, 0.05  # about 20 s if nobody hangs up
        try:
            left = _leave_after_one_chunk(server.url)
            store = SqliteStore(db)
            record = until(lambda: store.get_record(left), lambda r: r is not None, 20.0)
        finally:
            edge.reset()
        # The sampler works its queue in order: once a later stream is graded, a job for the
        # abandoned one would have been graded before it.
        finished, _ = _stream(server.url)
        grades = until(lambda: list(store.grades()), lambda g: len(g) >= 1, 20.0)
    assert record is not None and record.status == "499" and record.stream
    assert [(g.request_id, g.served) for g in grades] == [(finished, True)]
    store.close()
