"""The router registry: one table, clear errors."""

from __future__ import annotations

import pytest

from router_models.estimators import KNNRouter, SWRankingRouter
from router_models.registry import ROUTERS, make_router, router_kind


def test_registry_names_the_four_routers() -> None:
    assert sorted(ROUTERS) == ["knn", "mf", "mlp", "sw_ranking"]
    for kind, cls in ROUTERS.items():
        est = make_router(kind)
        assert type(est) is cls
        assert router_kind(est) == kind


def test_make_router_passes_parameters() -> None:
    est = make_router("sw_ranking", gamma=20.0, random_state=3)
    assert isinstance(est, SWRankingRouter)
    assert est.get_params()["gamma"] == 20.0


def test_unknown_kind_and_parameters_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown router 'bert'"):
        make_router("bert")
    with pytest.raises(ValueError, match="bad parameters"):
        make_router("knn", k=3)
    with pytest.raises(ValueError, match="not a registered router"):
        router_kind(object())
    assert router_kind(KNNRouter()) == "knn"
