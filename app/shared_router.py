"""The router file shared by replicas and workers through Redis, like the threshold (app.shared).

``POST /admin/router/reload`` reaches one process (the one the load balancer or the kernel
picked); with ``DARS_REDIS_URL`` set, that process then stores and announces what it loaded::

    dars:router          JSON {path, sha256, id}: the last successful reload (path absolute,
                         as the reloading process saw it)
    channel dars:router  the same JSON, published in one MULTI/EXEC with the SET

Every other process that sees a message, or on its periodic re-read (``DARS_SHARED_REFRESH_S``)
and at start-up a stored value, whose ``sha256`` is not its loaded router's, loads that path
through :meth:`app.deps.Services.reload_router` (contract checks, the upstreams fit, the
threshold's reload rule, the spend target) without announcing it again. So the path must be
readable by every process: a shared volume, or the same image. A file that is missing, fails
to load, or whose hash is not the announced one is logged, counted
(``dars_router_reloads_total{result="rejected"}``) and remembered by change id, so it is not
retried every tick; the old router keeps serving. At start-up the stored router wins over
``DARS_ROUTER_MODEL``, as the stored threshold wins over ``DARS_THRESHOLD``.

Redis down never fails a reload: the local swap has happened; the announcement is kept and
written again on a later tick (unless a newer reload replaces it), as for the threshold.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from app.scoring import RouterLoadError, RouterModel
from app.shared import SharedKey, new_change_id, repeat
from app.tasks import cancel_and_wait
from router_models.live.state import file_sha256

if TYPE_CHECKING:
    from app.metrics import Metrics
    from app.settings import Settings

__all__ = [
    "ROUTER_CHANNEL",
    "ROUTER_KEY",
    "LocalRouterSync",
    "RedisRouterSync",
    "RouterChange",
    "RouterSync",
    "build_router_sync",
]

logger = logging.getLogger(__name__)

ROUTER_KEY = "dars:router"
ROUTER_CHANNEL = "dars:router"

Reload = Callable[[Path], Awaitable[RouterModel]]


class RouterChange(NamedTuple):
    path: str
    sha256: str
    id: str

    def encode(self) -> str:
        return json.dumps(self._asdict())

    @classmethod
    def decode(cls, raw: bytes | str) -> RouterChange | None:
        """``None`` when malformed."""
        try:
            data = json.loads(raw)
            change = cls(data["path"], data["sha256"], data["id"])
        except (ValueError, TypeError, KeyError):
            return None
        return change if all(isinstance(field, str) and field for field in change) else None


class RouterSync(Protocol):
    """What the service needs to share its router reloads."""

    async def start(self, current: Callable[[], RouterModel], reload: Reload) -> None:
        """Take the shared router if it differs from ``current()``, then follow changes;
        ``reload`` loads a path locally without announcing it."""
        ...

    async def publish(self, model: RouterModel) -> None: ...

    async def aclose(self) -> None: ...


class LocalRouterSync:
    """No Redis: a reload stays in this process."""

    async def start(self, current: Callable[[], RouterModel], reload: Reload) -> None:
        return None

    async def publish(self, model: RouterModel) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RedisRouterSync:
    """Announce this process's reloads; load the others' (module docstring)."""

    def __init__(self, shared: SharedKey, metrics: Metrics) -> None:
        self._shared = shared
        self._metrics = metrics
        self._current: Callable[[], RouterModel] | None = None
        self._reload: Reload | None = None
        self._applied_id: str | None = None
        self._failed_id: str | None = None  # not retried: a new reload brings a new id
        self._pending: str | None = None  # an announcement Redis has not stored yet
        self._warned = False
        self._lock = asyncio.Lock()  # one load at a time: messages and re-reads may overlap
        self._last_read = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, current: Callable[[], RouterModel], reload: Reload) -> None:
        self._current, self._reload = current, reload
        await self._reread()
        self._last_read = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._shared.follow(self._apply), name="dars-router-listen"),
            asyncio.create_task(
                repeat(min(self._shared.refresh_s, 1.0), self._tick, "shared router refresh"),
                name="dars-router-tick",
            ),
        ]

    async def publish(self, model: RouterModel) -> None:
        """Store and announce a local reload; kept for a retry when Redis fails."""
        change = RouterChange(str(model.path.absolute()), model.sha256, new_change_id())
        self._applied_id, self._pending, self._warned = change.id, change.encode(), False
        await self._write()

    async def aclose(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self._shared.aclose()

    async def _write(self) -> None:
        payload = self._pending
        if payload is None:
            return
        if await self._shared.write(payload):
            if self._pending == payload:  # not replaced by a newer reload meanwhile
                self._pending = None
        elif not self._warned:
            self._warned = True
            logger.warning("router reload not announced (Redis unavailable); will retry")

    async def _tick(self) -> None:
        if self._pending is not None:
            await self._write()
        elif time.monotonic() - self._last_read >= self._shared.refresh_s:
            self._last_read = time.monotonic()
            await self._reread()

    async def _reread(self) -> None:
        if self._pending is None:
            raw = await self._shared.read()
            if raw is not None:
                await self._apply(raw)

    async def _apply(self, raw: bytes | str) -> None:
        change = RouterChange.decode(raw)
        if change is None:
            logger.warning("ignoring a malformed shared router")
            return
        async with self._lock:
            if self._pending is not None or change.id in (self._applied_id, self._failed_id):
                return  # our own, one already tried, or older than our unwritten one
            if self._current is None or self._reload is None:
                return  # not started
            if self._current().sha256 == change.sha256:
                self._applied_id = change.id
                return
            try:
                loaded = await self._load(change)
            except Exception as exc:  # e.g. a recalibration failing: do not retry every tick
                logger.warning("shared router %s not applied", change.path, exc_info=exc)
                loaded = False
            if loaded:
                self._applied_id = change.id
            else:
                self._failed_id = change.id

    async def _load(self, change: RouterChange) -> bool:
        assert self._reload is not None
        path = Path(change.path)
        try:
            found = await asyncio.to_thread(file_sha256, path)
        except OSError:
            found = None  # the reload says why (and counts it)
        if found is not None and found != change.sha256:
            self._metrics.router_reloads.labels(result="rejected").inc()
            logger.warning(
                "shared router %s rejected: its sha256 here is %s, not the announced %s; "
                "the previous router keeps serving",
                path,
                found[:12],
                change.sha256[:12],
            )
            return False
        try:
            await self._reload(path)
        except RouterLoadError as exc:
            logger.warning(
                "shared router rejected; the previous router keeps serving: %s (this path must "
                "be readable by every replica)",
                exc,
            )
            return False
        logger.info("router %s (sha256 %s) from another replica", path, change.sha256[:12])
        return True


def build_router_sync(settings: Settings, metrics: Metrics) -> RouterSync:
    """Redis-backed when ``DARS_REDIS_URL`` is set (no connection made here), else local."""
    if settings.redis_url is None:
        return LocalRouterSync()
    return RedisRouterSync(SharedKey.from_settings(settings, ROUTER_KEY, ROUTER_CHANNEL), metrics)
