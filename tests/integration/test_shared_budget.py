"""The shadow caps shared through a real Redis: two budgets on one server stand for two
replicas. They share the day's USD and the per-minute window, atomically; a new UTC day starts
from zero; a Redis that does not answer refuses every shadow call (fail closed), and a charge
made meanwhile is written once it answers again. The running service writes its shadow spend
to Redis when ``DARS_REDIS_URL`` is set."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from helpers.onnx_routers import make_linear_router
from integration.conftest import RedisServer
from integration.upstream_server import FakeUpstream, router_settings, running_router
from prometheus_client import CollectorRegistry

from app.live.metrics import LiveMetrics
from app.live.shared_budget import CALLS_KEY, USD_KEY_PREFIX, RedisShadowBudget

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DAY_S = 86_400.0


class Clock:
    """Wall time to start with, stepped by the tests."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


Factory = Callable[..., RedisShadowBudget]


@pytest.fixture
async def budgets(redis_server: RedisServer, clock: Clock) -> AsyncIterator[Factory]:
    """``make(usd, calls, metrics=None, failures=3)``: one more replica's budget on the Redis."""
    redis_server.flush()
    made: list[RedisShadowBudget] = []

    def make(
        usd: float, calls: int, metrics: LiveMetrics | None = None, failures: int = 3
    ) -> RedisShadowBudget:
        budget = RedisShadowBudget(
            redis_server.url,
            usd,
            calls,
            timeout_s=0.5,
            breaker_failures=failures,
            breaker_reset_s=60.0,
            metrics=metrics,
            clock=clock,
        )
        made.append(budget)
        return budget

    yield make
    for budget in made:
        await budget.aclose()


async def test_two_replicas_share_the_days_usd(budgets: Factory) -> None:
    a, b = budgets(0.01, 100), budgets(0.01, 100)
    assert await a.reserve() == 0.0 and await b.reserve() == 0.0
    a.charge(0.006)
    b.charge(0.006)  # each under the cap alone: per-process caps would let both go on
    await a.flush()
    await b.flush()
    assert await a.reserve() is None and await b.reserve() is None
    assert not a.can_spend() and not b.can_spend()  # submit's quick check learnt it too


async def test_two_replicas_share_the_per_minute_window_atomically(
    budgets: Factory, clock: Clock
) -> None:
    a, b = budgets(1.0, 5), budgets(1.0, 5)
    waits = await asyncio.gather(*(budget.reserve() for budget in [a, b] * 6))
    assert waits.count(0.0) == 5  # five slots, whichever replica asked
    assert all(w == pytest.approx(60.0, abs=0.01) for w in waits if w != 0.0)
    clock.now += 30
    assert await b.reserve() == pytest.approx(30.0, abs=0.01)
    clock.now += 30
    assert await b.reserve() == 0.0  # the first minute's starts left the window


async def test_a_new_utc_day_starts_from_zero(
    budgets: Factory, clock: Clock, redis_server: RedisServer
) -> None:
    a = budgets(0.01, 100)
    a.charge(0.02)
    await a.flush()
    assert await a.reserve() is None
    yesterday = USD_KEY_PREFIX + time.strftime("%Y-%m-%d", time.gmtime(clock.now))
    clock.now = (clock.now // DAY_S + 1) * DAY_S  # next UTC midnight
    assert a.can_spend()
    assert await a.reserve() == 0.0
    with redis_server.client() as client:
        assert 0 < client.ttl(yesterday) <= 2 * DAY_S  # old days expire by themselves
        assert client.zcard(CALLS_KEY) == 1


async def test_an_unreachable_redis_refuses_every_shadow_call_and_keeps_the_charge(
    budgets: Factory, redis_server: RedisServer, kill_redis: Callable[[], None]
) -> None:
    registry = CollectorRegistry()
    a = budgets(1.0, 100, metrics=LiveMetrics(registry), failures=100)
    assert await a.reserve() == 0.0
    kill_redis()
    a.charge(0.25)  # the call that was running when Redis went away
    assert await a.reserve() is None
    assert await a.reserve() is None
    assert a.can_spend()  # no I/O: jobs still queue, and are refused at their first call

    def failed(op: str) -> float | None:
        return registry.get_sample_value("dars_shadow_budget_unavailable_total", {"op": op})

    assert failed("reserve") == 2 and failed("charge") == 1
    redis_server.start()  # back, empty
    assert await a.reserve() == 0.0
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time()))
    with redis_server.client() as client:
        assert float(client.get(USD_KEY_PREFIX + day) or 0) == pytest.approx(0.25)


def test_the_service_spends_through_the_shared_budget(
    tmp_path: Path,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    redis_server: RedisServer,
    encoder: SentenceTransformer,
) -> None:
    redis_server.flush()
    judge = FakeUpstream("judge", answers=["Rating: [[8]]"]).start()
    settings = router_settings(
        make_linear_router(tmp_path / "router.onnx", bias=-10.0),
        *upstreams,
        live_store=f"sqlite:///{tmp_path / 'live.db'}",
        redis_url=redis_server.url,
        shadow_rate=1.0,
        shadow_judge_base_url=judge.base_url,
        shadow_judge_model="judge-model",
        shadow_edge_samples=0,
        shadow_cloud_samples=1,
    )
    day = USD_KEY_PREFIX + time.strftime("%Y-%m-%d", time.gmtime())
    try:
        with running_router(settings, encoder) as server, redis_server.client() as client:
            body = {"model": "router", "messages": [{"role": "user", "content": "2+2?"}]}
            assert httpx.post(f"{server.url}/v1/chat/completions", json=body).status_code == 200
            deadline = time.monotonic() + 20
            # served grade, the cloud answer and its grade: three calls
            while client.zcard(CALLS_KEY) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            calls = client.zcard(CALLS_KEY)
            while client.get(day) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            spent = float(client.get(day) or 0)
    finally:
        judge.stop()
    assert calls == 3
    assert spent > 0
