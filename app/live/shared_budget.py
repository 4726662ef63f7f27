"""The shadow caps shared by all replicas through Redis, when ``DARS_REDIS_URL`` is set.

Each replica's own :class:`~app.live.budget.ShadowBudget` would let N replicas spend N times
the caps. Here both live in Redis::

    dars:shadow:usd:<YYYY-MM-DD>   USD charged that UTC day (INCRBYFLOAT), expires after 2 days
    dars:shadow:calls              sorted set of call start times: the sliding 60 s window

A slot is taken by one Lua script, atomic on the server: no call starts once the day's USD is
spent or the window holds ``calls_per_minute`` starts, whichever replica asks. A call's cost is
known only after it, so :meth:`RedisShadowBudget.charge` keeps it and writes it in the
background (and the next reservation carries whatever is still unwritten): a day overshoots by
at most about one call per replica. Times are the replicas' clocks (keep them in NTP sync).

Only the sampler's background task talks to Redis, under ``DARS_REDIS_TIMEOUT_S`` and a circuit
breaker; a user request never waits on it. Redis unreachable fails closed: no shadow call
starts, and ``dars_shadow_budget_unavailable_total`` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.cache import REDIS_ERRORS, CircuitBreaker
from app.live.budget import ShadowBudget, ShadowCaps

if TYPE_CHECKING:
    from app.live.metrics import LiveMetrics
    from app.settings import Settings

__all__ = ["CALLS_KEY", "USD_KEY_PREFIX", "RedisShadowBudget", "build_shadow_budget"]

logger = logging.getLogger(__name__)

USD_KEY_PREFIX = "dars:shadow:usd:"
CALLS_KEY = "dars:shadow:calls"
_USD_TTL_S = 2 * 86_400  # a day's key outlives the day in every time zone's view of it
_WINDOW_S = 60.0
_T = TypeVar("_T")

# KEYS: usd key, calls key. ARGV: now, usd cap, calls per minute, window s, member, usd ttl s,
# usd to add first. Returns {-1 | 0 | ms to wait, spent today}.
_RESERVE = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[7]) > 0 then
  spent = tonumber(redis.call('INCRBYFLOAT', KEYS[1], ARGV[7]))
  redis.call('EXPIRE', KEYS[1], ARGV[6])
end
if spent >= tonumber(ARGV[2]) then
  return {-1, tostring(spent)}
end
local now, window = tonumber(ARGV[1]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], math.ceil(window) + 1)
  return {0, tostring(spent)}
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2])
return {math.max(1, math.ceil((oldest + window - now) * 1000)), tostring(spent)}
"""


def _utc_day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class RedisShadowBudget:
    """:class:`~app.live.budget.ShadowCaps` kept in Redis for every replica (module docstring)."""

    scope = "shared"

    def __init__(
        self,
        url: str,
        usd_per_day: float,
        calls_per_minute: int,
        *,
        timeout_s: float,
        breaker_failures: int,
        breaker_reset_s: float,
        metrics: LiveMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.usd_per_day = usd_per_day
        self.calls_per_minute = calls_per_minute
        self.timeout_s = timeout_s
        self.breaker = CircuitBreaker(failures=breaker_failures, reset_s=breaker_reset_s)
        self._metrics = metrics
        self._clock = clock
        # No redis-py retries: the breaker is the retry policy (as in app.cache).
        self._client = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._reserve = self._client.register_script(_RESERVE)
        self._seen: tuple[str, float] = ("", 0.0)  # (UTC day, USD spent) as Redis last said
        self._unsaved = 0.0  # charged here, not yet written
        self._writing: asyncio.Task[None] | None = None

    def can_spend(self) -> bool:
        """Whether today's cap looked unspent at the last answer from Redis (no I/O)."""
        day, spent = self._seen
        today = spent if day == _utc_day(self._clock()) else 0.0
        return today + self._unsaved < self.usd_per_day

    async def reserve(self) -> float | None:
        """Take a slot for a call now, atomically across replicas; None also when Redis fails."""
        if self.usd_per_day <= 0 or self.calls_per_minute <= 0:
            return None
        await self._written()  # this replica's own charges count before its next call
        now = self._clock()
        day = _utc_day(now)
        add, self._unsaved = self._unsaved, 0.0
        args: list[str | int] = [repr(now), repr(self.usd_per_day), self.calls_per_minute]
        args += [repr(_WINDOW_S), uuid.uuid4().hex, _USD_TTL_S, repr(add)]
        ok, reply = await self._call(
            self._reserve(keys=[USD_KEY_PREFIX + day, CALLS_KEY], args=args)
        )
        parsed = _parse(reply) if ok else None
        if parsed is None:
            self._unsaved += add
            self._count_failure("reserve")
            return None
        code, spent = parsed
        self._seen = (day, spent)
        return None if code < 0 else code / 1000

    def charge(self, usd: float) -> None:
        """Keep a finished call's cost and write it in the background (no I/O here)."""
        if usd <= 0:
            return
        self._unsaved += usd
        if self._writing is None or self._writing.done():
            self._writing = asyncio.get_running_loop().create_task(
                self._write(), name="dars-shadow-budget-charge"
            )

    async def flush(self) -> None:
        """Write every charge made so far (best effort: one kept on failure is sent later)."""
        await self._written()
        await self._write()

    async def aclose(self) -> None:
        await self.flush()
        with contextlib.suppress(*REDIS_ERRORS):
            await self._client.aclose()

    async def _written(self) -> None:
        if self._writing is not None and not self._writing.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writing)

    async def _write(self) -> None:
        add, self._unsaved = self._unsaved, 0.0
        if add <= 0:
            return
        day = _utc_day(self._clock())
        key = USD_KEY_PREFIX + day
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incrbyfloat(key, add)
            pipe.expire(key, _USD_TTL_S)
            ok, reply = await self._call(pipe.execute())
        if ok and reply:
            self._seen = (day, float(reply[0]))
            return
        self._unsaved += add  # the next reservation carries it
        self._count_failure("charge")

    def _count_failure(self, op: str) -> None:
        if self._metrics is not None:
            self._metrics.shadow_budget_unavailable.labels(op=op).inc()

    async def _call(self, operation: Awaitable[_T]) -> tuple[bool, _T | None]:
        return await self.breaker.call(operation, timeout_s=self.timeout_s, what="shadow budget")


def _parse(reply: Any) -> tuple[int, float] | None:
    """The script's ``{code, spent}``; None when Redis answered something else."""
    try:
        return int(reply[0]), float(reply[1])
    except (TypeError, ValueError, IndexError):
        return None


def build_shadow_budget(settings: Settings, metrics: LiveMetrics | None = None) -> ShadowCaps:
    """Shared through Redis with ``DARS_REDIS_URL`` (no connection made here), else this
    process's own caps."""
    usd, calls = settings.shadow_budget_usd_per_day, settings.shadow_calls_per_minute
    if settings.redis_url is None:
        return ShadowBudget(usd, calls)
    return RedisShadowBudget(
        settings.redis_url.get_secret_value(),
        usd,
        calls,
        timeout_s=settings.redis_timeout_s,
        breaker_failures=settings.redis_breaker_failures,
        breaker_reset_s=settings.redis_breaker_reset_s,
        metrics=metrics,
    )
