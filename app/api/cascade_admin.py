"""Admin API of the confidence cascade's entropy threshold (bearer ``DARS_ADMIN_TOKEN``).

The same three operations as the router's threshold (``app.api.admin``): read, set, calibrate
to a cloud share from the recent live entropies. The threshold lives in this replica.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import AdminAuth, ServicesDep
from app.openapi import error_responses
from app.protocol import CalibrateRequest, CascadeThresholdResponse, ThresholdUpdate

__all__ = ["router"]

router = APIRouter(
    prefix="/admin/cascade",
    dependencies=[AdminAuth],
    tags=["admin"],
    responses=error_responses(401, 403, 503),
)
WITH_BODY = error_responses(400, 413)


def _threshold(services: ServicesDep) -> CascadeThresholdResponse:
    cascade = services.cascade
    return CascadeThresholdResponse(
        value=cascade.threshold.get(),
        default=cascade.config.threshold,
        source=cascade.threshold.source,
        k=cascade.config.k,
        cloud_share=cascade.threshold.cloud_share(),
        live_entropies=int(cascade.threshold.live_scores().size),
    )


@router.get("/threshold")
async def get_cascade_threshold(services: ServicesDep) -> CascadeThresholdResponse:
    return _threshold(services)


@router.put("/threshold", responses=WITH_BODY)
async def set_cascade_threshold(
    body: ThresholdUpdate, services: ServicesDep
) -> CascadeThresholdResponse:
    """Set the entropy threshold: 0 escalates on any disagreement, 1 never escalates."""
    await services.cascade.set_threshold(body.value)
    return _threshold(services)


@router.post("/threshold/calibrate", responses=WITH_BODY)
async def calibrate_cascade_threshold(
    body: CalibrateRequest, services: ServicesDep
) -> CascadeThresholdResponse:
    """The threshold escalating about ``cloud_share`` of recent sampled requests (needs 50)."""
    await services.cascade.calibrate(body.cloud_share)
    return _threshold(services)
