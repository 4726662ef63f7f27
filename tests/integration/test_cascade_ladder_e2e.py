"""The confidence cascade climbing a three-rung ladder end to end: the real ``openai`` SDK against
the router on loopback, in front of three fake upstreams from an upstreams file (edge, mid,
cloud: cheapest first) whose answers differ by seed; real encoder, a tiny two-model ONNX router.

Rungs 0 and 1 are sampled k = 3 times each; the top rung (cloud) is never sampled: it answers
the forwarded request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from helpers.onnx_routers import make_linear_router
from integration.upstream_server import (
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    FakeUpstream,
    ServerThread,
    fake_upstreams,
    router_settings,
    running_router,
    stream_chat,
    upstreams_yaml,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

NAMES = ("edge", "mid", "cloud")
TOKEN = "ladder-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
MESSAGES: Any = [{"role": "user", "content": "What is 2 + 2?"}]
AGREE = ["The answer is 4.", "2 + 2 = 4. #### 4", "So the answer is 4"]
MID_AGREE = ["The answer is 5.", "#### 5", "So the answer is 5"]
DISAGREE = ["The answer is 4.", "The answer is 5.", "The answer is 22."]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    with fake_upstreams(NAMES) as started:
        yield started


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    fakes: dict[str, FakeUpstream],
    encoder: SentenceTransformer,
) -> Iterator[ServerThread]:
    root: Path = tmp_path_factory.mktemp("ladder")
    router = make_linear_router(root / "router.onnx", bias=0.0, default_threshold=0.7)
    (root / "upstreams.yaml").write_text(upstreams_yaml(fakes))
    settings = router_settings(
        router,
        fakes["edge"],
        fakes["cloud"],
        upstreams_file=root / "upstreams.yaml",
        admin_token=TOKEN,
    )
    with running_router(settings, encoder) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fakes: dict[str, FakeUpstream], service: ServerThread) -> None:
    for fake in fakes.values():
        fake.reset()
    put = httpx.put(f"{service.url}/admin/cascade/threshold", json={"value": 0.0}, headers=ADMIN)
    assert put.status_code == 200


@pytest.fixture
def client(service: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key="sk-client", max_retries=0) as sdk:
        yield sdk


def _create(client: openai.OpenAI) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="router-cascade", messages=MESSAGES
    )


def test_rung_0_agreeing_keeps_its_answer_and_asks_no_one_else(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["edge"].answers[:] = AGREE

    raw = _create(client)

    headers = raw.headers
    assert raw.parse().choices[0].message.content == AGREE[0]
    assert (headers["x-dars-decision"], headers["x-dars-route"], headers["x-dars-rung"]) == (
        "keep",
        "edge",
        "edge",
    )
    assert (headers["x-dars-k"], headers["x-dars-entropy"]) == ("3", "0.000000")
    assert len(fakes["edge"].requests) == 3
    assert fakes["mid"].requests == [] and fakes["cloud"].requests == []


def test_rung_0_unsure_rung_1_agreeing_keeps_rung_1s_answer(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["edge"].answers[:] = DISAGREE
    fakes["mid"].answers[:] = MID_AGREE

    raw = _create(client)
    answer = raw.parse()

    headers = raw.headers
    assert answer.choices[0].message.content == MID_AGREE[0]
    assert answer.model == "mid-model"
    assert (headers["x-dars-decision"], headers["x-dars-route"], headers["x-dars-rung"]) == (
        "keep",
        "mid",
        "mid",
    )
    assert (headers["x-dars-reason"], headers["x-dars-k"]) == ("cascade", "6")
    assert headers["x-dars-entropy"] == "0.000000"  # the deciding rung's
    assert answer.usage is not None and answer.usage.prompt_tokens == 6 * PROMPT_TOKENS
    assert sorted(r.body["seed"] for r in fakes["mid"].requests) == [0, 1, 2]
    assert all(r.body["model"] == "mid-model" for r in fakes["mid"].requests)
    assert len(fakes["edge"].requests) == 3 and fakes["cloud"].requests == []


def test_every_sampled_rung_unsure_the_top_rung_answers(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream], service: ServerThread
) -> None:
    fakes["edge"].answers[:] = DISAGREE
    fakes["mid"].answers[:] = DISAGREE

    raw = _create(client)

    headers = raw.headers
    assert raw.parse().choices[0].message.content == "Hello from cloud."
    assert (headers["x-dars-decision"], headers["x-dars-route"], headers["x-dars-rung"]) == (
        "escalate",
        "cloud",
        "cloud",
    )
    assert (headers["x-dars-k"], headers["x-dars-entropy"]) == ("6", "1.000000")
    assert headers["x-dars-model"] == "cloud-model"
    assert len(fakes["edge"].requests) == 3 and len(fakes["mid"].requests) == 3
    assert len(fakes["cloud"].requests) == 1
    assert "seed" not in fakes["cloud"].requests[0].body  # the client's request, as sent
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'dars_cascade_samples_total{upstream="mid"}' in metrics


@pytest.mark.parametrize(
    ("mid", "text", "rung"),
    [(MID_AGREE, MID_AGREE[0], "mid"), (DISAGREE, "Hello from cloud.", "cloud")],
)
def test_streams_the_answer_of_the_rung_that_decided(
    client: openai.OpenAI,
    fakes: dict[str, FakeUpstream],
    mid: list[str],
    text: str,
    rung: str,
) -> None:
    fakes["edge"].answers[:] = DISAGREE
    fakes["mid"].answers[:] = mid

    headers, streamed, usage = stream_chat(
        client,
        model="router-cascade",
        messages=MESSAGES,
        stream_options={"include_usage": True},
    )
    assert streamed == text
    assert (headers["x-dars-rung"], headers["x-dars-route"], headers["x-dars-k"]) == (
        rung,
        rung,
        "6",
    )
    assert headers["content-type"].startswith("text/event-stream")
    if rung == "mid":  # the kept answer's usage: all six samples
        assert [u.completion_tokens for u in usage] == [6 * COMPLETION_TOKENS]
    else:  # the top rung's own answer
        assert [u.prompt_tokens for u in usage] == [PROMPT_TOKENS]
