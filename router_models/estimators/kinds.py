"""The embedding routers by kind: what a stacking router (``length_aware``) may build on.

It lives inside the estimators package so that a router that builds another by name needs no
import of :mod:`router_models.registry` (which imports every estimator: a cycle).
"""

from __future__ import annotations

from typing import Any

from router_models.estimators.base import RouterMixin
from router_models.estimators.knn import KNNRouter
from router_models.estimators.matrix_factorization import MatrixFactorizationRouter
from router_models.estimators.mlp import MLPRouter
from router_models.estimators.sw_ranking import SWRankingRouter

__all__ = ["EMBEDDING_ROUTERS", "make_from_table"]

EMBEDDING_ROUTERS: dict[str, type[RouterMixin]] = {
    "knn": KNNRouter,
    "mlp": MLPRouter,
    "mf": MatrixFactorizationRouter,
    "sw_ranking": SWRankingRouter,
}


def make_from_table(table: dict[str, type[Any]], kind: str, **params: Any) -> Any:
    """A fresh ``table[kind](**params)``; unknown kinds and keywords are ``ValueError``."""
    try:
        cls = table[kind]
    except KeyError as exc:
        raise ValueError(f"unknown router {kind!r}; choose one of {sorted(table)}") from exc
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for router {kind!r}: {exc}") from exc
