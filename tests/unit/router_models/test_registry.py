"""The router registry: one table, clear errors."""

from __future__ import annotations

import pytest

from router_models.estimators import KNNRouter, LengthAwareRouter, SWRankingRouter
from router_models.registry import ROUTERS, accepts_query_length, make_router, router_kind


def test_registry_names_the_routers() -> None:
    assert sorted(ROUTERS) == ["knn", "length_aware", "mf", "mlp", "sw_ranking"]
    for kind, cls in ROUTERS.items():
        est = make_router(kind)
        assert type(est) is cls
        assert router_kind(est) == kind


def test_only_the_length_aware_router_takes_query_length() -> None:
    takes = sorted(kind for kind, cls in ROUTERS.items() if accepts_query_length(cls))
    assert takes == ["length_aware"]
    assert accepts_query_length(LengthAwareRouter())
    assert not accepts_query_length(KNNRouter())
    assert not accepts_query_length(object())


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
