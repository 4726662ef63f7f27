"""The gate's paired bootstrap bound: a small slice's lucky win is refused, a real one is not.

The slice has 30 queries, every other one needs the strong model. The serving router is
constant (APGR 50 on every resample); a router scoring uniform noise beats it by 7 APGR points
on this slice by luck (seed 0), far above a 1-point margin: only the bound tells it from the
perfect ranker, whose gain is 25 points with a lower bound near 17.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from router_models.evaluate import Truth
from router_models.evaluate_multi import aiq_difference, bootstrap_aiq_difference
from router_models.promotion import Bound, GateDecision, GatePolicy, decide, paired_bootstrap
from router_models.promotion.bootstrap import apgr_delta, lower_bound
from router_models.promotion.gate import gate
from router_models.registry import make_router

N = 30


class FixedScores:
    """A fitted-estimator stand-in returning given scores (the gate calls ``predict``)."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def predict(self, X: np.ndarray) -> np.ndarray:
        assert len(X) == len(self.scores)
        return self.scores


@pytest.fixture(scope="module")
def small_slice() -> tuple[Truth, np.ndarray]:
    hard = np.arange(N) % 2 == 0
    truth = Truth(
        query_ids=tuple(f"q-{i:02d}" for i in range(N)),
        prompts=tuple("p" * (i + 1) for i in range(N)),
        weak=np.where(hard, 0.0, 1.0),
        strong=np.ones(N),
        weak_model="edge",
        strong_model="cloud",
    )
    return truth, np.zeros((N, 4), dtype=np.float32)


def _noise() -> FixedScores:
    return FixedScores(np.random.default_rng(0).random(N))


def test_a_lucky_win_beats_the_margin_but_not_the_bound(
    small_slice: tuple[Truth, np.ndarray],
) -> None:
    truth, X = small_slice
    constant = FixedScores(np.zeros(N))
    policy = GatePolicy(margin=1.0, min_queries=20)
    without = gate(
        constant, _noise(), truth, X, policy=GatePolicy(margin=1.0, min_queries=20, n_resamples=0)
    )
    assert without.promote and without.delta == pytest.approx(7.0)  # the margin alone: promote
    assert math.isnan(without.delta_lower) and without.n_resamples == 0
    refused = gate(constant, _noise(), truth, X, policy=policy)
    assert (refused.verdict, refused.reason) == ("refuse", "not-significant")
    assert refused.delta == pytest.approx(7.0) and refused.delta_lower < 0
    assert (refused.confidence, refused.n_resamples) == (0.95, 1000)
    assert "lower bound" in refused.detail
    perfect = gate(
        constant, FixedScores(np.where(np.arange(N) % 2 == 0, 1.0, 0.0)), truth, X, policy=policy
    )
    assert perfect.promote and perfect.reason == "better-by-margin"
    assert perfect.delta == pytest.approx(25.0) and 10 < perfect.delta_lower < 25


def test_the_bound_is_seeded_and_paired(small_slice: tuple[Truth, np.ndarray]) -> None:
    truth, _ = small_slice
    noise = _noise().scores

    def statistic(rows: np.ndarray | None) -> float:
        return apgr_delta(noise, noise, truth, rows)

    same = paired_bootstrap(statistic, N, n_resamples=200, confidence=0.95, seed=3)
    assert same.point == 0.0 and same.lower == 0.0  # paired: a router never differs from itself

    def against_constant(rows: np.ndarray | None) -> float:
        return apgr_delta(np.zeros(N), noise, truth, rows)

    runs = [
        paired_bootstrap(against_constant, N, n_resamples=200, confidence=0.95, seed=s)
        for s in (1, 1, 2)
    ]
    assert runs[0] == runs[1] and runs[0].lower != runs[2].lower


def test_the_aiq_bound_matches_evaluate_multi_bootstrap() -> None:
    """Same seed, same rows: the gate's 97.5% lower bound is the 95% interval's lower end."""
    rng = np.random.default_rng(5)
    truth = rng.random((25, 3))
    cost = np.tile([1.0, 2.0, 5.0], (25, 1))
    choices_a = rng.integers(0, 3, (6, 25))
    choices_b = rng.integers(0, 3, (6, 25))
    point, low, _ = bootstrap_aiq_difference(choices_a, choices_b, truth, cost, n_boot=300, seed=4)
    bound = paired_bootstrap(
        lambda rows: aiq_difference(choices_a, choices_b, truth, cost, rows),
        25,
        n_resamples=300,
        confidence=0.975,
        seed=4,
    )
    assert bound.point == pytest.approx(point) and bound.lower == pytest.approx(low)


