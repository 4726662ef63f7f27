"""Replicas sharing router reloads through one real Redis (app/shared_router.py).

Real routers under uvicorn on loopback, one ``redis-server``, fake upstreams. A reload on one
replica (through the live loop's own client) is loaded by the other and by a replica started
later; a file another replica cannot serve is rejected there, once; Redis down fails nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest
from helpers.onnx_routers import make_linear_router
from helpers.quality_routers import make_quality_router
from helpers.redis_server import RedisServer
from integration.upstream_server import (
    FakeUpstream,
    router_settings,
    running_router,
    upstreams_yaml,
)
from prometheus_client.parser import text_string_to_metric_families

from app.settings import Settings
from app.shared_router import ROUTER_KEY
from router_models.live.reload import reload_service
from router_models.live.state import file_sha256

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TOKEN = "admin-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
BOUND_S = 10.0  # a hang guard, not a latency claim
REFRESH_S = 0.3


@pytest.fixture
def files(tmp_path: Path, redis_server: RedisServer) -> dict[str, Path]:
    """Two linear routers with different weights and defaults."""
    redis_server.flush()
    rng = np.random.default_rng(11)
    return {
        name: make_linear_router(
            tmp_path / f"{name}.onnx",
            weights=rng.normal(size=384).astype(np.float32),
            default_threshold=default,
        )
        for name, default in (("first", 0.5), ("promoted", 0.3))
    }


def _settings(
    router: Path,
    redis_server: RedisServer,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    upstreams_file: Path | None = None,
) -> Settings:
    edge, cloud = upstreams
    settings: Settings = router_settings(
        router,
        edge,
        cloud,
        admin_token=TOKEN,
        redis_url=redis_server.url,
        shared_refresh_s=REFRESH_S,
        redis_breaker_reset_s=0.5,
        upstreams_file=upstreams_file,
    )
    return settings


def _ready(url: str) -> dict[str, object]:
    reply = httpx.get(f"{url}/readyz", timeout=5)
    reply.raise_for_status()
    router: dict[str, object] = reply.json()["router"]
    return router


def _rejected(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "dars_router_reloads_total" and sample.labels["result"] == "rejected"
    )


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {BOUND_S} s")
        time.sleep(0.02)


def test_a_reload_reaches_the_other_replica_and_one_started_later(
    files: dict[str, Path],
    redis_server: RedisServer,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    encoder: SentenceTransformer,
) -> None:
    settings = _settings(files["first"], redis_server, upstreams)
    promoted = str(files["promoted"])
    with running_router(settings, encoder) as a, running_router(settings, encoder) as b:
        assert _ready(b.url)["path"] == str(files["first"])
        reload_service(a.url, TOKEN, files["promoted"])  # what the live loop's promotion calls
        assert _ready(a.url)["path"] == promoted
        _wait_for(lambda: _ready(b.url)["path"] == promoted, "b loads the promoted file")
        assert _ready(b.url)["threshold"] == 0.3  # the reload rule ran there: the new default
        with redis_server.client() as client:
            stored = client.get(ROUTER_KEY)
        assert stored is not None
        assert json.loads(stored)["sha256"] == file_sha256(files["promoted"])
        assert _rejected(b.url) == 0
    with running_router(settings, encoder) as c:  # configured with the first file
        assert _ready(c.url)["path"] == promoted
        assert _ready(c.url)["threshold"] == 0.3


def test_a_file_another_replica_cannot_serve_is_rejected_there_once(
    files: dict[str, Path],
    tmp_path: Path,
    redis_server: RedisServer,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    encoder: SentenceTransformer,
) -> None:
    # A serves a third upstream that B lacks: a router knowing it fits A, not B.
    edge, cloud = upstreams
    extra = tmp_path / "upstreams.yaml"
    extra.write_text(upstreams_yaml({"edge": edge, "cloud": cloud, "extra": cloud}))
    three = make_quality_router(
        tmp_path / "three.onnx", (0.2, 0.9, 0.5), ("edge", "cloud", "extra")
    )
    settings_b = _settings(files["first"], redis_server, upstreams)
    settings_a = _settings(files["first"], redis_server, upstreams, upstreams_file=extra)
    with running_router(settings_a, encoder) as a, running_router(settings_b, encoder) as b:
        reply = httpx.post(
            f"{a.url}/admin/router/reload", json={"path": str(three)}, headers=AUTH, timeout=30
        )
        assert reply.status_code == 200, reply.text
        _wait_for(lambda: _rejected(b.url) == 1, "b rejects the file")
        assert _ready(b.url)["path"] == str(files["first"])  # its old router keeps serving
        time.sleep(4 * REFRESH_S)  # several re-reads of the same stored change
        assert _rejected(b.url) == 1  # remembered, not retried
        # A later reload it can serve is taken.
        reload_service(a.url, TOKEN, files["promoted"])
        _wait_for(lambda: _ready(b.url)["path"] == str(files["promoted"]), "b loads it")
        assert _rejected(a.url) == 0


def test_redis_down_the_reload_holds_locally_and_is_announced_later(
    files: dict[str, Path],
    redis_server: RedisServer,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    encoder: SentenceTransformer,
    kill_redis: Callable[[], None],
) -> None:
    settings = _settings(files["first"], redis_server, upstreams)
    with running_router(settings, encoder) as a:
        kill_redis()
        reload_service(a.url, TOKEN, files["promoted"])
        assert _ready(a.url)["path"] == str(files["promoted"])
        redis_server.start()
        with redis_server.client() as client:
            _wait_for(lambda: client.get(ROUTER_KEY) is not None, "the reload is written back")
            stored = client.get(ROUTER_KEY)
        assert stored is not None
        assert json.loads(stored)["path"] == str(files["promoted"].absolute())
