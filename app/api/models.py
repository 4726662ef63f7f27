"""``GET /v1/models``: the router pseudo-model and the two upstream models."""

from __future__ import annotations

from fastapi import APIRouter

from app.cascade_policy import CASCADE_MODEL
from app.deps import ClientAuth, SettingsDep
from app.openapi import error_responses
from app.policy import ROUTER_MODEL
from app.protocol import ModelCard, ModelList

__all__ = ["router"]

router = APIRouter(dependencies=[ClientAuth], tags=["models"])


@router.get("/v1/models", responses=error_responses(401))
async def list_models(settings: SettingsDep) -> ModelList:
    """``router`` (also usable as ``router-<threshold>``), ``router-cascade`` (also
    ``router-cascade-<entropy threshold>``), then the edge and cloud models."""
    return ModelList(
        data=[
            ModelCard(id=ROUTER_MODEL, owned_by="dars-router"),
            ModelCard(id=CASCADE_MODEL, owned_by="dars-router"),
            ModelCard(id=settings.edge_model, owned_by="edge"),
            ModelCard(id=settings.cloud_model, owned_by="cloud"),
        ]
    )
