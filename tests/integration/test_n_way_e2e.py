"""N-way routing end to end: the real ``openai`` SDK against the router in front of three fake
upstreams from an upstreams file, with a contract-v2 router file (``quality`` outputs).

The router predicts qualities 0.3 / 0.6 / 0.9 for small / medium / large whatever the text;
prices make unit costs 0 / 0.1 / 1, so (app.utility) large wins while lambda < 1/3 (knob
t < 0.25), medium while lambda < 3 (t < 0.75), small above.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import openai
import pytest
from helpers.quality_routers import make_quality_router
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

from app.main import build_services
from app.scoring import RouterLoadError
from app.settings import Settings
from app.utility import choices, knob_for_spend

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

NAMES = ("small", "medium", "large")
QUALITIES = (0.3, 0.6, 0.9)
PRICES = {"small": 0.0, "medium": 1.0, "large": 10.0}  # USD per 1M tokens, in and out
ADMIN = {"Authorization": "Bearer admin-secret"}
KEY_ENV = "DARS_TEST_LARGE_KEY"
LARGE_KEY = "sk-large-upstream-secret"
MESSAGES = [{"role": "user", "content": "Prove that there are infinitely many primes."}]


def upstreams_file(fakes: dict[str, FakeUpstream], failover: str = "") -> str:
    """Every fake at its price; ``large`` with its API key from ``KEY_ENV``."""
    fields: dict[str, dict[str, object]] = {
        name: {"price_input_per_mtok": price, "price_output_per_mtok": price}
        for name, price in PRICES.items()
    }
    fields["large"]["api_key_env"] = KEY_ENV
    return upstreams_yaml(fakes, fields, failover)


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    with fake_upstreams(NAMES) as started:
        yield started


@pytest.fixture(autouse=True)
def _fresh(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, fakes: dict[str, FakeUpstream]) -> Path:
    root = tmp_path_factory.mktemp("n-way")
    make_quality_router(root / "quality.onnx", QUALITIES, NAMES)
    (root / "upstreams.yaml").write_text(
        upstreams_file(fakes, "failover: [large, medium, small]\n")
    )
    return root


def settings_for(
    files: Path, fakes: dict[str, FakeUpstream], router: Path | None = None
) -> Settings:
    # The fakes' edge/cloud settings are ignored: the file configures every upstream.
    return router_settings(
        router or files / "quality.onnx",
        fakes["small"],
        fakes["large"],
        upstreams_file=files / "upstreams.yaml",
        admin_token="admin-secret",
    )


@pytest.fixture(scope="module")
def service(
    files: Path, fakes: dict[str, FakeUpstream], encoder: SentenceTransformer
) -> Iterator[ServerThread]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, LARGE_KEY)
        with running_router(settings_for(files, fakes), encoder) as server:
            yield server


@pytest.fixture
def client(service: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key="x", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def admin(service: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, headers=ADMIN, timeout=30) as http:
        http.put("/admin/threshold", json={"value": 0.0}).raise_for_status()
        yield http
        http.put("/admin/threshold", json={"value": 0.0}).raise_for_status()


def test_the_highest_utility_answers_with_quality_and_runner_up(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="router", messages=MESSAGES)
    reply = raw.parse()

    assert reply.choices[0].message.content == "Hello from large."
    headers = raw.headers
    assert headers["x-dars-route"] == "large"
    assert headers["x-dars-model"] == "large-model"
    assert headers["x-dars-reason"] == "utility"
    assert float(headers["x-dars-quality"]) == pytest.approx(0.9, abs=1e-5)
    assert headers["x-dars-runner-up"] == "medium"
    assert headers["x-dars-threshold"] == "0.000000"  # the server knob: best quality
    assert "x-dars-score" not in headers
    sent = fakes["large"].requests[0]
    assert sent.body["model"] == "large-model"
    assert sent.headers["authorization"] == f"Bearer {LARGE_KEY}"  # from the env var
    assert not fakes["small"].requests and not fakes["medium"].requests


@pytest.mark.parametrize(
    ("model", "route", "runner_up"),
    [
        ("router-0.1", "large", "medium"),
        ("router-0.5", "medium", "small"),
        ("router-0.9", "small", "medium"),
        ("router-1", "small", "medium"),
        ("medium-model", "medium", None),  # forced by name, no scoring
    ],
)
def test_the_knob_per_request(
    client: openai.OpenAI, model: str, route: str, runner_up: str | None
) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)

    assert raw.parse().choices[0].message.content == f"Hello from {route}."
    assert raw.headers["x-dars-route"] == route
    assert raw.headers.get("x-dars-runner-up") == runner_up


def test_streaming_goes_to_the_chosen_upstream(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    headers, text, _ = stream_chat(client, model="router-0.5", messages=MESSAGES)

    assert headers["x-dars-route"] == "medium"
    assert headers["x-dars-model"] == "medium-model"
    assert text == "Hello from medium."
    assert fakes["medium"].streams_completed == 1


def test_failover_follows_the_configured_order_across_three(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["large"].always = "500"
    fakes["medium"].always = "500"

    raw = client.chat.completions.with_raw_response.create(model="router", messages=MESSAGES)

    assert raw.parse().choices[0].message.content == "Hello from small."
    assert (raw.headers["x-dars-route"], raw.headers["x-dars-reason"]) == ("small", "fallback")
    assert raw.headers["x-dars-model"] == "small-model"
    assert "x-dars-quality" not in raw.headers  # the prediction was large's
    assert [len(fakes[n].requests) for n in NAMES] == [1, 2, 2]  # retries=1 on 5xx


def test_when_all_three_fail_the_error_names_each(
    client: openai.OpenAI, fakes: dict[str, FakeUpstream]
) -> None:
    for fake in fakes.values():
        fake.always = "500"

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="router", messages=MESSAGES, stream=True)

    message = str(caught.value)
    assert caught.value.status_code == 502
    assert message.index("large (") < message.index("medium (") < message.index("small (")


def test_the_server_knob_from_the_admin_api(client: openai.OpenAI, admin: httpx.Client) -> None:
    put = admin.put("/admin/threshold", json={"value": 0.9})
    state = admin.get("/admin/threshold").json()
    raw = client.chat.completions.with_raw_response.create(model="router", messages=MESSAGES)

    assert put.status_code == 200
    assert state["mode"] == "utility"
    assert state["value"] == 0.9 and state["source"] == "operator"
    assert state["tradeoff_lambda"] == pytest.approx(9.0)
    assert set(state["upstream_costs_usd"]) == set(NAMES)
    assert raw.headers["x-dars-route"] == "small"
    assert raw.headers["x-dars-threshold"] == "0.900000"


def test_a_cloud_share_is_refused_for_a_k_model_router(admin: httpx.Client) -> None:
    response = admin.post("/admin/threshold/calibrate", json={"cloud_share": 0.3})

    assert response.status_code == 400
    assert "usd_per_1k_requests" in response.json()["error"]["message"]


def test_spend_calibration_from_live_traffic(
    service: ServerThread, client: openai.OpenAI, admin: httpx.Client
) -> None:
    # A fresh router: the live window restarts (on a reload of the same file too).
    admin.post("/admin/router/reload", json={}).raise_for_status()
    early = admin.post("/admin/threshold/calibrate", json={"usd_per_1k_requests": 0.02})
    assert early.status_code == 400
    assert early.json()["error"]["code"] == "calibration_unavailable"
    assert "live traffic only" in early.json()["error"]["message"]

    for _ in range(50):  # at knob 0 every request goes to large and is recorded
        client.chat.completions.create(model="router", messages=MESSAGES)
    # Each upstream's cost per request: its price x the running token averages (11 in, 7 out).
    per_request = {
        name: (PROMPT_TOKENS + COMPLETION_TOKENS) * p / 1e6 for name, p in PRICES.items()
    }
    state = admin.get("/admin/threshold").json()
    assert state["usd_per_1k_requests"] == pytest.approx(per_request["large"] * 1000)
    assert state["upstream_costs_usd"] == pytest.approx(per_request)

    calibrated = admin.post("/admin/threshold/calibrate", json={"usd_per_1k_requests": 0.02})
    raw = client.chat.completions.with_raw_response.create(model="router", messages=MESSAGES)

    assert calibrated.status_code == 200, calibrated.text
    body = calibrated.json()
    assert body["source"] == "calibrated"
    assert body["usd_per_1k_requests"] == pytest.approx(per_request["medium"] * 1000)  # <= 0.02
    assert 0.0 < body["value"] < 0.75
    assert raw.headers["x-dars-route"] == "medium"


# Predicted qualities of the file's calibration queries: large is worth its price on a third.
CALIBRATION_ROWS = [[0.3, 0.6, 0.9], [0.5, 0.55, 0.6], [0.2, 0.25, 0.3]] * 20


def test_spend_calibration_from_the_files_calibration_data_before_traffic(
    tmp_path: Path, files: Path, admin: httpx.Client
) -> None:
    router = make_quality_router(
        tmp_path / "calibrated.onnx", QUALITIES, NAMES, calibration=CALIBRATION_ROWS
    )
    try:
        admin.post("/admin/router/reload", json={"path": str(router)}).raise_for_status()
        costs_by_name = admin.get("/admin/threshold").json()["upstream_costs_usd"]
        cost = np.asarray([costs_by_name[name] for name in NAMES])
        rows = np.asarray(CALIBRATION_ROWS)
        target = 0.5 * (cost[1] + cost[2]) * 1000  # between all medium and all large

        calibrated = admin.post("/admin/threshold/calibrate", json={"usd_per_1k_requests": target})

        assert calibrated.status_code == 200, calibrated.text
        body = calibrated.json()
        knob = body["value"]
        assert body["source"] == "calibrated"
        assert knob == pytest.approx(knob_for_spend(rows, cost, target / 1000))
        spend = float(cost[choices(rows, cost, knob)].mean()) * 1000
        assert spend <= target + 1e-12
        assert body["usd_per_1k_requests"] == pytest.approx(spend)
        assert 0.0 < knob < 1.0

        # A reload keeps the spend target: the knob is recalibrated on the new file's rows.
        other_rows = [[0.1, 0.7, 0.95], [0.4, 0.45, 0.9]] * 30
        other = make_quality_router(
            tmp_path / "other.onnx", QUALITIES, NAMES, calibration=other_rows
        )
        admin.post("/admin/router/reload", json={"path": str(other)}).raise_for_status()
        after = admin.get("/admin/threshold").json()
        assert after["source"] == "calibrated"
        expected = knob_for_spend(np.asarray(other_rows), cost, target / 1000)
        assert after["value"] == pytest.approx(expected)
        assert after["value"] != pytest.approx(knob)
    finally:
        admin.post(
            "/admin/router/reload", json={"path": str(files / "quality.onnx")}
        ).raise_for_status()
    # A file without calibration data cannot hold the spend: its default, as the reload rule says.
    assert admin.get("/admin/threshold").json()["source"] == "default"
    # Back on the file without calibration data and no traffic since: the existing error.
    again = admin.post("/admin/threshold/calibrate", json={"usd_per_1k_requests": target})
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "calibration_unavailable"


def test_models_lists_every_upstream(service: ServerThread) -> None:
    listed = httpx.get(f"{service.url}/v1/models").json()["data"]

    assert [m["id"] for m in listed][2:] == ["small-model", "medium-model", "large-model"]
    assert [m["owned_by"] for m in listed][2:] == list(NAMES)


def test_route_dry_run_says_quality_and_runner_up(service: ServerThread) -> None:
    body = {"model": "router-0.5", "messages": MESSAGES}
    decision = httpx.post(f"{service.url}/v1/route", json=body).json()

    assert decision["route"] == "medium" and decision["model"] == "medium-model"
    assert decision["reason"] == "utility" and decision["score"] is None
    assert decision["quality"] == pytest.approx(0.6, abs=1e-5)
    assert decision["runner_up"] == "small"


# --- start-up and reload checks


def test_a_router_model_without_an_upstream_is_refused_at_start_up(
    tmp_path: Path,
    files: Path,
    fakes: dict[str, FakeUpstream],
    encoder: SentenceTransformer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, LARGE_KEY)
    router = make_quality_router(tmp_path / "four.onnx", (0.1, 0.2, 0.3, 0.4), (*NAMES, "gpt-5"))
    settings = settings_for(files, fakes, router)

    async def start() -> None:
        async with AsyncExitStack() as stack:
            await build_services(settings, stack, encoder=encoder)

    with pytest.raises(RouterLoadError, match=r"\['gpt-5'\] that no configured upstream serves"):
        asyncio.run(start())


def test_a_router_model_without_an_upstream_is_refused_on_reload(
    tmp_path: Path, admin: httpx.Client
) -> None:
    router = make_quality_router(tmp_path / "two.onnx", (0.1, 0.2), ("small", "gpt-5"))

    response = admin.post("/admin/router/reload", json={"path": str(router)})

    assert response.status_code == 400
    assert "'gpt-5'" in response.json()["error"]["message"]
    assert admin.get("/admin/threshold").json()["mode"] == "utility"  # the old one serves


def test_a_two_model_router_needs_an_edge_and_a_cloud(
    tmp_path: Path,
    files: Path,
    fakes: dict[str, FakeUpstream],
    encoder: SentenceTransformer,
) -> None:
    from helpers.onnx_routers import make_linear_router

    router = make_linear_router(tmp_path / "score.onnx")
    settings = settings_for(files, fakes, router)

    async def start() -> None:
        async with AsyncExitStack() as stack:
            await build_services(settings, stack, encoder=encoder)

    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, LARGE_KEY)
        with pytest.raises(RouterLoadError, match="named 'edge' and 'cloud'"):
            asyncio.run(start())
