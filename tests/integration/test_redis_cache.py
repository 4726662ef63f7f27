"""The Redis embedding cache against a real redis-server: round trips, TTL, outages, recovery."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import numpy as np
import pytest
from helpers.redis_server import RedisServer

from app.cache import RedisCache, cache_key
from app.embedding import BatchingEmbedder, QueryEmbedder
from app.metrics import Metrics
from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID, EMBEDDING_DIM

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Generous: the CI machine is small and shared; an outage is detected by errors, not by speed.
TIMEOUT_S = 1.0
TTL_S = 3600
FAILURES = 3
RESET_S = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def count(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "dars_cache_requests_total", {"backend": "redis", "result": result}
    )
    return value or 0.0


def breaker_gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("dars_cache_breaker_open")


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cache(
    redis_server: RedisServer, metrics: Metrics, clock: FakeClock
) -> AsyncIterator[RedisCache]:
    redis_server.flush()
    cache = RedisCache(
        redis_server.url,
        ttl_s=TTL_S,
        timeout_s=TIMEOUT_S,
        breaker_failures=FAILURES,
        breaker_reset_s=RESET_S,
        metrics=metrics,
        clock=clock,
    )
    yield cache
    await cache.aclose()


@pytest.fixture
async def embedder(encoder: SentenceTransformer) -> AsyncIterator[BatchingEmbedder]:
    embedder = BatchingEmbedder(encoder, model_id=DEFAULT_EMBEDDING_MODEL_ID, max_wait_ms=1.0)
    await embedder.start()
    yield embedder
    await embedder.aclose()


async def test_round_trip_stores_float32_bytes_with_a_ttl(
    cache: RedisCache, redis_server: RedisServer, metrics: Metrics
) -> None:
    key = cache_key(DEFAULT_EMBEDDING_MODEL_ID, "hello")
    vector = np.random.default_rng(0).standard_normal(EMBEDDING_DIM).astype(np.float32)

    assert await cache.get(key) is None
    await cache.set(key, vector)
    got = await cache.get(key)

    assert got is not None
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, vector)
    got[0] = 42.0  # the returned array is the caller's own
    with redis_server.client() as client:
        assert client.get(key) == vector.astype("<f4").tobytes()
        assert 0 < client.ttl(key) <= TTL_S
    assert (count(metrics, "miss"), count(metrics, "hit"), count(metrics, "error")) == (1, 1, 0)
    assert cache.breaker.state == "closed"


async def test_a_foreign_value_under_our_key_is_a_miss(
    cache: RedisCache, redis_server: RedisServer, metrics: Metrics
) -> None:
    key = cache_key(DEFAULT_EMBEDDING_MODEL_ID, "odd")
    with redis_server.client() as client:
        client.set(key, b"abc")

    assert await cache.get(key) is None
    assert (count(metrics, "miss"), count(metrics, "error")) == (1, 0)


async def test_query_embedder_shares_vectors_between_replicas(
    cache: RedisCache, embedder: BatchingEmbedder, redis_server: RedisServer
) -> None:
    first_replica = QueryEmbedder(embedder, cache)
    other_cache = RedisCache(
        redis_server.url,
        ttl_s=TTL_S,
        timeout_s=TIMEOUT_S,
        breaker_failures=FAILURES,
        breaker_reset_s=RESET_S,
    )
    second_replica = QueryEmbedder(embedder, other_cache)
    try:
        computed, hit_1 = await first_replica.embed("Is a tomato a fruit?")
        again, hit_2 = await first_replica.embed("Is a tomato a fruit?")
        shared, hit_3 = await second_replica.embed("Is a tomato a fruit?")
    finally:
        await other_cache.aclose()

    assert (hit_1, hit_2, hit_3) == (False, True, True)
    np.testing.assert_array_equal(computed, again)
    np.testing.assert_array_equal(computed, shared)


async def test_killed_redis_degrades_to_the_model_and_recovers(
    cache: RedisCache,
    embedder: BatchingEmbedder,
    redis_server: RedisServer,
    kill_redis: Callable[[], None],
    metrics: Metrics,
    clock: FakeClock,
    encoder: SentenceTransformer,
) -> None:
    query = QueryEmbedder(embedder, cache)
    text = "What is the boiling point of water?"
    expected = encoder.encode([text], normalize_embeddings=True)[0]
    await query.embed(text)
    assert (await query.embed(text))[1]  # warm cache: a hit

    kill_redis()
    # get fails, set fails (2 errors); get fails (3: open); from then on Redis is bypassed.
    for _ in range(5):
        vector, hit = await query.embed(text)
        assert not hit
        np.testing.assert_allclose(vector, expected, atol=1e-6)

    assert cache.breaker.state == "open"
    assert breaker_gauge(metrics) == 1
    assert count(metrics, "error") == FAILURES

    redis_server.start()  # back, and empty
    clock.now += RESET_S - 0.1
    assert not (await query.embed(text))[1]  # still open: bypassed, nothing counted
    assert count(metrics, "error") == FAILURES

    clock.now += 0.1
    vector, hit = await query.embed(text)  # the half-open probe succeeds (a miss)

    assert not hit
    assert str(cache.breaker.state) == "closed"
    assert breaker_gauge(metrics) == 0
    vector, hit = await query.embed(text)  # the probe's set repopulated the cache
    assert hit
    np.testing.assert_allclose(vector, expected, atol=1e-6)
    assert count(metrics, "error") == FAILURES


async def test_a_hung_redis_times_out_instead_of_stalling(
    redis_server: RedisServer, metrics: Metrics
) -> None:
    cache = RedisCache(
        redis_server.url,
        ttl_s=TTL_S,
        timeout_s=0.2,
        breaker_failures=2,
        breaker_reset_s=RESET_S,
        metrics=metrics,
    )
    key = cache_key(DEFAULT_EMBEDDING_MODEL_ID, "frozen")
    try:
        assert await cache.get(key) is None  # connects while Redis is healthy
        redis_server.pause()
        try:
            assert await cache.get(key) is None
            await cache.set(key, np.ones(EMBEDDING_DIM, dtype=np.float32))
        finally:
            redis_server.resume()
        assert count(metrics, "error") == 2
        assert cache.breaker.state == "open"
        assert await cache.get(key) is None  # bypassed
        assert count(metrics, "error") == 2
    finally:
        await cache.aclose()
