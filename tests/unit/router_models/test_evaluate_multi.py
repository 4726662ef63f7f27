"""K-model evaluation on a case small enough to compute by hand."""

from __future__ import annotations

import numpy as np
import pytest

from router_models.evaluate_multi import (
    Curve,
    aiq,
    bootstrap_aiq_difference,
    cost_to_reach,
    decisions,
    evaluate_curve,
    lambda_grid,
    mixture_curve,
    route,
    single_model_points,
    sweep,
    upper_hull,
)

# Models A, B, C cost 1, 2, 4 per query. A solves query 0, B query 1, C both.
TRUTH = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
PRICE = np.array([1.0, 2.0, 4.0])
COST = np.tile(PRICE, (2, 1))


def test_single_models_and_random_mixtures() -> None:
    singles = single_model_points(TRUTH, COST)
    np.testing.assert_allclose(singles.cost, [1, 2, 4])
    np.testing.assert_allclose(singles.quality, [0.5, 0.5, 1.0])
    mix = mixture_curve(singles)  # B is no better than A: off the frontier
    np.testing.assert_allclose(mix.cost, [1, 4])
    assert aiq(mix, 1.0, 4.0) == pytest.approx(0.75)  # mean of a line from 0.5 to 1
    assert cost_to_reach(mix, 0.8) == pytest.approx(2.8)
    assert cost_to_reach(mix, 1.0) == pytest.approx(4.0)


def test_oracle_curve_aiq_and_reach() -> None:
    oracle = sweep(TRUTH, PRICE, TRUTH, COST)
    # lambda = 0: A for query 0 (tie with C, A is cheaper), B for query 1 -> cost 1.5, quality 1.
    assert (1.5, 1.0) in set(zip(oracle.cost.tolist(), oracle.quality.tolist(), strict=True))
    assert oracle.cost.min() == 1.0  # a large lambda sends everything to A
    # Hull: (1, 0.5) -> (1.5, 1.0), flat to 4: (0.375 + 2.5) / 3.
    assert aiq(oracle, 1.0, 4.0) == pytest.approx(2.875 / 3)
    report = evaluate_curve("oracle", oracle, single_model_points(TRUTH, COST))
    assert report.reach_cost["cost@50%"] == pytest.approx(1000 * 1.0)
    assert report.reach_cost["cost@95%"] == pytest.approx(1000 * 1.45)
    assert report.reach_cost["cost@100%"] == pytest.approx(1000 * 1.5)
    assert report.max_quality == 1.0


def test_route_breaks_ties_towards_the_cheaper_model() -> None:
    q_hat = np.array([[0.7, 0.7, 0.7]])
    assert route(q_hat, np.array([0.5, 0.25, 1.0]), 0.0)[0] == 1


def test_cost_falls_monotonically_as_lambda_rises() -> None:
    rng = np.random.default_rng(0)
    q_hat = rng.random((300, 5))
    price = rng.random(5) + 0.1
    grid = lambda_grid(q_hat, price / price.max())
    assert grid[0] == 0.0 and np.all(np.diff(grid) > 0)
    choices = decisions(q_hat, price, grid)
    mean_cost = price[choices].mean(axis=1)
    assert np.all(np.diff(mean_cost) <= 1e-12)
    assert np.all(choices[-1] == np.argmin(price))  # past the last switch: the cheapest


def test_upper_hull_and_aiq_edges() -> None:
    curve = Curve(np.array([1.0, 1.0, 2.0, 3.0, 4.0]), np.array([0.2, 0.4, 0.5, 0.9, 0.8]))
    hull = upper_hull(curve)
    np.testing.assert_allclose(hull.cost, [1.0, 3.0])  # (2, 0.5) under the chord, (4, .8) lower
    assert aiq(curve, 1.0, 5.0) == pytest.approx((0.65 * 2 + 0.9 * 2) / 4)
    assert np.isnan(cost_to_reach(curve, 0.95))


def test_bootstrap_of_a_router_against_itself_is_zero() -> None:
    choices = decisions(TRUTH, PRICE)
    diff, low, high = bootstrap_aiq_difference(choices, choices, TRUTH, COST, n_boot=20)
    assert diff == low == high == 0.0
    always_a = np.zeros_like(choices)
    diff, low, high = bootstrap_aiq_difference(choices, always_a, TRUTH, COST, n_boot=50)
    assert diff == pytest.approx(2.875 / 3 - 0.5) and low <= diff <= high
