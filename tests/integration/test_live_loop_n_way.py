"""The K-model live loop end to end: serve, shadow-grade, retrain, gate by AIQ, hot-reload.

Three fake OpenAI upstreams on loopback (``small``, ``medium``, ``large``) from an upstreams
file with prices and ``router_id``'s; the real service with a deliberately poor contract-v2
router (it predicts the cheap ``small`` model best for every query, so everything goes there),
a SQLite live store, prompts kept, every request shadow-sampled on all three upstreams and
graded by a user grader (``helpers.n_way_live:grade``: every model answers the short easy
questions, only ``large`` the long multi-step ones). Real prompts go through the real
``openai`` SDK; then the real ``dars-train live retrain`` reads the store, trains a
``knn_quality`` candidate, gates it by AIQ with the paired bootstrap bound and promotes it
through ``POST /admin/router/reload``: the next hard prompt goes to ``large``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
from helpers.n_way_live import EASY, HARD, NEW_EASY, NEW_HARD
from helpers.polling import until
from helpers.quality_routers import make_quality_router
from integration.upstream_server import fake_upstreams, running_router, upstreams_yaml
from pydantic import SecretStr

from app.settings import Settings
from router_models.cli import main
from router_models.live.records import Grade, LiveRecord
from router_models.live.state import file_sha256
from router_models.live.store import SqliteStore
from router_models.promotion import onnx_models

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

KEY, ADMIN = "client-key", "admin-token-n-way-loop"
NAMES = ("small", "medium", "large")
ROUTER_IDS = {"small": "smollm2-135m", "medium": "qwen2.5-1.5b", "large": "gpt-4o"}
PRICES = {"small": (0.05, 0.1), "medium": (0.5, 1.5), "large": (2.5, 10.0)}  # in, out per 1M
DECODES = 1  # extra shadow decodes per upstream and request, besides the graded served answer


def _ask(client: openai.OpenAI, prompt: str) -> tuple[str, str]:
    """One routed chat completion through the SDK: (request id, upstream that served it)."""
    raw = client.chat.completions.with_raw_response.create(
        model="router", messages=[{"role": "user", "content": prompt}]
    )
    assert raw.parse().choices[0].message.content
    return raw.headers["x-request-id"], raw.headers["x-dars-route"]


def _rows(db: Path) -> tuple[list[LiveRecord], list[Grade]]:
    store = SqliteStore(db)
    try:
        return list(store.records()), list(store.grades())
    finally:
        store.close()


def _retrain(
    db: Path, state: Path, serving: Path, url: str, *gate: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One turn of the real CLI against the store and the running service: its gate line and
    its last decision."""
    assert main([
        "live", "retrain", "--store", f"sqlite:///{db}", "--state-dir", str(state),
        "--serving", str(serving), "--url", url, "--admin-token", ADMIN,
        "--holdout", "0.3", "--min-queries", "8", "--param", "n_neighbors=5", *gate,
    ]) == 0  # fmt: skip
    lines = [json.loads(line) for line in (state / "decisions.jsonl").read_text().splitlines()]
    gates = [d for d in lines if d["event"] == "gate"]
    assert gates, lines
    return dict(gates[-1]), dict(lines[-1])


def _settings(tmp_path: Path, upstreams_text: str, serving: Path, db: Path) -> Settings:
    (tmp_path / "upstreams.yaml").write_text(upstreams_text)
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        router_model=serving,
        upstreams_file=tmp_path / "upstreams.yaml",
        onnx_providers="cpu",
        onnx_threads=1,
        api_keys=SecretStr(KEY),
        admin_token=SecretStr(ADMIN),
        live_store=SecretStr(f"sqlite:///{db}"),
        record_prompts=True,
        shadow_rate=1.0,
        shadow_samples=",".join(f"{name}={DECODES}" for name in NAMES),
        shadow_judge="grader",
        shadow_grader="helpers.n_way_live:grade",
        shadow_calls_per_minute=100_000,  # the default 30 a minute would pace this test
    )


def _interleaved(a: Sequence[str], b: Sequence[str]) -> list[str]:
    return [p for pair in zip_longest(a, b) for p in pair if p is not None]


