"""The confidence cascade with a K-model router and upstreams that are not named edge and cloud.

The real ``openai`` SDK against the router on loopback, three fake upstreams from an upstreams
file (small, medium, large: cheapest first) and a contract-v2 router predicting qualities
0.3 / 0.6 / 0.9 for every query. Two paths ask the trained router instead of sampling: the gate
(escalation score = 1 - predicted quality of the bottom rung = 0.7) and the requests the cascade
declines (tools), which the utility decides exactly as for ``model="router"``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from helpers.quality_routers import make_quality_router
from integration.upstream_server import (
    FakeUpstream,
    ServerThread,
    fake_upstreams,
    router_settings,
    running_router,
    upstreams_yaml,
)

from app.main import build_services
from app.scoring import RouterLoadError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

NAMES = ("small", "medium", "large")
QUALITIES = (0.3, 0.6, 0.9)
PRICES = {"small": 0.0, "medium": 1.0, "large": 10.0}  # unit costs 0 / 0.1 / 1
MESSAGES: Any = [{"role": "user", "content": "What is 2 + 2?"}]
ADMIN_TOKEN = "cascade-admin-token"
TOOLS: Any = [
    {
        "type": "function",
        "function": {"name": "add", "parameters": {"type": "object", "properties": {}}},
    }
]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    with fake_upstreams(NAMES) as started:
        yield started


@pytest.fixture(autouse=True)
def _fresh(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


def _serve(
    root: Path, fakes: dict[str, FakeUpstream], encoder: SentenceTransformer, **overrides: Any
) -> Any:
    make_quality_router(root / "quality.onnx", QUALITIES, NAMES)
    fields = {
        name: {"price_input_per_mtok": p, "price_output_per_mtok": p} for name, p in PRICES.items()
    }
    (root / "upstreams.yaml").write_text(upstreams_yaml(fakes, fields))
    settings = router_settings(
        root / "quality.onnx",
        fakes["small"],
        fakes["large"],
        upstreams_file=root / "upstreams.yaml",
        **overrides,
    )
    return running_router(settings, encoder)


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    fakes: dict[str, FakeUpstream],
    encoder: SentenceTransformer,
) -> Iterator[ServerThread]:
    with _serve(tmp_path_factory.mktemp("cascade-n-way"), fakes, encoder) as server:
        yield server


@pytest.fixture(scope="module")
def gated(
    tmp_path_factory: pytest.TempPathFactory,
    fakes: dict[str, FakeUpstream],
    encoder: SentenceTransformer,
) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("cascade-n-way-gate")
    with _serve(root, fakes, encoder, cascade_gate=0.65, admin_token=ADMIN_TOKEN) as server:
        yield server


def _sdk(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-client", max_retries=0)


def test_a_declined_request_is_routed_by_utility_like_model_router(
    service: ServerThread, fakes: dict[str, FakeUpstream]
) -> None:
    with _sdk(service) as client:
        plain = client.chat.completions.with_raw_response.create(
            model="router", messages=MESSAGES, tools=TOOLS
        )
        cascade = client.chat.completions.with_raw_response.create(
            model="router-cascade", messages=MESSAGES, tools=TOOLS
        )

    assert cascade.headers["x-dars-cascade-skipped"] == "tools"
    assert cascade.headers["x-dars-reason"] == "utility"
    assert cascade.headers["x-dars-route"] == plain.headers["x-dars-route"]
    assert cascade.headers["x-dars-threshold"] == plain.headers["x-dars-threshold"]
    assert cascade.headers["x-dars-quality"] == plain.headers["x-dars-quality"]
    route = cascade.headers["x-dars-route"]
    assert cascade.parse().model == f"{route}-model"
    assert len(fakes[route].requests) == 2


def test_the_gate_reads_one_minus_the_bottom_rungs_quality(
    gated: ServerThread, fakes: dict[str, FakeUpstream]
) -> None:
    with _sdk(gated) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="router-cascade", messages=MESSAGES
        )

    assert (raw.headers["x-dars-reason"], raw.headers["x-dars-route"]) == ("gate", "large")
    assert float(raw.headers["x-dars-score"]) == pytest.approx(1 - QUALITIES[0], abs=1e-5)
    assert raw.headers["x-dars-k"] == "0"
    assert fakes["small"].requests == [] and fakes["medium"].requests == []
    assert len(fakes["large"].requests) == 1


def test_a_gate_on_a_router_without_the_bottom_rung_is_refused_at_start_up(
    tmp_path: Path, fakes: dict[str, FakeUpstream], encoder: SentenceTransformer
) -> None:
    """The gate reads the bottom rung's predicted quality: a router without it cannot gate."""
    router = make_quality_router(tmp_path / "no-small.onnx", QUALITIES[1:], NAMES[1:])
    fields = {n: {"price_input_per_mtok": p, "price_output_per_mtok": p} for n, p in PRICES.items()}
    (tmp_path / "upstreams.yaml").write_text(upstreams_yaml(fakes, fields))
    settings = router_settings(
        router,
        fakes["small"],
        fakes["large"],
        upstreams_file=tmp_path / "upstreams.yaml",
        cascade_gate=0.5,
    )

    async def start() -> None:
        async with AsyncExitStack() as stack:
            await build_services(settings, stack, encoder=encoder)

    with pytest.raises(RouterLoadError, match="predicts no quality for upstream 'small'"):
        asyncio.run(start())


def test_a_gate_refuses_reloading_a_router_without_the_bottom_rung(
    tmp_path: Path, gated: ServerThread
) -> None:
    router = make_quality_router(tmp_path / "no-small.onnx", QUALITIES[1:], NAMES[1:])
    response = httpx.post(
        f"{gated.url}/admin/router/reload",
        json={"path": str(router)},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "router_load_failed"
    assert "bottom rung" in response.json()["error"]["message"]
