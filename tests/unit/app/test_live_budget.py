"""The per-process shadow caps as the sampler sees them (ShadowCaps), and which caps a
service builds: its own without Redis, shared with ``DARS_REDIS_URL``."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from app.live.budget import ShadowBudget
from app.live.shared_budget import RedisShadowBudget, build_shadow_budget
from app.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_reserve_takes_a_slot_then_says_how_long_to_wait() -> None:
    clock = Clock()
    budget = ShadowBudget(1.0, 2, clock=clock)
    assert [await budget.reserve(), await budget.reserve()] == [0.0, 0.0]
    assert await budget.reserve() == pytest.approx(60.0)  # a wait takes no slot
    clock.now += 60
    assert await budget.reserve() == 0.0


async def test_reserve_refuses_when_the_day_is_spent_or_calls_are_off() -> None:
    clock = Clock()
    budget = ShadowBudget(0.01, 100, clock=clock)
    budget.charge(0.02)
    assert await budget.reserve() is None
    clock.now += 86_400
    assert await budget.reserve() == 0.0
    assert await ShadowBudget(1.0, 0, clock=clock).reserve() is None


async def test_a_service_shares_its_caps_only_with_a_redis_url() -> None:
    local = Settings(_env_file=None, shadow_budget_usd_per_day=2.0)  # type: ignore[call-arg]
    assert isinstance(build_shadow_budget(local), ShadowBudget)
    shared = build_shadow_budget(
        local.model_copy(update={"redis_url": SecretStr("redis://127.0.0.1:1/0")})
    )
    assert isinstance(shared, RedisShadowBudget) and shared.usd_per_day == 2.0
    await shared.aclose()  # nothing was charged: no connection is ever made