def test_k_model_loop_promotes_a_better_router_by_aiq_and_the_service_routes_by_it(
    tmp_path: Path, encoder: SentenceTransformer
) -> None:
    db, state = tmp_path / "live.db", tmp_path / "loop"
    # The poor serving router: small 0.9, medium 0.6, large 0.3 for every query.
    serving = make_quality_router(
        tmp_path / "serving.onnx", (0.9, 0.6, 0.3), [ROUTER_IDS[n] for n in NAMES]
    )
    prompts = _interleaved(EASY, HARD)
    with fake_upstreams(NAMES) as fakes:
        fields: dict[str, dict[str, object]] = {
            name: {
                "router_id": ROUTER_IDS[name],
                "price_input_per_mtok": PRICES[name][0],
                "price_output_per_mtok": PRICES[name][1],
            }
            for name in NAMES
        }
        settings = _settings(tmp_path, upstreams_yaml(fakes, fields), serving, db)
        with (
            running_router(settings, encoder) as server,
            openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as client,
        ):
            served = dict(_ask(client, prompt) for prompt in prompts)
            assert set(served.values()) == {"small"}  # the poor router sends everything there

            # Served answer + one decode per upstream, each graded, for every request.
            expected = len(prompts) * (1 + DECODES * len(NAMES))
            records, grades = until(lambda: _rows(db), lambda rows: len(rows[1]) >= expected, 60.0)
            assert len(grades) == expected and {r.request_id for r in records} == set(served)
            assert {g.model for g in grades} == set(ROUTER_IDS.values())  # the router ids
            assert {r.router_sha256 for r in records} == {file_sha256(serving)}

            # A gate that asks for an impossible AIQ gain refuses; the service is untouched.
            refused, _ = _retrain(db, state, serving, server.url, "--aiq-margin", "1.0")
            assert (refused["verdict"], refused["reason"]) == ("refuse", "within-margin")
            assert not (state / "state.json").exists()
            assert httpx.get(f"{server.url}/readyz").json()["router"]["path"] == str(serving)

            gate, last = _retrain(db, state, serving, server.url, "--aiq-margin", "0.1")
            assert (gate["verdict"], gate["reason"]) == ("promote", "better-by-margin"), gate
            assert (last["event"], last.get("reloaded")) == ("promote", True), last
            saved = json.loads((state / "state.json").read_text())
            ready = httpx.get(f"{server.url}/readyz").json()["router"]
            knob = httpx.get(
                f"{server.url}/admin/threshold", headers={"Authorization": f"Bearer {ADMIN}"}
            ).json()
            request_id, route = _ask(client, NEW_HARD)
            _, easy_route = _ask(client, NEW_EASY)
            records, _ = until(
                lambda: _rows(db), lambda rows: len(rows[0]) >= len(prompts) + 2, 60.0
            )
            metrics = httpx.get(f"{server.url}/metrics").text

    assert gate["metric"] == "AIQ" and gate["models"] == [ROUTER_IDS[n] for n in NAMES]
    assert gate["serving"]["sha256"] == file_sha256(serving)
    assert gate["candidate"]["aiq"] >= gate["serving"]["aiq"] + 0.1
    assert 0 < gate["delta_lower"] <= gate["delta"] and gate["n_resamples"] == 1000
    assert gate["n_queries"] >= 8 and gate["n_train_queries"] > 0
    # Promoted: a new v2 file reloaded by the service, the old one kept as the previous.
    assert saved["previous"] == str(serving) and saved["serving"] != str(serving)
    assert ready["path"] == saved["serving"] and ready["router"] == "knn_quality"
    assert onnx_models(saved["serving"]) == (tuple(ROUTER_IDS[n] for n in NAMES), True)  # v2
    assert knob["value"] == 0.0 and set(knob["upstream_costs_usd"]) == set(NAMES)
    assert f'dars_live_router_version{{sha256="{saved["serving_sha256"]}"}} 1.0' in metrics
    # The next prompts, never seen in training: the hard one goes to the model that can answer
    # it, the easy one still to the cheapest (the candidate routes by prompt, not by brand).
    assert (route, easy_route) == ("large", "small")
    record = next(r for r in records if r.request_id == request_id)
    assert (record.router, record.router_sha256) == (saved["serving"], saved["serving_sha256"])
    assert record.model_id == ROUTER_IDS["large"]
