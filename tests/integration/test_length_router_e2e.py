"""End to end with a two-input router (``embedding`` + ``query_length``): the real ``openai`` SDK
against the service on a loopback port, real encoder, fake upstreams.

The router ignores the embedding (zero weights) and scores ``sigmoid(-5 + 0.05 * length)``,
so with the threshold 0.5 a query of 100 characters or more goes to the cloud. The service cuts
queries to ``DARS_QUERY_MAX_CHARS`` (200 here) and the router sees that length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import openai
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
    from sentence_transformers import SentenceTransformer

CLIENT_KEY = "sk-client-key"
BIAS, LENGTH_WEIGHT, MAX_CHARS = -5.0, 0.05, 200
SHORT = "What is the capital of France?"
LONG = (
    "A farmer has 17 sheep, buys 3 times as many goats as sheep, then sells half of the goats "
    "and a third of the sheep rounded down. How many animals does the farmer have now?"
)


def expected_score(text: str) -> float:
    return 1.0 / (1.0 + math.exp(-(BIAS + LENGTH_WEIGHT * min(len(text), MAX_CHARS))))


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    encoder: SentenceTransformer,
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> Iterator[ServerThread]:
    router = make_linear_router(
        tmp_path_factory.mktemp("router") / "router.onnx",
        bias=BIAS,
        length_weight=LENGTH_WEIGHT,
        default_threshold=0.5,
    )
    settings = router_settings(router, *upstreams, query_max_chars=MAX_CHARS)
    with running_router(settings, encoder) as server:
        yield server


@pytest.mark.parametrize(
    ("text", "route", "upstream_model"),
    [(SHORT, "edge", EDGE_MODEL), (LONG, "cloud", CLOUD_MODEL)],
    ids=["short-to-edge", "long-to-cloud"],
)
def test_length_decides_the_route(
    service: ServerThread,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    text: str,
    route: str,
    upstream_model: str,
) -> None:
    for upstream in upstreams:
        upstream.reset()
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key=CLIENT_KEY, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="router", messages=[{"role": "user", "content": text}]
        )

    assert raw.headers["x-dars-route"] == route
    assert float(raw.headers["x-dars-score"]) == pytest.approx(expected_score(text), abs=1e-5)
    served = dict(zip(("edge", "cloud"), upstreams, strict=True))[route]
    assert [r.body["model"] for r in served.requests] == [upstream_model]


def test_the_router_sees_the_truncated_length(service: ServerThread) -> None:
    text = "word " * 1000  # 5,000 characters, cut to MAX_CHARS before scoring
    response = httpx.post(
        f"{service.url}/v1/route",
        json={"model": "router", "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        timeout=30.0,
    )

    assert response.status_code == 200
    assert response.json()["score"] == pytest.approx(expected_score(text), abs=1e-5)
    assert expected_score(text) < 1.0 / (1.0 + math.exp(-(BIAS + LENGTH_WEIGHT * len(text))))
