"""Replicas sharing one real Redis: the threshold and the calibration window hold everywhere.

Two (then three) real routers under uvicorn on loopback, one Redis, fake upstreams. The router
file has no calibration, so a replica can only calibrate on scores when it sees the other
replica's through Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest
from helpers.onnx_routers import make_linear_router
from helpers.redis_server import RedisServer
from integration.upstream_server import FakeUpstream, router_settings, running_router

from app.policy import MIN_LIVE_SCORES
from app.settings import Settings
from app.shared import CASCADE_PREFIX, SCORES_KEY, THRESHOLD_KEY

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TOKEN = "admin-secret"
HANG_GUARD_S = 30.0  # bounds a wait so that a broken feature fails instead of hanging
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    upstreams: tuple[FakeUpstream, FakeUpstream],
) -> Iterator[Settings]:
    weights = np.random.default_rng(7).normal(size=384).astype(np.float32)
    router = make_linear_router(
        tmp_path_factory.mktemp("router") / "router.onnx",
        weights=weights * 2,
        default_threshold=0.5,
        metadata={"dars.calibration": None},
    )
    redis_server.flush()
    edge, cloud = upstreams
    yield router_settings(
        router,
        edge,
        cloud,
        admin_token=TOKEN,
        redis_url=redis_server.url,
        shared_refresh_s=0.5,
        redis_breaker_reset_s=0.5,
    )
    redis_server.flush()


def _threshold(url: str) -> dict[str, object]:
    reply = httpx.get(f"{url}/admin/threshold", headers=AUTH, timeout=5)
    reply.raise_for_status()
    data: dict[str, object] = reply.json()
    return data


def _cascade_threshold(url: str) -> dict[str, object]:
    reply = httpx.get(f"{url}/admin/cascade/threshold", headers=AUTH, timeout=5)
    reply.raise_for_status()
    data: dict[str, object] = reply.json()
    return data


def _wait_for(check: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``check()`` holds; fails the test after ``timeout_s``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"not within {timeout_s} s")
        time.sleep(0.02)
    return time.monotonic() - started


def _chat(url: str, text: str) -> httpx.Response:
    body = {"model": "router", "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)


def test_put_holds_on_every_replica_and_survives_a_restart(
    settings: Settings, encoder: SentenceTransformer
) -> None:
    with running_router(settings, encoder) as a, running_router(settings, encoder) as b:
        reply = httpx.put(f"{a.url}/admin/threshold", json={"value": 0.23}, headers=AUTH)
        assert reply.status_code == 200
        took = _wait_for(lambda: _threshold(b.url)["value"] == 0.23, timeout_s=HANG_GUARD_S)
        assert _threshold(b.url)["source"] == "operator"
        assert _chat(b.url, "hello there").headers["x-dars-threshold"] == "0.230000"
        print(f"\nPUT on one replica seen by the other after {took * 1000:.0f} ms")
    with running_router(settings, encoder) as restarted:
        assert _threshold(restarted.url)["value"] == 0.23  # the shared one, not the default 0.5


def test_calibration_uses_every_replicas_scores(
    settings: Settings, encoder: SentenceTransformer, redis_server: RedisServer
) -> None:
    with running_router(settings, encoder) as a, running_router(settings, encoder) as b:
        for number in range(MIN_LIVE_SCORES + 10):
            assert _chat(a.url, f"question number {number} about topic {number * 7}").is_success
        with redis_server.client() as client:
            _wait_for(
                lambda: client.llen(SCORES_KEY) >= MIN_LIVE_SCORES + 10, timeout_s=HANG_GUARD_S
            )
        # b has scored nothing itself and the router file has no calibration.
        reply = httpx.post(
            f"{b.url}/admin/threshold/calibrate", json={"cloud_share": 0.5}, headers=AUTH
        )
        assert reply.status_code == 200, reply.text
        value = reply.json()["value"]
        assert 0.0 < value < 1.0
        _wait_for(lambda: _threshold(a.url)["value"] == value, timeout_s=HANG_GUARD_S)
        assert _threshold(a.url)["source"] == "calibrated"


def test_redis_down_fails_nothing_and_the_change_is_written_back(
    settings: Settings, encoder: SentenceTransformer, kill_redis: Callable[[], None],
    redis_server: RedisServer,
) -> None:  # fmt: skip
    with running_router(settings, encoder) as a:
        kill_redis()
        reply = httpx.put(f"{a.url}/admin/threshold", json={"value": 0.61}, headers=AUTH)
        assert reply.status_code == 200 and reply.json()["value"] == 0.61
        for number in range(5):
            assert _chat(a.url, f"while redis is down {number}").status_code == 200
        redis_server.start()
        with redis_server.client() as client:
            _wait_for(lambda: client.get(THRESHOLD_KEY) is not None, timeout_s=HANG_GUARD_S)
            stored = client.get(THRESHOLD_KEY)
        assert stored is not None and b'"value": 0.61' in stored
        assert _threshold(a.url)["value"] == 0.61  # not replaced by anything older


def test_the_cascade_threshold_holds_on_every_replica_and_calibrates_on_all_entropies(
    settings: Settings, encoder: SentenceTransformer, redis_server: RedisServer
) -> None:
    """The cascade's entropy threshold is shared like the router's, under its own keys."""
    with running_router(settings, encoder) as a, running_router(settings, encoder) as b:
        reply = httpx.put(f"{a.url}/admin/cascade/threshold", json={"value": 0.37}, headers=AUTH)
        assert reply.status_code == 200
        _wait_for(lambda: _cascade_threshold(b.url)["value"] == 0.37, timeout_s=HANG_GUARD_S)
        assert _cascade_threshold(b.url)["source"] == "operator"
        assert _threshold(b.url)["value"] == 0.5  # the router's threshold is another key

        for number in range(MIN_LIVE_SCORES + 5):  # sampled on a: its entropies go to Redis
            body = {
                "model": "router-cascade",
                "messages": [{"role": "user", "content": f"q{number}"}],
            }
            assert httpx.post(f"{a.url}/v1/chat/completions", json=body, timeout=10).is_success
        with redis_server.client() as client:
            _wait_for(
                lambda: client.llen(f"{CASCADE_PREFIX}:scores") >= MIN_LIVE_SCORES + 5,
                timeout_s=HANG_GUARD_S,
            )
        # b sampled nothing itself: it calibrates on a's entropies, and a follows
        calibrated = httpx.post(
            f"{b.url}/admin/cascade/threshold/calibrate", json={"cloud_share": 0.5}, headers=AUTH
        )
        assert calibrated.status_code == 200, calibrated.text
        value = calibrated.json()["value"]
        _wait_for(lambda: _cascade_threshold(a.url)["value"] == value, timeout_s=HANG_GUARD_S)
        assert _cascade_threshold(a.url)["source"] == "calibrated"
