"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can route), ``GET /metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import ServicesDep
from app.errors import RouterUnavailable
from app.protocol import ReadyResponse

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: no dependency is touched."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(services: ServicesDep) -> ReadyResponse:
    """Readiness: the encoder runs and a router model is loaded; what runs where."""
    embedder = services.embedder
    if not embedder.running:
        raise RouterUnavailable("The embedding model is not running.")
    model = services.scorer.model
    return ReadyResponse(
        router={**model.info(), "threshold": services.threshold.get()},
        encoder={"model_id": embedder.model_id, "dim": embedder.dim, "device": embedder.device},
        cache_backend=services.cache.backend,
    )


@router.get("/metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text exposition of this app's registry."""
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
