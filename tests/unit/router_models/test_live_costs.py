"""Costs of the K-model gate from live observations: observed per cell, else per model, else
the price table's estimate; a model with none of them is an error, not a silent zero."""

from __future__ import annotations

import numpy as np
import pytest

from router_models.labels import quality_labels
from router_models.live.costs import cell_costs, model_costs
from router_models.observations import Observation
from router_models.prices import query_costs


def _obs(query: str, model: str, cost: float | None) -> Observation:
    return Observation.from_dict(
        {"dataset": "live", "split": "all", "query_id": query, "prompt": f"prompt {query}",
         "model": model, "score": 1.0, "cost": cost}
    )  # fmt: skip


def test_cells_use_observed_costs_then_the_model_mean_then_prices() -> None:
    rows = [
        _obs("a", "edge", 0.1), _obs("a", "edge", 0.3), _obs("b", "edge", None),
        _obs("a", "gemma-7b-it", None), _obs("b", "gemma-7b-it", None),
    ]  # fmt: skip
    labels = quality_labels(rows, ("edge", "gemma-7b-it"))
    by_model = model_costs(rows)
    assert by_model == pytest.approx({"edge": 0.2})
    costs = cell_costs(rows, labels, by_model)
    assert costs[:, 0] == pytest.approx([0.2, 0.2])  # cell mean; b has none: the model mean
    priced = query_costs(labels.prompts, labels.response_chars[:, 1:], ["gemma-7b-it"])[:, 0]
    np.testing.assert_allclose(costs[:, 1], priced)


def test_a_model_without_any_cost_or_price_is_an_error() -> None:
    rows = [_obs("a", "edge", 0.1), _obs("a", "home-brew", None)]
    labels = quality_labels(rows, ("edge", "home-brew"))
    with pytest.raises(ValueError, match="no cost for model 'home-brew'"):
        cell_costs(rows, labels, model_costs(rows))
