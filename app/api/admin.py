"""Admin API (bearer ``DARS_ADMIN_TOKEN``): threshold, calibration, router hot reload.

With a K-model router the threshold endpoints set the quality/cost knob instead (``mode``
``utility``; app.utility), shared through Redis the same way.

Without a configured token every admin route answers 403, so the API is off by default.
"""

from __future__ import annotations

import math

from fastapi import APIRouter

from app.deps import AdminAuth, ServicesDep
from app.errors import InvalidRequest
from app.openapi import error_responses
from app.protocol import (
    ReloadRequest,
    ReloadResponse,
    RouterCalibrateRequest,
    ThresholdResponse,
    ThresholdUpdate,
    UtilityThresholdResponse,
)
from app.scoring import RouterLoadError
from app.utility import knob_lambda

__all__ = ["router"]

router = APIRouter(
    prefix="/admin",
    dependencies=[AdminAuth],
    tags=["admin"],
    responses=error_responses(401, 403, 503),
)
WITH_BODY = error_responses(400, 413)


def _threshold(services: ServicesDep) -> ThresholdResponse | UtilityThresholdResponse:
    model, value = services.scorer.model, services.threshold.get()
    fields = {
        "value": value,
        "default": model.default_threshold,
        "source": services.threshold.source,
        "cloud_share": services.threshold.cloud_share(),
    }
    if not model.decides_by_utility or services.utility is None:
        return ThresholdResponse.model_validate(fields)
    utility = services.utility
    names = utility.targets(model.model_ids)
    lam = knob_lambda(value)
    return UtilityThresholdResponse.model_validate(
        {
            **fields,
            "cloud_share": None,
            "tradeoff_lambda": None if math.isinf(lam) else lam,
            "usd_per_1k_requests": utility.spend_per_1k(
                model.model_ids, value, model.quality_calibration
            ),
            "upstream_costs_usd": dict(zip(names, utility.costs(names).tolist(), strict=True)),
        }
    )


@router.get("/threshold")
async def get_threshold(services: ServicesDep) -> ThresholdResponse | UtilityThresholdResponse:
    return _threshold(services)


@router.put("/threshold", responses=WITH_BODY)
async def set_threshold(
    body: ThresholdUpdate, services: ServicesDep
) -> ThresholdResponse | UtilityThresholdResponse:
    """Set the threshold (every replica, with Redis); an operator's survives router reloads."""
    await services.set_threshold(body.value)
    return _threshold(services)


@router.post("/threshold/calibrate", responses=WITH_BODY)
async def calibrate_threshold(
    body: RouterCalibrateRequest, services: ServicesDep
) -> ThresholdResponse | UtilityThresholdResponse:
    """Set the threshold that sends about ``cloud_share`` of the traffic to the cloud, or the
    threshold / trade-off knob expected to spend ``usd_per_1k_requests``.

    With Redis, on the live scores of every replica, and the result holds on every replica.
    """
    await services.calibrate(body.cloud_share, usd_per_1k_requests=body.usd_per_1k_requests)
    return _threshold(services)


@router.post("/router/reload", responses=WITH_BODY)
async def reload_router(body: ReloadRequest, services: ServicesDep) -> ReloadResponse:
    """Load and check a router file, then swap it in; on any problem the old one keeps serving.

    The threshold follows the reload rule: a default one becomes the new file's default, an
    operator's is kept, a calibrated one is recalibrated; the rolling score window restarts.
    With Redis, every other replica then loads the same path (app.shared_router).
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
