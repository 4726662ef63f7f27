"""Utility routing: the trainer's rule, a monotone knob, expected costs, spend calibration."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import InvalidRequest
from app.utility import (
    MIN_LIVE_ROWS,
    PRIOR_TOKENS,
    TokenAverages,
    choices,
    choose,
    cloud_share_for_spend,
    knob_for_spend,
    knob_lambda,
)
from router_models.evaluate_multi import route

QUALITY = np.array([0.3, 0.6, 0.9])
COST = np.array([0.0, 1e-5, 1e-4])  # unit costs 0, 0.1, 1


@pytest.mark.parametrize(
    ("knob", "chosen", "runner_up"),
    [(0.0, 2, 1), (0.1, 2, 1), (0.3, 1, 2), (0.5, 1, 0), (0.8, 0, 1), (1.0, 0, 1)],
)
def test_the_knob_moves_from_best_quality_to_cheapest(
    knob: float, chosen: int, runner_up: int
) -> None:
    # large beats medium while lambda < 1/3 (t < 0.25), medium beats small while lambda < 3.
    choice = choose(QUALITY, COST, knob)

    assert (choice.index, choice.runner_up) == (chosen, runner_up)


def test_the_decision_is_the_trainers() -> None:
    rng = np.random.default_rng(0)
    q, cost = rng.random((200, 4)), rng.random(4) * 1e-3
    for knob in (0.0, 0.2, 0.5, 0.9):
        expected = route(q, cost / cost.max(), knob_lambda(knob))
        np.testing.assert_array_equal(choices(q, cost, knob), expected)


def test_a_larger_knob_never_picks_a_dearer_model() -> None:
    rng = np.random.default_rng(1)
    q, cost = rng.random((300, 5)), rng.random(5)
    knobs = np.linspace(0.0, 1.0, 41)
    picked_cost = np.stack([cost[choices(q, cost, float(t))] for t in knobs])

    assert np.all(np.diff(picked_cost, axis=0) <= 0)


def test_equal_utilities_go_to_the_cheaper_and_free_models_to_the_best() -> None:
    assert choose(np.array([0.5, 0.5]), np.array([2.0, 1.0]), 0.0).index == 1
    assert choose(QUALITY, np.zeros(3), 0.9).index == 2  # no prices: quality alone


def test_knob_lambda_maps_the_unit_interval() -> None:
    assert (knob_lambda(0.0), knob_lambda(0.5), knob_lambda(1.0)) == (0.0, 1.0, float("inf"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        knob_lambda(1.5)


def test_spend_calibration_finds_the_smallest_knob_within_the_target() -> None:
    rows = np.tile(QUALITY, (60, 1))

    medium = knob_for_spend(rows, COST, 2e-5)  # medium costs 1e-5, large 1e-4
    assert cost_at(rows, medium) <= 2e-5
    assert cost_at(rows, medium - 1e-6) > 2e-5
    assert knob_for_spend(rows, COST, 1.0) == 0.0
    assert knob_for_spend(rows, COST, 0.0) == pytest.approx(0.75, abs=1e-6)  # small from here


def cost_at(rows: np.ndarray, knob: float) -> float:
    return float(COST[choices(rows, COST, knob)].mean())


def test_cloud_share_for_a_spend() -> None:
    assert cloud_share_for_spend(0.5e-3, 0.0, 1e-3) == pytest.approx(0.5)
    assert cloud_share_for_spend(5e-3, 0.0, 1e-3) == 1.0
    assert cloud_share_for_spend(0.0, 1e-4, 1e-3) == 0.0


def test_token_averages_fall_back_to_other_upstreams_then_the_prior() -> None:
    tokens = TokenAverages(window=2)
    assert tokens.expected("a") == PRIOR_TOKENS
    tokens.record("a", 10, 100)
    tokens.record("a", 30, 300)
    tokens.record("a", 50, 500)  # window 2: the first answer is gone

    assert tokens.expected("a") == (40.0, 400.0)
    assert tokens.expected("b") == (40.0, 400.0)


def test_spend_calibration_needs_live_traffic_and_says_so() -> None:
    from app.upstreams_file import UpstreamsConfig
    from app.utility import UtilityRouter

    config = UpstreamsConfig((), {})
    router = UtilityRouter(config, upstreams=None, window=100)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="live traffic only") as caught:
        router.knob_for_spend(["a", "b"], 1.0)
    assert caught.value.code == "calibration_unavailable"
    assert f"need {MIN_LIVE_ROWS}" in caught.value.message


def test_spend_calibration_falls_back_to_the_files_rows_before_traffic() -> None:
    from app.upstreams_file import UpstreamsConfig
    from app.utility import UtilityRouter

    rows = np.asarray([[0.3, 0.9], [0.5, 0.55], [0.2, 0.3]])
    cost = np.asarray([0.001, 0.01])
    router = UtilityRouter(UpstreamsConfig((), {}), upstreams=None, window=100)  # type: ignore[arg-type]
    router.targets = lambda ids: tuple(ids)  # type: ignore[method-assign]
    router.costs = lambda names: cost  # type: ignore[method-assign]
    router.window.add(np.asarray([0.1, 0.9]))  # fewer than MIN_LIVE_ROWS live rows

    knob = router.knob_for_spend(["a", "b"], 5.0, rows)

    assert knob == knob_for_spend(rows, cost, 0.005)
    assert float(cost[choices(rows, cost, knob)].mean()) <= 0.005
    assert router.spend_per_1k(["a", "b"], knob, rows) == pytest.approx(
        float(cost[choices(rows, cost, knob)].mean()) * 1000
    )
