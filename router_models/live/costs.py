"""Costs of the K-model gate from the live observations: what each answer actually cost.

AIQ trades quality for cost, so the gate needs each held-out query's cost on each model and
each model's expected cost per request (the routers' decision cost). The live records carry
the upstream's cost of every answer (``cost`` of an observation); a cell without one takes its
model's mean observed cost, and a model never seen with a cost takes the price table's token
estimate (:func:`router_models.prices.query_costs`), so costs of listed models still work
from exported files that carry none.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from router_models.labels import QualityLabels
from router_models.observations import Observation
from router_models.prices import PRICES, query_costs

__all__ = ["cell_costs", "model_costs"]

FloatArray = npt.NDArray[np.float64]


def model_costs(rows: Iterable[Observation]) -> dict[str, float]:
    """Mean observed cost (USD) per model over the rows that carry one."""
    seen: dict[str, list[float]] = defaultdict(list)
    for obs in rows:
        if obs.model is not None and obs.cost is not None:
            seen[obs.model].append(obs.cost)
    return {model: float(np.mean(costs)) for model, costs in seen.items()}


def cell_costs(
    rows: Iterable[Observation], labels: QualityLabels, by_model: Mapping[str, float]
) -> FloatArray:
    """USD per query and model of ``labels`` ``[n, K]``: the cell's mean observed cost, else
    ``by_model[model]``, else the price table's estimate.

    Raises ``ValueError`` for a model with neither an observed cost nor a price.
    """
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for obs in rows:
        if obs.model is not None and obs.cost is not None:
            cells[(obs.query_id, obs.model)].append(obs.cost)
    out = np.full((len(labels), len(labels.models)), np.nan)
    for i, query_id in enumerate(labels.query_ids):
        for k, model in enumerate(labels.models):
            observed = cells.get((query_id, model))
            out[i, k] = np.mean(observed) if observed else by_model.get(model, np.nan)
    for k, model in enumerate(labels.models):
        if np.isnan(out[:, k]).any():
            if model not in PRICES:
                raise ValueError(
                    f"no cost for model {model!r}: the live data carries none and "
                    "router_models.prices has no price for it"
                )
            estimate = query_costs(labels.prompts, labels.response_chars[:, k : k + 1], [model])
            out[:, k] = np.where(np.isnan(out[:, k]), estimate[:, 0], out[:, k])
    return out
