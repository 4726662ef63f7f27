"""The one table of router kinds: CLI choices, configs and the ``dars.router`` metadata use it.

``ROUTERS`` are the two-model routers (output ``score``); ``QUALITY_ROUTERS`` the K-model
routers of contract v2 (output ``quality``). :func:`make_router` and :func:`router_kind` know
both. The embedding routers' table itself lives in ``estimators.kinds``, so that the
estimators never import this module (no import cycle).
"""

from __future__ import annotations

import inspect
from typing import Any

from router_models.estimators import (
    KNNQualityRouter,
    LengthAwareRouter,
    MFQualityRouter,
    MLPQualityRouter,
    QualityRouterMixin,
    RouterMixin,
)
from router_models.estimators.kinds import EMBEDDING_ROUTERS, make_from_table

__all__ = [
    "QUALITY_ROUTERS",
    "ROUTERS",
    "accepts_query_length",
    "is_quality_router",
    "make_router",
    "router_kind",
]

ROUTERS: dict[str, type[RouterMixin]] = {
    **EMBEDDING_ROUTERS,
    "length_aware": LengthAwareRouter,
}
QUALITY_ROUTERS: dict[str, type[QualityRouterMixin]] = {
    "knn_quality": KNNQualityRouter,
    "mf_quality": MFQualityRouter,
    "mlp_quality": MLPQualityRouter,
}
_ALL: dict[str, type[RouterMixin]] = {**ROUTERS, **QUALITY_ROUTERS}


def make_router(kind: str, **params: Any) -> Any:
    """A fresh, unfitted router of ``kind`` (either table) with ``params``.

    Raises
    ------
    ValueError
        Unknown kind, or a keyword the router does not take.
    """
    return make_from_table(_ALL, kind, **params)


def router_kind(estimator: object) -> str:
    """The registry key of a router instance (what ``dars.router`` records)."""
    for kind, cls in _ALL.items():
        if type(estimator) is cls:
            return kind
    raise ValueError(f"{type(estimator).__name__} is not a registered router")


def is_quality_router(estimator: object) -> bool:
    """Whether a router (class or instance) predicts K qualities (contract v2)."""
    cls = estimator if isinstance(estimator, type) else type(estimator)
    return issubclass(cls, QualityRouterMixin)


def accepts_query_length(estimator: object) -> bool:
    """Whether a router (class or instance) fits and predicts with a ``query_length`` keyword.

    Such a router also writes the contract's optional ``query_length`` ONNX input.
    """
    fit = getattr(estimator, "fit", None)
    return fit is not None and "query_length" in inspect.signature(fit).parameters
