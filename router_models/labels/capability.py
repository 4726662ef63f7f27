"""Steps every label scheme shares: pair the two models' observations per query, compute
each model's capability statistics and normalised costs, and assemble the :class:`LabelSet`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from router_models.labels.base import FloatArray, LabelSet, ModelStats, QueryPair
from router_models.observations import Observation, group_by_query

__all__ = ["capability_stats", "label_set_from_pairs", "pair_observations", "pair_stats"]


def _sorted(rows: Iterable[Observation]) -> tuple[Observation, ...]:
    return tuple(sorted(rows, key=lambda obs: (obs.variant_id, obs.sample_id)))


def pair_observations(
    observations: Iterable[Observation], weak: str, strong: str
) -> list[QueryPair]:
    """The queries that both models answered, in first-seen order, rows sorted by variant/sample."""
    if weak == strong:
        raise ValueError("weak and strong model must differ")
    pairs = []
    for query_id, by_model in group_by_query(observations).items():
        if weak in by_model and strong in by_model:
            first = by_model[weak][0]
            pairs.append(
                QueryPair(
                    query_id=query_id,
                    dataset=first.dataset,
                    prompt=first.prompt,
                    weak=_sorted(by_model[weak]),
                    strong=_sorted(by_model[strong]),
                )
            )
    if not pairs:
        raise ValueError(f"no query has observations of both {weak!r} and {strong!r}")
    return pairs


def capability_stats(rows: Sequence[Observation]) -> tuple[float, float, int, float, float]:
    """(mu, sigma, count, var_input, var_output) of one query-model pair's scores.

    Population moments over all observations; var_input is the variance of the per-variant
    means (each weighted by its number of decodes), var_output the mean within-variant
    variance, so var_input + var_output = sigma**2 exactly.
    """
    scores = np.asarray([obs.score for obs in rows], dtype=np.float64)
    variants = np.asarray([obs.variant_id for obs in rows])
    mu = float(scores.mean())
    _, inverse = np.unique(variants, return_inverse=True)
    sums = np.bincount(inverse, weights=scores)
    counts = np.bincount(inverse)
    variant_mean = (sums / counts)[inverse]
    var_input = float(np.mean((variant_mean - mu) ** 2))
    var_output = float(np.mean((scores - variant_mean) ** 2))
    sigma = math.sqrt(max(var_input + var_output, 0.0))
    return mu, sigma, len(rows), var_input, var_output


def _mean_costs(
    pairs: Sequence[QueryPair], weak: str, strong: str, costs: Mapping[str, float] | None
) -> tuple[FloatArray, FloatArray, str]:
    """Per-query mean cost of each model, normalised per dataset, and where it came from.

    Explicit ``costs`` (price per call, per model) win; else observed ``cost`` when every row
    has one; else the cost rank (weak 0, strong 1). Each dataset's costs are divided by its
    largest mean cost, so lambda means the same thing on every dataset.
    """
    if costs is not None:
        missing = [m for m in (weak, strong) if m not in costs]
        if missing:
            raise ValueError(f"costs given but missing for model(s) {missing}")
        c_weak = np.full(len(pairs), float(costs[weak]))
        c_strong = np.full(len(pairs), float(costs[strong]))
        source = "prices"
    elif all(obs.cost is not None for p in pairs for obs in (*p.weak, *p.strong)):
        c_weak = np.asarray([np.mean([o.cost for o in p.weak]) for p in pairs], dtype=np.float64)
        c_strong = np.asarray(
            [np.mean([o.cost for o in p.strong]) for p in pairs], dtype=np.float64
        )
        source = "observed"
    else:
        c_weak, c_strong = np.zeros(len(pairs)), np.ones(len(pairs))
        source = "rank"
    datasets = np.asarray([p.dataset for p in pairs])
    for name in np.unique(datasets):
        rows = datasets == name
        top = max(float(c_weak[rows].max()), float(c_strong[rows].max()))
        if top > 0:
            c_weak[rows] /= top
            c_strong[rows] /= top
    return c_weak, c_strong, source


def pair_stats(
    pairs: Sequence[QueryPair], costs: Mapping[str, float] | None
) -> tuple[ModelStats, ModelStats, str]:
    """Both models' :class:`ModelStats` for the paired queries, and where the costs came from."""
    weak_name, strong_name = pairs[0].weak[0].model, pairs[0].strong[0].model
    c_weak, c_strong, source = _mean_costs(pairs, str(weak_name), str(strong_name), costs)
    result = []
    for side, cost in (("weak", c_weak), ("strong", c_strong)):
        table = np.asarray([capability_stats(getattr(p, side)) for p in pairs], dtype=np.float64)
        result.append(
            ModelStats(
                mu=table[:, 0],
                sigma=table[:, 1],
                count=table[:, 2].astype(np.int64),
                var_input=table[:, 3],
                var_output=table[:, 4],
                cost=cost,
            )
        )
    return result[0], result[1], source


def label_set_from_pairs(
    scheme: str,
    pairs: Sequence[QueryPair],
    target: FloatArray,
    weight: FloatArray,
    stats: tuple[ModelStats, ModelStats],
    params: dict[str, Any],
    extra: dict[str, FloatArray] | None = None,
) -> LabelSet:
    """The :class:`LabelSet` of one scheme's targets and weights over the paired queries."""
    return LabelSet(
        scheme=scheme,
        weak_model=str(pairs[0].weak[0].model),
        strong_model=str(pairs[0].strong[0].model),
        query_ids=tuple(p.query_id for p in pairs),
        prompts=tuple(p.prompt for p in pairs),
        datasets=tuple(p.dataset for p in pairs),
        target=np.asarray(target, dtype=np.float64),
        weight=np.asarray(weight, dtype=np.float64),
        weak=stats[0],
        strong=stats[1],
        params=params,
        extra=extra or {},
    )
