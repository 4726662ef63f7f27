"""State shared by replicas through Redis: the threshold and the live score window.

With ``DARS_REDIS_URL`` set, a ``PUT /admin/threshold`` or a calibration on one replica holds on
every replica within a second and survives restarts; without it each process keeps its own
(:class:`LocalState`). What lives in Redis::

    dars:threshold          JSON {value, source, calibrated_share, calibrated_spend, id}:
                            the last change
    channel dars:threshold  the same JSON, published in one MULTI/EXEC with the SET, so that
                            messages arrive in the order the writes happened
    dars:scores             the replicas' recent router scores (calibration's live window),
                            trimmed to DARS_CALIBRATION_WINDOW
    dars:cascade:threshold  the same three for the confidence cascade's entropy threshold
    dars:cascade:scores     and its window of sampled requests' entropies

How it stays right: a replica applies every message whose ``id`` it has not applied yet; a
background loop re-reads ``dars:threshold`` every ``DARS_SHARED_REFRESH_S`` (a lost message, a
reconnect, a Redis restart) and once at start-up (a restarted replica takes the shared
threshold, which wins over ``DARS_THRESHOLD`` and the router's default). Only operator and
calibrated thresholds are published; a router reload applies the reload rule locally (on every
replica, since app.shared_router shares the reload itself).

Redis down never fails or stalls a request: the request path only appends its score to a local
buffer, flushed by the background loop; admin calls wait at most ``DARS_REDIS_TIMEOUT_S``; every
call runs behind app.cache's :class:`CircuitBreaker`. A change that could not be written is kept
locally and written again (not overwritten by the stored one) once Redis answers.

:class:`SharedKey` (a key and its channel, written in one MULTI/EXEC and followed) and
:func:`repeat` are the pieces other shared values reuse (app.shared_router: the router file).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.cache import REDIS_ERRORS, CircuitBreaker
from app.errors import InvalidRequest
from app.policy import Route, ThresholdSnapshot, ThresholdState
from app.tasks import cancel_and_wait

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = [
    "CASCADE_PREFIX",
    "KEY_PREFIX",
    "SCORES_KEY",
    "THRESHOLD_CHANNEL",
    "THRESHOLD_KEY",
    "LocalState",
    "RedisSharedState",
    "SharedKey",
    "SharedState",
    "build_shared_state",
    "decode_snapshot",
    "encode_snapshot",
    "new_change_id",
    "redis_client",
    "repeat",
]

logger = logging.getLogger(__name__)

KEY_PREFIX = "dars"  # the router's threshold; the cascade's entropy threshold: CASCADE_PREFIX
CASCADE_PREFIX = "dars:cascade"
THRESHOLD_KEY = f"{KEY_PREFIX}:threshold"
THRESHOLD_CHANNEL = THRESHOLD_KEY
SCORES_KEY = f"{KEY_PREFIX}:scores"
_TICK_S = 0.2  # score flushes and retries of unwritten changes
_T = TypeVar("_T")


class SharedState(Protocol):
    """What the service needs to share its threshold and score window."""

    async def start(self) -> None: ...

    async def publish(self) -> None: ...

    async def live_scores(self) -> np.ndarray | None: ...

    async def reset_scores(self) -> None: ...

    async def aclose(self) -> None: ...


class LocalState:
    """No Redis: the threshold and window are this process's own; every method is a no-op."""

    async def start(self) -> None:
        return None

    async def publish(self) -> None:
        return None

    async def live_scores(self) -> np.ndarray | None:
        return None  # calibrate() then uses this process's window

    async def reset_scores(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def encode_snapshot(snapshot: ThresholdSnapshot, change_id: str) -> str:
    return json.dumps(
        {
            "value": snapshot.value,
            "source": snapshot.source,
            "calibrated_share": snapshot.calibrated_share,
            "calibrated_spend": snapshot.calibrated_spend,
            "id": change_id,
        }
    )


def decode_snapshot(raw: bytes | str) -> tuple[ThresholdSnapshot, str] | None:
    """The snapshot and change id of a stored or published value; ``None`` if malformed."""
    try:
        data = json.loads(raw)
        source = data["source"]
        share = data["calibrated_share"]
        spend = data.get("calibrated_spend")  # absent from replicas of earlier versions
        if source not in ("operator", "calibrated", "default") or not isinstance(data["id"], str):
            return None
        snapshot = ThresholdSnapshot(
            value=float(data["value"]),
            source=source,
            calibrated_share=None if share is None else float(share),
            calibrated_spend=None if spend is None else float(spend),
        )
        return snapshot, data["id"]
    except (ValueError, TypeError, KeyError):
        return None


def new_change_id() -> str:
    """A change's id: a process applies each id once and skips the ones it wrote itself."""
    return uuid.uuid4().hex


class SharedKey:
    """One value shared through Redis: ``key`` holds the last change, ``channel`` announces it.

    Both are written in one MULTI/EXEC, so messages arrive in the order the writes happened.
    Every call runs behind one :class:`CircuitBreaker` and waits at most ``timeout_s``.
    """

    def __init__(
        self,
        url: str,
        key: str,
        channel: str,
        *,
        timeout_s: float,
        refresh_s: float,
        breaker_failures: int,
        breaker_reset_s: float,
    ) -> None:
        self.key = key
        self.channel = channel
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self.breaker = CircuitBreaker(failures=breaker_failures, reset_s=breaker_reset_s)
        self.client = redis_client(url, read_timeout_s=timeout_s, connect_timeout_s=timeout_s)
        # Subscriptions block on reads by design: their own client, without a read timeout.
        self._subscriber = redis_client(url, read_timeout_s=None, connect_timeout_s=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, key: str, channel: str) -> SharedKey:
        """``DARS_REDIS_URL`` must be set; no connection is made here."""
        if settings.redis_url is None:
            raise ValueError("DARS_REDIS_URL is not set")
        return cls(
            settings.redis_url.get_secret_value(),
            key,
            channel,
            timeout_s=settings.redis_timeout_s,
            refresh_s=settings.shared_refresh_s,
            breaker_failures=settings.redis_breaker_failures,
            breaker_reset_s=settings.redis_breaker_reset_s,
        )

    async def call(self, operation: Awaitable[_T]) -> tuple[bool, _T | None]:
        return await self.breaker.call(operation, timeout_s=self.timeout_s, what="shared state")

    async def write(self, payload: str) -> bool:
        """Store and announce ``payload``; ``False`` when Redis did not take it."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.key, payload)
            pipe.publish(self.channel, payload)
            ok, _ = await self.call(pipe.execute())
        return ok

    async def read(self) -> bytes | str | None:
        """The stored value; ``None`` when there is none or Redis does not answer."""
        ok, raw = await self.call(self.client.get(self.key))
        return raw if ok and isinstance(raw, bytes | str) else None

    async def follow(self, on_value: Callable[[bytes | str], Awaitable[None]]) -> None:
        """Pass every message to ``on_value``, and the stored value after each (re)subscription
        (changes made while unsubscribed); reconnect after ``refresh_s``. Runs until cancelled."""
        while True:
            try:
                async with self._subscriber.pubsub() as pubsub:
                    await asyncio.wait_for(pubsub.subscribe(self.channel), self.refresh_s)
                    raw = await self.read()
                    if raw is not None:
                        await on_value(raw)
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=self.refresh_s
                        )
                        if message is not None and message.get("type") == "message":
                            await on_value(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or gone: try again later
                logger.debug("%s subscription lost: %s: %s", self.channel, type(exc).__name__, exc)
            await asyncio.sleep(self.refresh_s)

    async def aclose(self) -> None:
        for client in (self.client, self._subscriber):
            with contextlib.suppress(*REDIS_ERRORS):
                await client.aclose()


async def repeat(period_s: float, step: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``step`` every ``period_s`` until cancelled; a failed step is logged, not fatal."""
    while True:
        await asyncio.sleep(period_s)
        try:
            await step()
        except Exception as exc:  # the loop must outlive any surprise
            logger.warning("%s failed", what, exc_info=exc)


class RedisSharedState:
    """The threshold and score window of ``threshold`` shared through Redis (module docstring)."""

    def __init__(
        self,
        url: str,
        threshold: ThresholdState,
        *,
        timeout_s: float,
        refresh_s: float,
        breaker_failures: int,
        breaker_reset_s: float,
        prefix: str = KEY_PREFIX,
    ) -> None:
        self.threshold = threshold
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self._scores_key = f"{prefix}:scores"
        self._shared = SharedKey(
            url,
            f"{prefix}:threshold",
            f"{prefix}:threshold",
            timeout_s=timeout_s,
            refresh_s=refresh_s,
            breaker_failures=breaker_failures,
            breaker_reset_s=breaker_reset_s,
        )
        self.breaker = self._shared.breaker
        self._client = self._shared.client
        self._last_read = time.monotonic()
        self._scores: deque[float] = deque(maxlen=threshold.window)
        self._applied_id: str | None = None
        self._pending = False  # a local change Redis has not stored yet
        self._tasks: list[asyncio.Task[None]] = []
        threshold.add_score_listener(self._buffer)

    # --- lifecycle

    async def start(self) -> None:
        """Take the shared threshold if there is one, then follow changes in the background."""
        await self._reread()
        self._last_read = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._shared.follow(self._on_value), name="dars-shared-listen"),
            asyncio.create_task(
                repeat(_TICK_S, self._tick, "shared state refresh"), name="dars-shared-tick"
            ),
        ]

    async def aclose(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self._flush()
        await self._shared.aclose()

    # --- the service's calls

    async def publish(self) -> None:
        """Store and announce this replica's threshold; kept for a retry when Redis fails."""
        change_id = new_change_id()
        payload = encode_snapshot(self.threshold.snapshot(), change_id)
        retry = self._pending
        self._applied_id, self._pending = change_id, True
        ok = await self._shared.write(payload)
        if ok and self._applied_id == change_id:
            self._pending = False
        elif not ok and not retry:
            logger.warning("shared threshold not stored (Redis unavailable); will retry")

    async def live_scores(self) -> np.ndarray | None:
        """The replicas' shared score window, ``None`` when Redis does not answer."""
        await self._flush()
        ok, raw = await self._call(self._client.lrange(self._scores_key, 0, -1))
        if not ok or raw is None:
            return None
        try:
            return np.array([float(item) for item in raw], dtype=np.float64)
        except ValueError:
            return None

    async def reset_scores(self) -> None:
        """Empty the shared window (a new router's scores say nothing of the old one's)."""
        self._scores.clear()
        await self._call(self._client.delete(self._scores_key))

    # --- background

    def _buffer(self, score: float, route: Route) -> None:
        self._scores.append(score)  # the request path: no I/O here

    async def _flush(self) -> None:
        if not self._scores:
            return
        scores = [repr(score) for score in self._scores]
        self._scores.clear()
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.rpush(self._scores_key, *scores)
            pipe.ltrim(self._scores_key, -self.threshold.window, -1)
            await self._call(pipe.execute())  # lost on failure: it is a sample window

    async def _tick(self) -> None:
        await self._flush()
        if self._pending:
            await self.publish()
        elif time.monotonic() - self._last_read >= self.refresh_s:
            self._last_read = time.monotonic()
            await self._reread()

    async def _reread(self) -> None:
        if self._pending:
            return
        raw = await self._shared.read()
        if raw is not None:
            self._apply(raw)

    async def _on_value(self, raw: bytes | str) -> None:
        self._apply(raw)

    def _apply(self, raw: bytes | str) -> None:
        decoded = decode_snapshot(raw)
        if decoded is None:
            logger.warning("ignoring a malformed shared threshold")
            return
        snapshot, change_id = decoded
        if change_id == self._applied_id or self._pending:
            return
        try:
            self.threshold.apply(snapshot)
        except InvalidRequest:
            logger.warning("ignoring a shared threshold out of [0, 1]")
            return
        self._applied_id = change_id
        logger.info("threshold %.4f (%s) from another replica", snapshot.value, snapshot.source)

    async def _call(self, operation: Awaitable[_T]) -> tuple[bool, _T | None]:
        return await self._shared.call(operation)


def redis_client(url: str, *, read_timeout_s: float | None, connect_timeout_s: float) -> Redis:
    # No redis-py retries: the breaker is the retry policy (as in app.cache).
    return Redis.from_url(
        url,
        socket_timeout=read_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def build_shared_state(
    settings: Settings, threshold: ThresholdState, *, prefix: str = KEY_PREFIX
) -> SharedState:
    """Redis-backed when ``DARS_REDIS_URL`` is set (no connection made here), else local;
    ``prefix`` names the keys (``<prefix>:threshold``, ``<prefix>:scores``)."""
    if settings.redis_url is None:
        return LocalState()
    return RedisSharedState(
        settings.redis_url.get_secret_value(),
        threshold,
        timeout_s=settings.redis_timeout_s,
        refresh_s=settings.shared_refresh_s,
        breaker_failures=settings.redis_breaker_failures,
        breaker_reset_s=settings.redis_breaker_reset_s,
        prefix=prefix,
    )
