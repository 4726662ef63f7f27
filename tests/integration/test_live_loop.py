"""The live loop in the running service: records off the request path, shadow sampling with a
slow judge and over an upstreams file, feedback (auth, idempotency, 404), the store across a
restart and two replicas.

Real app under uvicorn, real encoder and ONNX router, fake OpenAI upstreams (edge, cloud and a
judge) on loopback, the real openai SDK as the client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from helpers.onnx_routers import make_linear_router
from helpers.polling import until
from helpers.quality_routers import make_quality_router
from integration.conftest import RedisServer
from integration.upstream_server import (
    FakeUpstream,
    fake_upstreams,
    router_settings,
    running_router,
    upstreams_yaml,
)

from app.settings import Settings
from router_models.live.export import store_observations
from router_models.live.store import LiveStore, RedisStore, SqliteStore

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

KEY = "client-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def judge() -> Iterator[FakeUpstream]:
    """A judge that takes 1.5 s per verdict and rates every answer 8 of 10."""
    server = FakeUpstream("judge", hang_s=1.5, always="hang", answers=["Rating: [[8]]"]).start()
    yield server
    server.stop()


@pytest.fixture
def router_file(tmp_path: Path) -> Path:
    return make_linear_router(tmp_path / "router.onnx", bias=-10.0)  # everything to the edge


def _settings(router: Path, ups: tuple[FakeUpstream, FakeUpstream], store: str, **kw: Any) -> Any:
    return router_settings(router, *ups, live_store=store, record_prompts=True, api_keys=KEY, **kw)


def _chat(url: str, text: str = "What is 2+2?") -> tuple[str, float]:
    """One chat completion through the openai SDK: (request id, seconds)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model="router", messages=[{"role": "user", "content": text}]
    )
    elapsed = time.perf_counter() - started
    assert raw.parse().choices[0].message.content
    return raw.headers["x-request-id"], elapsed


def _grades(store: LiveStore) -> list[Any]:
    return list(store.grades())


def test_a_slow_judge_never_slows_a_request_and_grades_land_in_the_store(
    tmp_path: Path,
    router_file: Path,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    judge: FakeUpstream,
    encoder: SentenceTransformer,
) -> None:
    db = tmp_path / "live.db"
    settings = _settings(
        router_file,
        upstreams,
        f"sqlite:///{db}",
        shadow_rate=1.0,
        shadow_judge_base_url=judge.base_url,
        shadow_judge_model="judge-model",
        shadow_edge_samples=2,
        shadow_cloud_samples=1,
    )
    with running_router(settings, encoder) as server:
        request_id, elapsed = _chat(server.url)
        _, second_elapsed = _chat(server.url, "Name a prime number.")
        assert elapsed < 1.0 and second_elapsed < 1.0  # each verdict takes 1.5 s
        store = SqliteStore(db)
        grades = until(lambda: _grades(store), lambda g: len(g) >= 4, 30.0)
        metrics = httpx.get(f"{server.url}/metrics").text
    mine = sorted((g.model, g.sample_id, g.served) for g in grades if g.request_id == request_id)
    assert mine == [
        ("cloud-model", 1, False),
        ("edge-model", 0, True),  # the answer the user got
        ("edge-model", 1, False),
        ("edge-model", 2, False),
    ]
    assert {round(g.score, 6) for g in grades} == {round(7 / 9, 6)}
    assert all("Rating" in r.body["messages"][0]["content"] for r in judge.requests)
    record = store.get_record(request_id)
    assert record is not None and record.prompt == "What is 2+2?" and record.route == "edge"
    assert record.prompt_tokens == 11 and record.cost_usd is not None and record.cost_usd > 0
    assert 'dars_shadow_requests_total{result="sampled"} 2.0' in metrics
    assert "dars_live_router_version{sha256=" in metrics
    store.close()


