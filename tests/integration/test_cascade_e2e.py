"""The confidence cascade end to end: the real ``openai`` SDK against the router on loopback, in
front of two fake OpenAI upstreams on loopback whose edge answers differ by seed; real encoder
(embedding grouping), real (tiny) ONNX router scoring 0.5 with default threshold 0.7.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from helpers.onnx_routers import make_linear_router
from integration.upstream_server import (
    EDGE_KEY,
    PROMPT_TOKENS,
    FakeUpstream,
    ServerThread,
    router_settings,
    running_router,
    stream_chat,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TOKEN = "cascade-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
MESSAGES: Any = [{"role": "user", "content": "What is 2 + 2?"}]
AGREE = ["The answer is 4.", "2 + 2 = 4. #### 4", "So the answer is 4"]
DISAGREE = ["The answer is 4.", "The answer is 5.", "The answer is 22."]
SAME_MEANING = ["Paris is the capital of France."]
DIFFERENT_MEANINGS = [
    "Paris is the capital of France.",
    "I enjoy long walks with my dog in the rain.",
    "Quarterly revenue fell because of shipping costs.",
]


@pytest.fixture(scope="module")
def router_file(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_linear_router(
        tmp_path_factory.mktemp("router") / "router.onnx", bias=0.0, default_threshold=0.7
    )


@pytest.fixture(scope="module")
def service(
    router_file: Any, encoder: SentenceTransformer, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> Iterator[ServerThread]:
    settings = router_settings(router_file, *upstreams, admin_token=TOKEN)
    with running_router(settings, encoder) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstreams: tuple[FakeUpstream, FakeUpstream], service: ServerThread) -> None:
    for upstream in upstreams:
        upstream.reset()
    put = httpx.put(f"{service.url}/admin/cascade/threshold", json={"value": 0.0}, headers=ADMIN)
    assert put.status_code == 200


@pytest.fixture
def client(service: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key="sk-client", max_retries=0) as sdk:
        yield sdk


def test_agreeing_edge_answers_are_kept(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    edge, cloud = upstreams
    edge.answers[:] = AGREE

    raw = client.chat.completions.with_raw_response.create(
        model="router-cascade", messages=MESSAGES
    )
    answer = raw.parse()

    headers = raw.headers
    assert (headers["x-dars-mode"], headers["x-dars-decision"], headers["x-dars-k"]) == (
        "cascade",
        "keep",
        "3",
    )
    assert (headers["x-dars-route"], headers["x-dars-reason"]) == ("edge", "cascade")
    assert (headers["x-dars-entropy"], headers["x-dars-meaning"]) == ("0.000000", "number")
    assert answer.choices[0].message.content == AGREE[0]
    assert answer.usage is not None and answer.usage.prompt_tokens == 3 * PROMPT_TOKENS
    assert sorted(r.body["seed"] for r in edge.requests) == [0, 1, 2]
    assert all(r.headers["authorization"] == f"Bearer {EDGE_KEY}" for r in edge.requests)
    assert cloud.requests == []


def test_disagreeing_edge_answers_escalate_to_the_cloud(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    edge, cloud = upstreams
    edge.answers[:] = DISAGREE

    raw = client.chat.completions.with_raw_response.create(
        model="router-cascade", messages=MESSAGES
    )

    assert raw.parse().choices[0].message.content == "Hello from cloud."
    assert (raw.headers["x-dars-decision"], raw.headers["x-dars-route"]) == ("escalate", "cloud")
    assert raw.headers["x-dars-entropy"] == "1.000000"
    assert len(edge.requests) == 3 and len(cloud.requests) == 1
    assert "seed" not in cloud.requests[0].body  # the client's request, as sent


@pytest.mark.parametrize(("answers", "decision"), [(AGREE, "keep"), (DISAGREE, "escalate")])
def test_streams_after_the_decision(
    client: openai.OpenAI,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    answers: list[str],
    decision: str,
) -> None:
    edge, _ = upstreams
    edge.answers[:] = answers

    headers, text, usage = stream_chat(
        client,
        model="router-cascade",
        messages=MESSAGES,
        stream_options={"include_usage": True},
    )
    assert headers["x-dars-decision"] == decision
    assert headers["content-type"].startswith("text/event-stream")
    if decision == "keep":
        assert text == answers[0]
        assert [u.completion_tokens for u in usage] == [3 * 7]
    else:
        assert text == "Hello from cloud."
        assert [u.prompt_tokens for u in usage] == [PROMPT_TOKENS]


@pytest.mark.parametrize(
    ("answers", "decision"), [(SAME_MEANING, "keep"), (DIFFERENT_MEANINGS, "escalate")]
)
def test_free_text_answers_are_grouped_by_embedding(
    client: openai.OpenAI,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    answers: list[str],
    decision: str,
) -> None:
    upstreams[0].answers[:] = answers
    raw = client.chat.completions.with_raw_response.create(
        model="router-cascade", messages=[{"role": "user", "content": "Capital of France?"}]
    )
    assert raw.headers["x-dars-meaning"] == "embedding"
    assert raw.headers["x-dars-decision"] == decision


def test_per_request_and_admin_thresholds(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream], service: ServerThread
) -> None:
    upstreams[0].answers[:] = ["The answer is 4.", "The answer is 5.", "Answer: 4"]  # 2 of 3

    def decision(model: str) -> str:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        return raw.headers["x-dars-decision"]

    assert decision("router-cascade") == "escalate"
    assert decision("router-cascade-0.6") == "keep"
    put = httpx.put(f"{service.url}/admin/cascade/threshold", json={"value": 0.6}, headers=ADMIN)
    assert put.json()["value"] == 0.6 and put.json()["source"] == "operator"
    assert decision("router-cascade") == "keep"
    state = httpx.get(f"{service.url}/admin/cascade/threshold", headers=ADMIN).json()
    assert state["k"] == 3 and state["live_entropies"] >= 3
    calibrate = httpx.post(
        f"{service.url}/admin/cascade/threshold/calibrate", json={"cloud_share": 0.3}, headers=ADMIN
    )
    assert calibrate.status_code == 400
    assert calibrate.json()["error"]["code"] == "calibration_unavailable"


def test_tools_fall_back_to_the_trained_router(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    edge, _ = upstreams
    tools: Any = [{"type": "function", "function": {"name": "add", "parameters": {}}}]

    raw = client.chat.completions.with_raw_response.create(
        model="router-cascade", messages=MESSAGES, tools=tools
    )

    # Score 0.5 < threshold 0.7: the router keeps it on the edge, which gets the tools.
    assert raw.headers["x-dars-cascade-skipped"] == "tools"
    assert (raw.headers["x-dars-route"], raw.headers["x-dars-reason"]) == ("edge", "threshold")
    assert "x-dars-decision" not in raw.headers and raw.headers["x-dars-k"] == "0"
    assert len(edge.requests) == 1 and edge.requests[0].body["tools"] == tools


def test_dry_runs_and_bad_thresholds_are_client_errors(
    client: openai.OpenAI, service: ServerThread
) -> None:
    dry = httpx.post(
        f"{service.url}/v1/route", json={"model": "router-cascade", "messages": MESSAGES}
    )
    assert (dry.status_code, dry.json()["error"]["code"]) == (400, "cascade_not_routable")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="router-cascade-2", messages=MESSAGES)
    assert bad.value.code == "invalid_threshold"


def test_metrics_count_cascade_decisions(
    client: openai.OpenAI, upstreams: tuple[FakeUpstream, FakeUpstream], service: ServerThread
) -> None:
    upstreams[0].answers[:] = AGREE
    client.chat.completions.create(model="router-cascade", messages=MESSAGES)
    text = httpx.get(f"{service.url}/metrics").text
    assert 'dars_cascade_decisions_total{decision="keep"}' in text
    assert "dars_cascade_edge_samples_total" in text
    assert 'dars_latency_seconds_count{stage="cascade"}' in text
    assert "dars_cascade_entropy_bucket" in text


def test_the_server_default_mode_makes_router_the_cascade(
    router_file: Any, encoder: SentenceTransformer, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    upstreams[0].answers[:] = AGREE
    settings = router_settings(router_file, *upstreams, routing_mode="cascade", cascade_k=2)
    with running_router(settings, encoder) as server:
        answer = httpx.post(
            f"{server.url}/v1/chat/completions", json={"model": "router", "messages": MESSAGES}
        )
        routed = httpx.post(
            f"{server.url}/v1/chat/completions", json={"model": "router-0.3", "messages": MESSAGES}
        )
    assert (answer.headers["x-dars-mode"], answer.headers["x-dars-k"]) == ("cascade", "2")
    assert "x-dars-mode" not in routed.headers and routed.headers["x-dars-route"] == "cloud"
