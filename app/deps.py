"""Dependencies of the route handlers: typed access to ``app.state`` and the two auth checks.

The lifespan puts one ``Services`` on ``app.state.services``; handlers take what they need
through the ``Annotated`` aliases below, so tests can swap any of them with
``app.dependency_overrides``. Every dependency is ``async def`` although none awaits:
FastAPI runs plain ``def`` dependencies in its thread pool, a thread hop per dependency per
request that cost the proxy measurable throughput (bench/overhead.py).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from app.cache import EmbeddingCache
from app.cascade import CascadeService
from app.embedding import BatchingEmbedder, QueryEmbedder
from app.errors import AuthenticationFailed, PermissionDenied, RouterUnavailable
from app.live.loop import LiveLoop
from app.metrics import Metrics
from app.policy import ThresholdState
from app.scoring import RouterModel, Scorer
from app.settings import Settings
from app.shared import SharedState
from app.upstream import Upstreams

__all__ = [
    "AdminAuth",
    "ClientAuth",
    "MetricsDep",
    "QueryEmbedderDep",
    "ScorerDep",
    "Services",
    "ServicesDep",
    "SettingsDep",
    "ThresholdDep",
    "UpstreamsDep",
    "bearer_token",
    "matches_any",
]


@dataclass(frozen=True)
class Services:
    """Everything the lifespan builds; closed again in reverse order at shutdown."""

    settings: Settings
    metrics: Metrics
    embedder: BatchingEmbedder
    cache: EmbeddingCache
    query_embedder: QueryEmbedder
    scorer: Scorer
    threshold: ThresholdState
    upstreams: Upstreams
    shared: SharedState
    cascade: CascadeService
    live: LiveLoop = field(default_factory=LiveLoop.disabled)  # records, shadow, feedback

    async def reload_router(self, path: str | Path) -> RouterModel:
        """Swap in the router at ``path``, then let the threshold follow it (the reload rule is
        :class:`app.policy.ThresholdState`'s). ``RouterLoadError``: the old router keeps serving.
        """
        model = await asyncio.to_thread(self.scorer.reload, path)
        self.threshold.follow_router(model.default_threshold, model.calibration)
        await self.shared.reset_scores()
        return model

    async def set_threshold(self, value: float) -> None:
        """An operator's threshold, here and (with Redis) on every replica."""
        self.threshold.set(value)
        await self.shared.publish()

    async def calibrate(self, cloud_share: float) -> None:
        """Calibrate on the replicas' shared score window (else this one's), then share it."""
        scores = await self.shared.live_scores()
        calibration = self.scorer.model.calibration
        self.threshold.calibrate(cloud_share, calibration, scores=scores)
        await self.shared.publish()


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise RouterUnavailable("The service is starting or stopping; try again shortly.")
    return services


SettingsDep = Annotated[Settings, Depends(_settings)]
ServicesDep = Annotated[Services, Depends(get_services)]


async def _metrics(services: ServicesDep) -> Metrics:
    return services.metrics


async def _query_embedder(services: ServicesDep) -> QueryEmbedder:
    return services.query_embedder


async def _scorer(services: ServicesDep) -> Scorer:
    return services.scorer


async def _threshold(services: ServicesDep) -> ThresholdState:
    return services.threshold


async def _upstreams(services: ServicesDep) -> Upstreams:
    return services.upstreams


MetricsDep = Annotated[Metrics, Depends(_metrics)]
QueryEmbedderDep = Annotated[QueryEmbedder, Depends(_query_embedder)]
ScorerDep = Annotated[Scorer, Depends(_scorer)]
ThresholdDep = Annotated[ThresholdState, Depends(_threshold)]
UpstreamsDep = Annotated[Upstreams, Depends(_upstreams)]


# --- authentication


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def matches_any(token: str, secrets: Iterable[str]) -> bool:
    """Constant-time comparison against every secret (no early exit on a match)."""
    given = token.encode()
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(given, secret.encode())
    return found


async def require_client_key(request: Request, settings: SettingsDep) -> None:
    """401 unless the request carries one of ``DARS_API_KEYS``; open when none is set."""
    keys = settings.client_api_keys
    if not keys:
        return
    token = bearer_token(request)
    if token is None:
        raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'.")
    if not matches_any(token, keys):
        raise AuthenticationFailed("Incorrect API key provided.")


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """403 while ``DARS_ADMIN_TOKEN`` is unset (admin API off); 401 on a missing/wrong token."""
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        raise PermissionDenied("The admin API is disabled: set DARS_ADMIN_TOKEN to enable it.")
    token = bearer_token(request)
    if token is None:
        raise AuthenticationFailed("Missing admin token: send 'Authorization: Bearer <token>'.")
    if not matches_any(token, [settings.admin_token.get_secret_value()]):
        raise AuthenticationFailed("Incorrect admin token.")


ClientAuth = Depends(require_client_key)
AdminAuth = Depends(require_admin)