def test_feedback_auth_idempotency_unknown_ids_and_restart(
    tmp_path: Path,
    router_file: Path,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    encoder: SentenceTransformer,
) -> None:
    db = tmp_path / "live.db"
    settings = _settings(router_file, upstreams, f"sqlite:///{db}")
    with running_router(settings, encoder) as server:
        request_id, _ = _chat(server.url)
        post = f"{server.url}/v1/feedback"
        body = {"request_id": request_id, "thumbs": "up"}
        assert httpx.post(post, json=body).status_code == 401
        wrong = httpx.post(post, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"]
        first = httpx.post(post, json=body, headers=AUTH)
        assert first.status_code == 200, first.text
        assert first.json() == {
            "request_id": request_id,
            "score": 1.0,
            "source": "thumbs",
            "replaced": False,
        }
        again = httpx.post(post, json={"request_id": request_id, "score": 0.2}, headers=AUTH)
        assert again.json()["replaced"] is True
        unknown = httpx.post(post, json={"request_id": "nope", "score": 1}, headers=AUTH)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "request_not_found"
        both = {"request_id": request_id, "score": 1, "thumbs": "up"}
        assert httpx.post(post, json=both, headers=AUTH).status_code == 400
        out_of_range = {"request_id": request_id, "score": 1.5}
        assert httpx.post(post, json=out_of_range, headers=AUTH).status_code == 400
    # A new process on the same file: the record and the feedback survived.
    with running_router(settings, encoder) as server:
        later = httpx.post(
            f"{server.url}/v1/feedback",
            json={"request_id": request_id, "thumbs": "down"},
            headers=AUTH,
        )
        assert later.status_code == 200 and later.json()["replaced"] is True
    store = SqliteStore(db)
    assert [(f.request_id, f.score) for f in store.feedback()] == [(request_id, 0.0)]
    store.close()


def test_feedback_without_a_store_is_503(
    router_file: Path, upstreams: tuple[FakeUpstream, FakeUpstream], encoder: SentenceTransformer
) -> None:
    settings = router_settings(router_file, *upstreams)
    with running_router(settings, encoder) as server:
        response = httpx.post(f"{server.url}/v1/feedback", json={"request_id": "abc", "score": 1.0})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "live_store_disabled"


def test_two_replicas_share_one_redis_store(
    router_file: Path,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    redis_server: RedisServer,
    encoder: SentenceTransformer,
) -> None:
    redis_server.flush()
    settings = _settings(router_file, upstreams, redis_server.url)
    with running_router(settings, encoder) as a, running_router(settings, encoder) as b:
        urls = [a.url, b.url] * 10
        with ThreadPoolExecutor(4) as pool:
            ids = [rid for rid, _ in pool.map(lambda u: _chat(u, f"q {u}"), urls)]
        store = RedisStore(redis_server.url)
        records = until(lambda: list(store.records()), lambda r: len(r) >= 20, 20.0)
        assert {r.request_id for r in records} == set(ids)
        # Feedback through the other replica finds a record the first one wrote.
        cross = httpx.post(
            f"{b.url}/v1/feedback", json={"request_id": ids[0], "score": 0.5}, headers=AUTH
        )
        assert cross.status_code == 200, cross.text
    # A restarted replica (new process state) still sees everything.
    with running_router(settings, encoder) as c:
        again = httpx.post(
            f"{c.url}/v1/feedback", json={"request_id": ids[1], "score": 1.0}, headers=AUTH
        )
        assert again.status_code == 200
    assert len(list(store.feedback())) == 2
    store.close()


def test_shadow_grades_of_every_upstream_in_a_file_land_in_the_store(
    tmp_path: Path, encoder: SentenceTransformer
) -> None:
    names = ("small", "medium", "large")
    judge = FakeUpstream("judge", answers=["Rating: [[8]]"]).start()
    with fake_upstreams(names) as fakes:
        prices = {"small": 0.0, "medium": 1.0, "large": 10.0}
        fields: dict[str, dict[str, object]] = {
            name: {"price_input_per_mtok": price, "price_output_per_mtok": price}
            for name, price in prices.items()
        }
        fields["large"]["router_id"] = "large-v2"
        (tmp_path / "upstreams.yaml").write_text(upstreams_yaml(fakes, fields))
        db = tmp_path / "live.db"
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            router_model=make_quality_router(
                tmp_path / "quality.onnx", (0.3, 0.6, 0.9), ("small-model", "medium", "large-v2")
            ),
            upstreams_file=tmp_path / "upstreams.yaml",
            onnx_providers="cpu",
            onnx_threads=1,
            live_store=f"sqlite:///{db}",
            record_prompts=True,
            api_keys=KEY,
            shadow_rate=1.0,
            shadow_samples="small=2",  # medium and large: DARS_SHADOW_CLOUD_SAMPLES (1)
            shadow_judge_base_url=judge.base_url,
            shadow_judge_model="judge-model",
        )
        try:
            with running_router(settings, encoder) as server:
                request_id, _ = _chat(server.url)
                store = SqliteStore(db)
                grades = until(lambda: _grades(store), lambda g: len(g) >= 5, 30.0)
        finally:
            judge.stop()
    got = sorted((g.upstream, g.model, g.sample_id, g.served) for g in grades)
    served = next(g.upstream for g in grades if g.served)
    assert served == "large"  # the router's best quality at the default knob
    assert got == [
        ("large", "large-v2", 0, True),
        ("large", "large-v2", 1, False),
        ("medium", "medium-model", 1, False),
        ("small", "small-model", 1, False),
        ("small", "small-model", 2, False),
    ]
    assert all(g.request_id == request_id for g in grades)
    rows = store_observations(store)
    assert {o.model for o in rows} == {"small-model", "medium-model", "large-v2"}
    store.close()
