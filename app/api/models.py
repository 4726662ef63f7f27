"""``GET /v1/models``: the router pseudo-models and every upstream's model."""

from __future__ import annotations

from fastapi import APIRouter

from app.cascade_policy import CASCADE_MODEL
from app.deps import ClientAuth, UpstreamsDep
from app.openapi import error_responses
from app.policy import ROUTER_MODEL
from app.protocol import ModelCard, ModelList

__all__ = ["router"]

router = APIRouter(dependencies=[ClientAuth], tags=["models"])


@router.get("/v1/models", responses=error_responses(401, 503))
async def list_models(upstreams: UpstreamsDep) -> ModelList:
    """``router`` (also usable as ``router-<threshold>``), ``router-cascade`` (also
    ``router-cascade-<entropy threshold>``), then each upstream's model (edge and cloud, or
    the upstreams file's, in its order), owned by the upstream's name."""
    return ModelList(
        data=[
            ModelCard(id=ROUTER_MODEL, owned_by="dars-router"),
            ModelCard(id=CASCADE_MODEL, owned_by="dars-router"),
            *(ModelCard(id=c.model, owned_by=name) for name, c in upstreams.clients.items()),
        ]
    )
