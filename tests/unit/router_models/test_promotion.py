"""The promotion gate and the rollback rule, on real ONNX router files and real fitted routers.

The held-out slice is synthetic but exact: a hidden direction ``w`` decides which queries need
the strong model (the weak model fails them), so a router scoring ``X @ w`` ranks perfectly, one
scoring ``-X @ w`` ranks backwards, and a constant router is the random router (APGR 50).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers.onnx_routers import make_linear_router, random_unit_vectors

from router_models.evaluate import Truth
from router_models.promotion import (
    GateDecision,
    GatePolicy,
    RollbackDecision,
    RollbackPolicy,
    RouteQuality,
    decide,
    gate,
    heldout_digest,
    rollback_decision,
    router_scores,
)
from router_models.registry import make_router

DIM = 16
N = 120


@pytest.fixture(scope="module")
def direction() -> np.ndarray:
    w: np.ndarray = random_unit_vectors(1, DIM, seed=7)[0]
    return w


@pytest.fixture(scope="module")
def slice_(direction: np.ndarray) -> tuple[Truth, np.ndarray]:
    """A held-out slice: queries with ``X @ w > 0`` need the strong model (weak scores 0)."""
    X = random_unit_vectors(N, DIM, seed=1)
    hard = X @ direction > 0
    truth = Truth(
        query_ids=tuple(f"q-{i:03d}" for i in range(N)),
        prompts=tuple("x" * (10 + i) for i in range(N)),
        weak=np.where(hard, 0.0, 1.0),
        strong=np.ones(N),
        weak_model="edge",
        strong_model="cloud",
    )
    return truth, X


@pytest.fixture(scope="module")
def routers(tmp_path_factory: pytest.TempPathFactory, direction: np.ndarray) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("routers")
    return {
        "good": make_linear_router(root / "good.onnx", dim=DIM, weights=8 * direction),
        "bad": make_linear_router(root / "bad.onnx", dim=DIM, weights=-8 * direction),
        "constant": make_linear_router(root / "constant.onnx", dim=DIM),
    }


# --------------------------------------------------------------------------- the gate


def test_gate_promotes_a_better_onnx_candidate(
    slice_: tuple[Truth, np.ndarray], routers: dict[str, Path]
) -> None:
    truth, X = slice_
    decision = gate(routers["constant"], routers["good"], truth, X, policy=GatePolicy(margin=5))
    assert decision.promote and decision.reason == "better-by-margin"
    assert decision.serving.apgr == pytest.approx(50.0)
    assert decision.candidate.apgr > decision.serving.apgr + 5
    assert decision.delta == pytest.approx(decision.candidate.apgr - decision.serving.apgr)
    assert decision.n_queries == N and decision.heldout_digest == heldout_digest(truth.query_ids)
    assert decision.serving.name == str(routers["constant"])
    assert decision.serving.sha256 is not None and len(decision.serving.sha256) == 64
    assert (decision.weak_model, decision.strong_model) == ("edge", "cloud")


def test_gate_refuses_a_worse_candidate(
    slice_: tuple[Truth, np.ndarray], routers: dict[str, Path]
) -> None:
    truth, X = slice_
    decision = gate(routers["good"], routers["bad"], truth, X, policy=GatePolicy(margin=0))
    assert not decision.promote and decision.reason == "not-better"
    assert decision.candidate.apgr < 50 < decision.serving.apgr


def test_gate_promotes_a_fitted_estimator_over_the_serving_file(
    slice_: tuple[Truth, np.ndarray], routers: dict[str, Path], direction: np.ndarray
) -> None:
    truth, X = slice_
    train = random_unit_vectors(300, DIM, seed=2)
    knn = make_router("knn", n_neighbors=5).fit(train, (train @ direction > 0).astype(float))
    promoted = gate(routers["constant"], knn, truth, X, candidate_name="knn-candidate")
    assert promoted.promote and promoted.candidate.name == "knn-candidate"
    assert promoted.candidate.sha256 is None
    # The same estimator as an ONNX model scores the same, so the verdict does not depend on
    # which form the candidate arrives in.
    onnx_model = knn.to_onnx()
    np.testing.assert_allclose(
        router_scores(onnx_model, X, truth.prompts), router_scores(knn, X, truth.prompts), atol=1e-5
    )
    refused = gate(knn, routers["bad"], truth, X)
    assert refused.reason == "not-better"


def test_gate_refuses_on_too_small_a_slice(
    slice_: tuple[Truth, np.ndarray], routers: dict[str, Path]
) -> None:
    truth, X = slice_
    decision = gate(
        routers["constant"], routers["good"], truth, X, policy=GatePolicy(min_queries=N + 1)
    )
    assert decision.verdict == "refuse" and decision.reason == "too-few-queries"
    assert decision.candidate.apgr > decision.serving.apgr  # the numbers are still recorded


def test_gate_refuses_a_candidate_trained_on_held_out_queries(
    slice_: tuple[Truth, np.ndarray], routers: dict[str, Path]
) -> None:
    truth, X = slice_
    decision = gate(
        routers["constant"], routers["good"], truth, X, trained_on={"other", truth.query_ids[3]}
    )
    assert decision.reason == "heldout-overlaps-training" and not decision.promote


def test_gate_refuses_when_the_slice_has_no_quality_gap(
    slice_: tuple[Truth, np.ndarray], routers: dict[str, Path]
) -> None:
    truth, X = slice_
    flat = Truth(truth.query_ids, truth.prompts, np.ones(N), np.ones(N), "edge", "cloud")
    decision = gate(routers["constant"], routers["good"], flat, X)
    assert decision.reason == "no-quality-gap" and math.isnan(decision.delta)


def test_gate_needs_scores_for_every_query(
    slice_: tuple[Truth, np.ndarray], routers: dict[str, Path]
) -> None:
    truth, X = slice_
    with pytest.raises(ValueError, match="embeddings"):
        gate(routers["constant"], routers["good"], truth, X[:-1])
    with pytest.raises(TypeError, match="neither"):
        router_scores(object(), X, truth.prompts)


# --------------------------------------------------------------------------- the margin


@pytest.mark.parametrize(
    ("serving", "candidate", "margin", "verdict", "reason"),
    [
        (60.0, 62.0, 2.0, "promote", "better-by-margin"),  # exactly the margin
        (60.0, 61.999, 2.0, "refuse", "within-margin"),
        (60.0, 60.0, 0.0, "refuse", "not-better"),  # a tie never replaces the serving router
        (60.0, 60.001, 0.0, "promote", "better-by-margin"),
        (60.0, 59.0, 0.0, "refuse", "not-better"),
        (-20.0, 10.0, 25.0, "promote", "better-by-margin"),  # worse than random is allowed
        (math.nan, math.nan, 0.0, "refuse", "no-quality-gap"),
    ],
)
def test_decide_margin_edges(
    serving: float, candidate: float, margin: float, verdict: str, reason: str
) -> None:
    got = decide(serving, candidate, 100, GatePolicy(margin=margin, min_queries=100))
    assert got[:2] == (verdict, reason)


def test_decide_counts_queries_before_metrics() -> None:
    assert decide(50.0, 90.0, 99, GatePolicy(min_queries=100))[1] == "too-few-queries"


@pytest.mark.parametrize("kwargs", [{"margin": -0.1}, {"margin": math.nan}, {"min_queries": 0}])
def test_gate_policy_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GatePolicy(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- records


def test_gate_decision_round_trips_through_json(
    slice_: tuple[Truth, np.ndarray], routers: dict[str, Path]
) -> None:
    truth, X = slice_
    decision = gate(routers["constant"], routers["good"], truth, X)
    text = decision.to_json()
    assert json.loads(text)["verdict"] == "promote"
    assert GateDecision.from_json(text) == decision
    flat = Truth(truth.query_ids, truth.prompts, np.ones(N), np.ones(N), "edge", "cloud")
    undefined = gate(routers["constant"], routers["good"], flat, X)
    data = json.loads(undefined.to_json())  # strict JSON: NaN is written as null
    assert data["delta"] is None and data["candidate"]["apgr"] is None
    assert GateDecision.from_json(undefined.to_json()).to_dict() == undefined.to_dict()


# --------------------------------------------------------------------------- rollback


def test_rollback_on_a_real_drop_with_many_observations() -> None:
    before = {"edge": RouteQuality(0.80, 1000), "cloud": RouteQuality(0.90, 800)}
    after = {"edge": RouteQuality(0.70, 1000), "cloud": RouteQuality(0.90, 800)}
    decision = rollback_decision(before, after, RollbackPolicy(max_drop=0.05, min_count=50))
    assert decision.rollback and "edge" in decision.reason
    by_route = {c.route: c for c in decision.routes}
    assert by_route["edge"].triggered and not by_route["cloud"].triggered
    assert by_route["edge"].drop == pytest.approx(0.10)


def test_no_rollback_on_the_same_drop_with_few_observations() -> None:
    before, after = {"edge": RouteQuality(0.80, 20)}, {"edge": RouteQuality(0.70, 20)}
    decision = rollback_decision(before, after, RollbackPolicy(max_drop=0.05, min_count=50))
    assert not decision.rollback and not decision.routes[0].enough
    assert "no route has 50" in decision.reason


def test_no_rollback_when_the_drop_is_within_noise() -> None:
    # 0.08 > max_drop, 60 observations a side: the bound standard error is 0.078, so a
    # one-sided z of 1.645 needs a drop above 0.128.
    before, after = {"edge": RouteQuality(0.80, 60)}, {"edge": RouteQuality(0.72, 60)}
    policy = RollbackPolicy(max_drop=0.05, min_count=50)
    assert not rollback_decision(before, after, policy).rollback
    many = {"edge": RouteQuality(0.80, 2000)}, {"edge": RouteQuality(0.72, 2000)}
    assert rollback_decision(*many, policy).rollback
    # z = 0: the threshold and the count alone decide.
    assert rollback_decision(before, after, RollbackPolicy(0.05, 50, z=0.0)).rollback


def test_no_rollback_on_a_drop_below_threshold_or_a_gain() -> None:
    policy = RollbackPolicy(max_drop=0.05, min_count=10)
    small = rollback_decision(
        {"r": RouteQuality(0.8, 10_000)}, {"r": RouteQuality(0.77, 10_000)}, policy
    )
    gain = rollback_decision({"r": RouteQuality(0.6, 500)}, {"r": RouteQuality(0.9, 500)}, policy)
    assert not small.rollback and not gain.rollback
    assert small.reason == "no route dropped beyond the threshold and the noise"


def test_rollback_skips_routes_seen_on_one_side_only() -> None:
    decision = rollback_decision({"a": RouteQuality(0.9, 500)}, {"b": RouteQuality(0.1, 500)})
    assert decision.routes == () and not decision.rollback


def test_rollback_decision_round_trips_through_json() -> None:
    before = {"edge": RouteQuality(0.8, 1000), "cloud": RouteQuality(0.9, 0)}
    after = {"edge": RouteQuality(0.6, 1000), "cloud": RouteQuality(0.9, 10)}
    decision = rollback_decision(before, after)
    text = decision.to_json()  # an empty side's infinite standard error is written as null
    assert json.loads(text)["routes"][0]["stderr"] is None
    assert RollbackDecision.from_json(text) == decision


@pytest.mark.parametrize(("mean", "count"), [(-0.1, 5), (1.1, 5), (0.5, -1)])
def test_route_quality_rejects_bad_values(mean: float, count: int) -> None:
    with pytest.raises(ValueError):
        RouteQuality(mean, count)


@pytest.mark.parametrize(
    "kwargs", [{"max_drop": -0.1}, {"max_drop": 1.0}, {"min_count": 0}, {"z": -1.0}]
)
def test_rollback_policy_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RollbackPolicy(**kwargs)  # type: ignore[arg-type]
