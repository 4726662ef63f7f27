"""The chat client against a real loopback server that fails on purpose."""

from __future__ import annotations

import asyncio
import time

import pytest
from fake_llm_server import FakeLLM

from router_models.collect.client import (
    ChatClient,
    CollectError,
    Endpoint,
    RateLimiter,
    RetriesExhausted,
    RetryPolicy,
    UpstreamRejected,
    Usage,
)

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
MESSAGES = [{"role": "user", "content": "What is two plus two?"}]


def _endpoint(fake: FakeLLM, **kwargs: object) -> Endpoint:
    options: dict[str, object] = {"name": "edge", "base_url": fake.base_url, "timeout": 5.0}
    options.update(kwargs)
    return Endpoint(**options)  # type: ignore[arg-type]


async def test_429_then_500_then_ok_is_retried_to_success(fake_llm: FakeLLM) -> None:
    fake_llm.faults = ["429", "500"]
    async with ChatClient(_endpoint(fake_llm), retry=FAST) as client:
        completion = await client.chat(MESSAGES, seed=5)
    assert completion.attempts == 3
    assert completion.text == "Let me think. The answer is 2."
    assert len(fake_llm.bodies) == 3
    assert all(b["seed"] == 5 and b["stream"] is False for b in fake_llm.bodies)


async def test_timeout_is_retried(fake_llm: FakeLLM) -> None:
    fake_llm.faults = ["hang"]
    fake_llm.hang_s = 2.0
    async with ChatClient(_endpoint(fake_llm, timeout=0.3), retry=FAST) as client:
        completion = await client.chat(MESSAGES)
    assert completion.attempts == 2
    assert len(fake_llm.bodies) == 2


async def test_persistent_failure_exhausts_retries(fake_llm: FakeLLM) -> None:
    fake_llm.faults = ["500"] * 10
    async with ChatClient(_endpoint(fake_llm), retry=FAST) as client:
        with pytest.raises(RetriesExhausted) as info:
            await client.chat(MESSAGES)
    assert len(fake_llm.bodies) == FAST.max_attempts
    assert "HTTP 500" in str(info.value.__cause__)


async def test_client_error_is_not_retried(fake_llm: FakeLLM) -> None:
    fake_llm.faults = ["400"]
    async with ChatClient(_endpoint(fake_llm), retry=FAST) as client:
        with pytest.raises(UpstreamRejected) as info:
            await client.chat(MESSAGES)
    assert info.value.status_code == 400
    assert len(fake_llm.bodies) == 1


async def test_refused_connection_is_retried_then_reported(fake_llm: FakeLLM) -> None:
    endpoint = Endpoint(name="down", base_url="http://127.0.0.1:9/v1", timeout=1.0)
    async with ChatClient(endpoint, retry=FAST) as client:
        with pytest.raises(RetriesExhausted):
            await client.chat(MESSAGES)


async def test_usage_cost_and_api_key(fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_COLLECT_KEY", "sk-test")
    endpoint = _endpoint(
        fake_llm, model="served-name", api_key_env="TEST_COLLECT_KEY", price_in=1.0, price_out=2.0
    )
    async with ChatClient(endpoint, retry=FAST) as client:
        completion = await client.chat(MESSAGES, temperature=0.7, max_tokens=12)
    body = fake_llm.bodies[0]
    assert body["model"] == "served-name"
    assert body["temperature"] == 0.7 and body["max_tokens"] == 12
    assert fake_llm.authorizations == ["Bearer sk-test"]
    assert completion.usage == Usage(prompt_tokens=5, completion_tokens=7)
    assert completion.cost == pytest.approx((5 * 1.0 + 7 * 2.0) / 1e6)
    assert completion.finish_reason == "stop"


def test_missing_api_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_COLLECT_ABSENT", raising=False)
    endpoint = Endpoint(
        name="x", base_url="http://127.0.0.1:9/v1", api_key_env="TEST_COLLECT_ABSENT"
    )
    with pytest.raises(CollectError, match="TEST_COLLECT_ABSENT"):
        endpoint.api_key()


async def test_concurrency_limit_holds(fake_llm: FakeLLM) -> None:
    fake_llm.delay_s = 0.1
    async with ChatClient(_endpoint(fake_llm, max_concurrency=2), retry=FAST) as client:
        await asyncio.gather(*(client.chat(MESSAGES, seed=i) for i in range(6)))
    assert len(fake_llm.bodies) == 6
    assert fake_llm.max_in_flight <= 2


def test_retry_after_header_wins_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=10.0)
    assert policy.delay(1, retry_after=2.5) == 2.5
    assert policy.delay(1, retry_after=99.0) == 10.0
    assert 0.0 <= policy.delay(3) <= 4.0


async def test_rate_limiter_spaces_request_starts() -> None:
    limiter = RateLimiter(rate=1000.0)
    before = time.monotonic()
    for _ in range(3):
        await limiter.acquire()
    # Each start is scheduled 1/rate after the previous one: the next free slot is at least
    # three intervals after the first start.
    assert limiter._next >= before + 3 / 1000.0
    unlimited = RateLimiter(rate=None)
    await unlimited.acquire()
    assert unlimited._next == 0.0
