"""Embedding cache: the same query text is embedded once, then served from memory or Redis.

A cache must never make a request slower or fail it. So ``get``/``set`` never raise: every
Redis call runs under a short timeout (``DARS_REDIS_TIMEOUT_S``), a failure counts as a miss,
and a circuit breaker stops calling a Redis that keeps failing::

    closed --N consecutive failures--> open --reset_s elapsed--> half-open
       ^                                  ^                          |
       +------- probe succeeds -----------+---- probe fails ---------+

While the breaker is not closed, lookups skip Redis (and are not counted); one probe call is
let through after ``reset_s``. Metrics: ``dars_cache_requests_total{backend, result}`` counts
``hit``/``miss`` per lookup and ``error`` per failed Redis call (get or set), and
``dars_cache_breaker_open`` is 1 while the breaker is not closed.

Keys are ``dars:emb:<sha256(model id NUL text)>``: the model id is part of the key, so a
different encoder never reads another encoder's vectors. Values are raw little-endian float32.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
from redis import exceptions as redis_exceptions
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

if TYPE_CHECKING:
    from app.metrics import Metrics
    from app.settings import Settings

__all__ = [
    "CACHE_KEY_PREFIX",
    "REDIS_ERRORS",
    "CircuitBreaker",
    "EmbeddingCache",
    "MemoryCache",
    "RedisCache",
    "build_cache",
    "cache_key",
]

logger = logging.getLogger(__name__)

CACHE_KEY_PREFIX = "dars:emb:"
_WIRE_DTYPE = np.dtype("<f4")
_T = TypeVar("_T")
# What a Redis call can raise when Redis is slow, down or confused (never a programming error).
REDIS_ERRORS = (redis_exceptions.RedisError, OSError, TimeoutError)

BreakerState = Literal["closed", "open", "half_open"]


def cache_key(model_id: str, text: str) -> str:
    """Cache key of ``text`` embedded by ``model_id``; no prompt text ends up in Redis keys."""
    # surrogatepass: JSON may carry lone surrogates; hashing them must not raise.
    raw = model_id.encode("utf-8", "surrogatepass") + b"\0" + text.encode("utf-8", "surrogatepass")
    return CACHE_KEY_PREFIX + hashlib.sha256(raw).hexdigest()


@runtime_checkable
class EmbeddingCache(Protocol):
    """What the query embedder needs from a cache. Implementations never raise from get/set."""

    backend: str

    async def get(self, key: str) -> np.ndarray | None: ...

    async def set(self, key: str, vector: np.ndarray) -> None: ...

    async def aclose(self) -> None: ...


class MemoryCache:
    """In-process LRU of at most ``max_entries`` vectors; ``max_entries=0`` disables it
    (every lookup is then a miss).

    Stores and returns copies, so a caller that writes into its vector cannot corrupt the cache.
    """

    backend = "memory"

    def __init__(self, max_entries: int, *, metrics: Metrics | None = None) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._metrics = metrics
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> np.ndarray | None:
        vector = self._entries.get(key)
        if vector is not None:
            self._entries.move_to_end(key)
        _count(self._metrics, self.backend, "miss" if vector is None else "hit")
        return None if vector is None else vector.copy()

    async def set(self, key: str, vector: np.ndarray) -> None:
        if self.max_entries == 0:
            return
        self._entries[key] = np.array(vector, dtype=np.float32, copy=True)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        self._entries.clear()


class CircuitBreaker:
    """Consecutive-failure circuit breaker with one half-open probe (see the module docstring).

    ``clock`` is injectable so that tests can move time instead of sleeping.
    """

    def __init__(
        self,
        *,
        failures: int,
        reset_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be >= 1")
        if reset_s <= 0:
            raise ValueError("reset_s must be > 0")
        self.failures = failures
        self.reset_s = reset_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_at = 0.0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """Whether a call may go out now; after ``reset_s`` one probe is allowed.

        A probe that never reports (its caller was cancelled) is replaced after another
        ``reset_s``, so the breaker cannot stay half-open for ever.
        """
        with self._lock:
            if self._state == "closed":
                return True
            now = self._clock()
            if self._state == "open" and now - self._opened_at >= self.reset_s:
                self._probe_at = now
                self._set_state("half_open")
                return True
            if self._state == "half_open" and now - self._probe_at >= self.reset_s:
                self._probe_at = now
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            if self._state != "closed":
                self._set_state("closed")

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._state == "half_open" or (
                self._state == "closed" and self._consecutive >= self.failures
            ):
                self._opened_at = self._clock()
                self._set_state("open")

    def _set_state(self, state: BreakerState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)

    async def call(
        self, operation: Awaitable[_T], *, timeout_s: float, what: str
    ) -> tuple[bool, _T | None]:
        """Run one Redis command unless the breaker is open, under ``timeout_s``, and record
        the outcome; ``(False, None)`` on any Redis failure (logged at debug as ``what``)."""
        if not self.allow():
            if asyncio.iscoroutine(operation):
                operation.close()  # never awaited: close it, or Python warns
            return False, None
        try:
            async with asyncio.timeout(timeout_s):
                result = await operation
        except REDIS_ERRORS as exc:
            logger.debug("%s: Redis call failed: %s: %s", what, type(exc).__name__, exc)
            self.record_failure()
            return False, None
        self.record_success()
        return True, result


class RedisCache:
    """Vectors in Redis as float32 bytes with a TTL, behind a timeout and a circuit breaker.

    redis-py's own retries are switched off: the breaker is the retry policy, and a retry
    would only stretch the time a request waits on a sick Redis. The URL is not kept on the
    object (it may carry a password), so no repr or log can show it.
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        ttl_s: int,
        timeout_s: float,
        breaker_failures: int,
        breaker_reset_s: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._metrics = metrics
        self.breaker = CircuitBreaker(
            failures=breaker_failures,
            reset_s=breaker_reset_s,
            clock=clock,
            on_change=self._on_breaker_change,
        )
        self._client = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )

    async def get(self, key: str) -> np.ndarray | None:
        if not self.breaker.allow():
            return None
        ok, raw = await self._call(self._client.get(key))
        if not ok:
            return None
        if raw is None:
            _count(self._metrics, self.backend, "miss")
            return None
        if not isinstance(raw, bytes) or len(raw) % _WIRE_DTYPE.itemsize:
            # A foreign or truncated value under our key: treat it like a miss, it gets rewritten.
            logger.warning("ignoring malformed cache value under %s", key)
            _count(self._metrics, self.backend, "miss")
            return None
        _count(self._metrics, self.backend, "hit")
        return np.frombuffer(raw, dtype=_WIRE_DTYPE).astype(np.float32)

    async def set(self, key: str, vector: np.ndarray) -> None:
        if not self.breaker.allow():
            return
        payload = np.ascontiguousarray(vector, dtype=_WIRE_DTYPE).tobytes()
        await self._call(self._client.set(key, payload, ex=self.ttl_s))

    async def aclose(self) -> None:
        try:
            await self._client.aclose()
        except (redis_exceptions.RedisError, OSError) as exc:
            logger.debug("closing the Redis client failed: %s", exc)

    async def _call(self, operation: Awaitable[_T]) -> tuple[bool, _T | None]:
        """Run one Redis command under the timeout; map every failure to ``(False, None)``."""
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await operation
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return False, None
        except Exception as exc:  # the cache contract: a cache never fails a request
            logger.warning("unexpected error from the Redis client", exc_info=exc)
            self._failed(exc)
            return False, None
        self.breaker.record_success()
        return True, result

    def _failed(self, exc: BaseException) -> None:
        logger.debug("Redis call failed: %s: %s", type(exc).__name__, exc)
        _count(self._metrics, self.backend, "error")
        self.breaker.record_failure()

    def _on_breaker_change(self, state: BreakerState) -> None:
        if state == "open":
            # Not the URL: it may carry a password.
            logger.warning("Redis cache unavailable; bypassing it for %.1fs", self.breaker.reset_s)
        elif state == "closed":
            logger.info("Redis cache available again")
        if self._metrics is not None:
            self._metrics.cache_breaker_open.set(0 if state == "closed" else 1)


def build_cache(settings: Settings, metrics: Metrics) -> EmbeddingCache:
    """Redis when ``DARS_REDIS_URL`` is set (no connection is made here), else the memory LRU.

    The chosen backend's lookup counters are exported as 0 from the start.
    """
    cache: EmbeddingCache
    if settings.redis_url is not None:
        cache = RedisCache(
            settings.redis_url.get_secret_value(),
            ttl_s=settings.redis_ttl_s,
            timeout_s=settings.redis_timeout_s,
            breaker_failures=settings.redis_breaker_failures,
            breaker_reset_s=settings.redis_breaker_reset_s,
            metrics=metrics,
        )
    else:
        cache = MemoryCache(settings.cache_max_entries, metrics=metrics)
    metrics.initialise_cache(cache.backend)
    return cache


def _count(metrics: Metrics | None, backend: str, result: str) -> None:
    if metrics is not None:
        metrics.cache.labels(backend=backend, result=result).inc()
