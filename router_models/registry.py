"""The one table of router kinds: CLI choices, configs and the ``dars.router`` metadata use it."""

from __future__ import annotations

import inspect
from typing import Any

from router_models.estimators import (
    KNNRouter,
    LengthAwareRouter,
    MatrixFactorizationRouter,
    MLPRouter,
    RouterMixin,
    SWRankingRouter,
)

__all__ = ["ROUTERS", "accepts_query_length", "make_router", "router_kind"]

ROUTERS: dict[str, type[RouterMixin]] = {
    "knn": KNNRouter,
    "mlp": MLPRouter,
    "mf": MatrixFactorizationRouter,
    "sw_ranking": SWRankingRouter,
    "length_aware": LengthAwareRouter,
}


def make_router(kind: str, **params: Any) -> Any:
    """A fresh, unfitted router of ``kind`` with ``params`` (its constructor keywords).

    Raises
    ------
    ValueError
        Unknown kind, or a keyword the router does not take.
    """
    try:
        cls = ROUTERS[kind]
    except KeyError as exc:
        raise ValueError(f"unknown router {kind!r}; choose one of {sorted(ROUTERS)}") from exc
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for router {kind!r}: {exc}") from exc


def router_kind(estimator: object) -> str:
    """The registry key of a router instance (what ``dars.router`` records)."""
    for kind, cls in ROUTERS.items():
        if type(estimator) is cls:
            return kind
    raise ValueError(f"{type(estimator).__name__} is not a registered router")


def accepts_query_length(estimator: object) -> bool:
    """Whether a router (class or instance) fits and predicts with a ``query_length`` keyword.

    Such a router also writes the contract's optional ``query_length`` ONNX input.
    """
    fit = getattr(estimator, "fit", None)
    return fit is not None and "query_length" in inspect.signature(fit).parameters
