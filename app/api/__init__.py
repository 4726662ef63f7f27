"""HTTP routes, one module per resource; ``api_routers()`` lists them for ``create_app``."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import admin, cascade_admin, chat, feedback, health, models, route

__all__ = ["api_routers"]


def api_routers() -> list[APIRouter]:
    """Every router of the service, in registration order."""
    return [
        chat.router,
        feedback.router,
        route.router,
        models.router,
        health.router,
        admin.router,
        cascade_admin.router,
    ]