def test_lower_bound_counts_undefined_draws_as_losses() -> None:
    assert lower_bound(np.arange(101.0), 0.95) == pytest.approx(5.0)
    few_undefined = np.r_[np.full(3, np.nan), np.arange(97.0)]
    assert lower_bound(few_undefined, 0.95) == pytest.approx(
        np.quantile(np.r_[[-1e9] * 3, np.arange(97.0)], 0.05)
    )
    assert math.isnan(lower_bound(np.r_[np.full(10, np.nan), np.arange(90.0)], 0.95))
    assert math.isnan(lower_bound([], 0.95))


@pytest.mark.parametrize(
    ("lower", "resamples", "reason"),
    [
        (0.5, 1000, "better-by-margin"),
        (0.0, 1000, "not-significant"),  # the bound must be strictly above 0
        (-0.5, 1000, "not-significant"),
        (math.nan, 1000, "not-significant"),  # undefined on too many resamples
        (math.nan, 0, "better-by-margin"),  # no resamples: the margin alone decides
    ],
)
def test_decide_with_a_bound(lower: float, resamples: int, reason: str) -> None:
    bound = Bound(point=3.0, lower=lower, confidence=0.95, n_resamples=resamples)
    assert decide(60.0, 63.0, 100, GatePolicy(margin=2.0), bound=bound)[1] == reason


def test_decide_checks_the_margin_before_the_bound() -> None:
    bound = Bound(point=1.0, lower=-1.0, confidence=0.95, n_resamples=1000)
    assert decide(60.0, 61.0, 100, GatePolicy(margin=2.0), bound=bound)[1] == "within-margin"
    aiq = decide(0.60, 0.605, 100, GatePolicy(aiq_margin=0.01), metric="AIQ")
    assert aiq[1] == "within-margin" and "AIQ +0.0050" in aiq[2]


@pytest.mark.parametrize(
    "kwargs",
    [{"confidence": 0.0}, {"confidence": 1.0}, {"n_resamples": -1}, {"aiq_margin": -0.01}],
)
def test_gate_policy_rejects_bad_bootstrap_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GatePolicy(**kwargs)  # type: ignore[arg-type]


def test_the_bound_round_trips_and_old_records_still_read(
    small_slice: tuple[Truth, np.ndarray],
) -> None:
    truth, X = small_slice
    decision = gate(FixedScores(np.zeros(N)), _noise(), truth, X, policy=GatePolicy(min_queries=20))
    data = json.loads(decision.to_json())
    assert data["reason"] == "not-significant" and data["delta_lower"] < 0
    assert (data["confidence"], data["n_resamples"], data["models"]) == (
        0.95,
        1000,
        ["edge", "cloud"],
    )
    assert GateDecision.from_json(decision.to_json()) == decision
    for key in ("delta_lower", "confidence", "n_resamples", "models"):
        del data[key]  # a decisions.jsonl line written before the bound existed
    old = GateDecision.from_dict(data)
    assert old.n_resamples == 0 and math.isnan(old.delta_lower) and old.models == ()


def test_an_estimator_candidate_gets_the_same_bound_as_its_scores(
    small_slice: tuple[Truth, np.ndarray],
) -> None:
    truth, _ = small_slice
    X = np.random.default_rng(1).standard_normal((N, 4)).astype(np.float32)
    knn = make_router("knn", n_neighbors=3).fit(X, truth.strong - truth.weak)
    via_estimator = gate(FixedScores(np.zeros(N)), knn, truth, X, policy=GatePolicy(min_queries=20))
    scores = FixedScores(np.asarray(knn.predict(X), dtype=np.float64))
    via_scores = gate(FixedScores(np.zeros(N)), scores, truth, X, policy=GatePolicy(min_queries=20))
    assert via_estimator.delta_lower == pytest.approx(via_scores.delta_lower)
