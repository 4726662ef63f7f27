"""Cache keys, the memory LRU, the circuit breaker, and a Redis client facing a closed port."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from app.cache import (
    CACHE_KEY_PREFIX,
    CircuitBreaker,
    EmbeddingCache,
    MemoryCache,
    RedisCache,
    build_cache,
    cache_key,
)
from app.metrics import Metrics
from app.settings import Settings


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def cache_count(metrics: Metrics, backend: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "dars_cache_requests_total", {"backend": backend, "result": result}
    )
    return value or 0.0


# --- keys


def test_cache_key_is_a_prefixed_sha256() -> None:
    key = cache_key("m", "hello")

    assert key.startswith(CACHE_KEY_PREFIX)
    digest = key.removeprefix(CACHE_KEY_PREFIX)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert "hello" not in key


def test_cache_key_depends_on_model_and_text() -> None:
    keys = {
        cache_key("model-a", "hello"),
        cache_key("model-b", "hello"),
        cache_key("model-a", "hello "),
        cache_key("model-ahello", ""),  # the separator keeps (id, text) pairs apart
        cache_key("model-a", ""),
    }

    assert len(keys) == 5
    assert cache_key("model-a", "hello") == cache_key("model-a", "hello")


def test_cache_key_accepts_lone_surrogates() -> None:
    assert cache_key("m", "bad \ud800 text") != cache_key("m", "bad  text")


# --- memory LRU


async def test_memory_cache_round_trip_and_metrics() -> None:
    metrics = Metrics()
    cache = MemoryCache(10, metrics=metrics)

    assert await cache.get("k") is None
    await cache.set("k", vec(1, 2, 3))
    got = await cache.get("k")

    assert got is not None
    np.testing.assert_array_equal(got, vec(1, 2, 3))
    assert got.dtype == np.float32
    assert cache_count(metrics, "memory", "miss") == 1
    assert cache_count(metrics, "memory", "hit") == 1
    assert isinstance(cache, EmbeddingCache)


async def test_memory_cache_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(2)
    await cache.set("a", vec(1))
    await cache.set("b", vec(2))
    assert await cache.get("a") is not None  # "a" is now the most recent

    await cache.set("c", vec(3))

    assert len(cache) == 2
    assert await cache.get("b") is None
    assert await cache.get("a") is not None
    assert await cache.get("c") is not None


async def test_memory_cache_overwrite_refreshes_recency() -> None:
    cache = MemoryCache(2)
    await cache.set("a", vec(1))
    await cache.set("b", vec(2))
    await cache.set("a", vec(10))

    await cache.set("c", vec(3))

    got = await cache.get("a")
    assert got is not None
    np.testing.assert_array_equal(got, vec(10))
    assert await cache.get("b") is None


async def test_memory_cache_with_zero_entries_is_disabled() -> None:
    cache = MemoryCache(0)

    await cache.set("a", vec(1))

    assert len(cache) == 0
    assert await cache.get("a") is None


async def test_memory_cache_is_isolated_from_callers_writes() -> None:
    cache = MemoryCache(2)
    original = vec(1, 2)
    await cache.set("a", original)
    original[0] = 99
    got = await cache.get("a")
    assert got is not None
    got[1] = 99

    again = await cache.get("a")

    assert again is not None
    np.testing.assert_array_equal(again, vec(1, 2))


def test_memory_cache_refuses_negative_sizes() -> None:
    with pytest.raises(ValueError):
        MemoryCache(-1)


# --- circuit breaker


def state(breaker: CircuitBreaker) -> str:
    """The state as a plain string (mypy would narrow ``breaker.state`` across assertions)."""
    return breaker.state


def make_breaker(clock: FakeClock, states: list[str]) -> CircuitBreaker:
    return CircuitBreaker(failures=3, reset_s=10.0, clock=clock, on_change=states.append)


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock, states = FakeClock(), list[str]()
    breaker = make_breaker(clock, states)

    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) == "closed"
    assert breaker.allow()

    breaker.record_failure()

    assert state(breaker) == "open"
    assert not breaker.allow()
    assert states == ["open"]


def test_breaker_half_open_probe_success_closes() -> None:
    clock, states = FakeClock(), list[str]()
    breaker = make_breaker(clock, states)
    for _ in range(3):
        breaker.record_failure()

    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()  # the probe
    assert state(breaker) == "half_open"
    assert not breaker.allow()  # only one probe at a time

    breaker.record_success()

    assert state(breaker) == "closed"
    assert breaker.allow()
    assert states == ["open", "half_open", "closed"]


def test_breaker_half_open_probe_failure_reopens_for_a_full_period() -> None:
    clock, states = FakeClock(), list[str]()
    breaker = make_breaker(clock, states)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10.0
    assert breaker.allow()
    clock.now += 5.0

    breaker.record_failure()

    assert state(breaker) == "open"
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert states == ["open", "half_open", "open", "half_open"]


def test_breaker_replaces_a_probe_that_never_reported() -> None:
    clock, states = FakeClock(), list[str]()
    breaker = make_breaker(clock, states)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10.0
    assert breaker.allow()  # this probe's caller is cancelled and never reports

    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert state(breaker) == "half_open"


@pytest.mark.parametrize(("failures", "reset_s"), [(0, 1.0), (1, 0.0)])
def test_breaker_refuses_bad_settings(failures: int, reset_s: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=failures, reset_s=reset_s)


# --- Redis facing a closed port: no server is needed to see the failure path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_redis_cache_with_no_server_misses_counts_errors_and_opens_the_breaker() -> None:
    metrics, clock = Metrics(), FakeClock()
    cache = RedisCache(
        f"redis://127.0.0.1:{closed_port()}/0",
        ttl_s=60,
        timeout_s=0.5,
        breaker_failures=2,
        breaker_reset_s=30.0,
        metrics=metrics,
        clock=clock,
    )
    try:
        assert await cache.get("k") is None
        await cache.set("k", vec(1, 2))  # never raises either
        assert state(cache.breaker) == "open"
        assert metrics.registry.get_sample_value("dars_cache_breaker_open") == 1

        for _ in range(5):  # bypassed while open: no more errors counted
            assert await cache.get("k") is None
            await cache.set("k", vec(1, 2))

        assert cache_count(metrics, "redis", "error") == 2
        assert cache_count(metrics, "redis", "miss") == 0
        clock.now += 30.0
        assert await cache.get("k") is None  # the half-open probe fails: open again
        assert state(cache.breaker) == "open"
        assert cache_count(metrics, "redis", "error") == 3
    finally:
        await cache.aclose()


def test_build_cache_picks_the_backend() -> None:
    metrics = Metrics()

    memory = build_cache(Settings(_env_file=None, cache_max_entries=5), metrics)  # type: ignore[call-arg]
    redis = build_cache(
        Settings(_env_file=None, redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.2),  # type: ignore[call-arg]
        metrics,
    )

    assert isinstance(memory, MemoryCache)
    assert memory.backend == "memory"
    assert memory.max_entries == 5
    assert isinstance(redis, RedisCache)
    assert redis.backend == "redis"
    assert redis.timeout_s == 0.2


def test_build_cache_treats_a_blank_redis_url_as_unset() -> None:
    cache = build_cache(Settings(_env_file=None, redis_url="  "), Metrics())  # type: ignore[call-arg]

    assert isinstance(cache, MemoryCache)
