"""Admin API (bearer ``DARS_ADMIN_TOKEN``): threshold, calibration, router hot reload.

Without a configured token every admin route answers 403, so the API is off by default.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import AdminAuth, ServicesDep
from app.errors import InvalidRequest
from app.openapi import error_responses
from app.protocol import (
    CalibrateRequest,
    ReloadRequest,
    ReloadResponse,
    ThresholdResponse,
    ThresholdUpdate,
)
from app.scoring import RouterLoadError

__all__ = ["router"]

router = APIRouter(
    prefix="/admin",
    dependencies=[AdminAuth],
    tags=["admin"],
    responses=error_responses(401, 403, 503),
)
WITH_BODY = error_responses(400, 413)


def _threshold(services: ServicesDep) -> ThresholdResponse:
    return ThresholdResponse(
        value=services.threshold.get(),
        default=services.scorer.model.default_threshold,
        source=services.threshold.source,
        cloud_share=services.threshold.cloud_share(),
    )


@router.get("/threshold")
async def get_threshold(services: ServicesDep) -> ThresholdResponse:
    return _threshold(services)


@router.put("/threshold", responses=WITH_BODY)
async def set_threshold(body: ThresholdUpdate, services: ServicesDep) -> ThresholdResponse:
    """Set the threshold (every replica, with Redis); an operator's survives router reloads."""
    await services.set_threshold(body.value)
    return _threshold(services)


@router.post("/threshold/calibrate", responses=WITH_BODY)
async def calibrate_threshold(body: CalibrateRequest, services: ServicesDep) -> ThresholdResponse:
    """Set the threshold that sends about ``cloud_share`` of the traffic to the cloud.

    With Redis, on the live scores of every replica, and the result holds on every replica.
    """
    await services.calibrate(body.cloud_share)
    return _threshold(services)


@router.post("/router/reload", responses=WITH_BODY)
async def reload_router(body: ReloadRequest, services: ServicesDep) -> ReloadResponse:
    """Load and check a router file, then swap it in; on any problem the old one keeps serving.

    The threshold follows the reload rule: a default one becomes the new file's default, an
    operator's is kept, a calibrated one is recalibrated; the rolling score window restarts.
    """
    path = body.path if body.path is not None else services.scorer.model.path
    try:
        model = await services.reload_router(path)
    except RouterLoadError as exc:
        raise InvalidRequest(
            f"Router model rejected; the previous one keeps serving: {exc}",
            param="path",
            code="router_load_failed",
        ) from exc
    return ReloadResponse(
        path=str(model.path),
        provider=model.provider,
        default_threshold=model.default_threshold,
        embedding_model=model.embedding_model,
    )
