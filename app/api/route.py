"""``POST /v1/route``: the decision for a chat request body, without forwarding it."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.chat import ROUTE_ERRORS, ChatBody, route_request
from app.deps import ClientAuth, ServicesDep
from app.errors import InvalidRequest
from app.protocol import RouteResponse

__all__ = ["router"]

router = APIRouter(dependencies=[ClientAuth], tags=["chat"])


@router.post("/v1/route", responses=ROUTE_ERRORS)
async def route_only(body: ChatBody, services: ServicesDep) -> RouteResponse:
    """Where this chat request would go; dry runs do not enter the live score window.

    Not for the cascade: it decides from the edge model's answers, which a dry run does not
    draw (400 ``cascade_not_routable``).
    """
    if services.cascade.selection(body.model) is not None:
        raise InvalidRequest(
            f"model {body.model!r} uses the confidence cascade, which decides from the edge "
            "model's sampled answers; /v1/route does not sample. Use 'router' or "
            "'router-<threshold>' for a dry run of the trained router.",
            param="model",
            code="cascade_not_routable",
        )
    routed = await route_request(body, services, record=False)
    decision = routed.decision
    return RouteResponse(
        route=decision.route,
        reason=decision.reason,
        model=services.upstreams[decision.route].model,
        score=decision.score,
        threshold=decision.threshold,
        cache_hit=routed.cache_hit,
        quality=decision.quality,
        runner_up=decision.runner_up,
    )
