"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can route), ``GET /metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import ServicesDep
from app.errors import RouterUnavailable
from app.openapi import error_responses
from app.protocol import ReadyResponse, RouterStatus

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: no dependency is touched."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
async def readyz(services: ServicesDep) -> ReadyResponse:
    """Readiness: the encoder runs and a router model is loaded; what runs where."""
    embedder = services.embedder
    if not embedder.running:
        raise RouterUnavailable("The embedding model is not running.")
    model = services.scorer.model
    return ReadyResponse(
        router=RouterStatus(
            path=str(model.path),
            provider=model.provider,
            embedding_model=model.embedding_model,
            label_scheme=model.label_scheme,
            router=model.router_kind,
            default_threshold=model.default_threshold,
            threshold=services.threshold.get(),
            threshold_source=services.threshold.source,
        ),
        encoder={"model_id": embedder.model_id, "dim": embedder.dim, "device": embedder.device},
        cache_backend=services.cache.backend,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **error_responses(503),
    },
)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text exposition of this app's registry."""
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
