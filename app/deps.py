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
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from app.cache import EmbeddingCache
from app.cascade import CascadeService
from app.embedding import BatchingEmbedder, QueryEmbedder
from app.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, RouterUnavailable
from app.live.loop import LiveLoop
from app.metrics import Metrics
from app.policy import ThresholdSnapshot, ThresholdState
from app.scoring import RouterModel, Scorer
from app.settings import Settings
from app.shared import SharedState
from app.shared_router import LocalRouterSync, RouterSync
from app.upstream import Upstreams
from app.utility import UtilityRouter, cloud_share_for_spend

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

logger = logging.getLogger(__name__)


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
    utility: UtilityRouter | None = None  # K-model decisions, expected costs (app.utility)
    router_sync: RouterSync = field(default_factory=LocalRouterSync)  # reloads, with Redis

    async def reload_router(self, path: str | Path, *, announce: bool = True) -> RouterModel:
        """Swap in the router at ``path``, then let the threshold follow it (the reload rule is
        :class:`app.policy.ThresholdState`'s). ``RouterLoadError``: the old router keeps serving.

        ``announce``: an admin reload, which (with Redis) every replica then loads too, and
        which restarts the shared score window; ``False`` for a reload another replica
        announced (app.shared_router), which did both already.
        """
        model = await asyncio.to_thread(self.scorer.reload, path)
        spend = self.threshold.snapshot().calibrated_spend
        self.threshold.follow_router(model.default_threshold, model.calibration)
        if self.utility is not None:
            self.utility.window.clear()  # the old router's predictions
        if announce:
            await self.shared.reset_scores()
        if spend is not None:
            await self._recalibrate_spend(spend)
        if announce:
            await self.router_sync.publish(model)
        return model

    async def follow_router(self, path: Path) -> RouterModel:
        """Load a router another replica announced, without announcing it again."""
        return await self.reload_router(path, announce=False)

    async def _recalibrate_spend(self, usd_per_1k_requests: float) -> None:
        """Keep an operator's spend target across a reload: the same spend with the new file
        (its calibration data: the live window has just restarted). Without the data to do so
        the reload rule's threshold stays (the file's default), and the log says why."""
        try:
            await self.calibrate(usd_per_1k_requests=usd_per_1k_requests)
        except (InvalidRequest, RouterUnavailable) as exc:
            logger.warning(
                "spend target %.6g USD per 1k requests not kept after the reload: %s",
                usd_per_1k_requests,
                exc.message,
            )

    async def set_threshold(self, value: float) -> None:
        """An operator's threshold, here and (with Redis) on every replica."""
        self.threshold.set(value)
        await self.shared.publish()

    async def calibrate(
        self, cloud_share: float | None = None, *, usd_per_1k_requests: float | None = None
    ) -> None:
        """Calibrate to a cloud share or a spend, then share the result with the replicas.

        Two-model router: a spend becomes the cloud share with that mean cost (each upstream's
        expected cost per request), calibrated on the replicas' shared score window (else this
        one's, else the file's quantiles). K-model router: the knob whose expected spend on the
        live window matches, else on the file's ``dars.quality_calibration`` rows
        (``InvalidRequest`` without either, or for a cloud share).
        """
        model, utility = self.scorer.model, self.utility
        if model.decides_by_utility:
            if usd_per_1k_requests is None or utility is None:
                raise InvalidRequest(
                    "a cloud share calibrates a two-model router; this router chooses among "
                    f"{len(model.model_ids)} models: calibrate with usd_per_1k_requests",
                    param="cloud_share",
                    code="invalid_cloud_share",
                )
            knob = utility.knob_for_spend(
                model.model_ids, usd_per_1k_requests, model.quality_calibration
            )
            self.threshold.apply(ThresholdSnapshot(knob, "calibrated", None, usd_per_1k_requests))
            await self.shared.publish()
            return
        if usd_per_1k_requests is not None:
            if utility is None:
                raise RouterUnavailable("expected costs are not available")
            edge, cloud = utility.costs(("edge", "cloud"))
            cloud_share = cloud_share_for_spend(usd_per_1k_requests / 1000.0, edge, cloud)
        if cloud_share is None:
            raise InvalidRequest("give cloud_share or usd_per_1k_requests", code="missing_field")
        scores = await self.shared.live_scores()
        self.threshold.calibrate(
            cloud_share, model.calibration, scores=scores, spend=usd_per_1k_requests
        )
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
