"""The K-model gate: serving router and candidate compared by AIQ on the held-out queries.

With more than two models there is no weak/strong pair and no APGR; a router is judged by the
quality it buys per cost (:mod:`router_models.evaluate_multi`: AIQ, the mean quality of its
quality-vs-cost hull over the single models' cost range). Both routers' decisions at every knob
value (:func:`router_models.promotion.choices.route_choices`) are scored on the same truth
(mean observed quality per held-out query and model) and per-query costs; the difference is
bootstrapped by :func:`router_models.evaluate_multi.aiq_difference` on paired resamples. The
verdict is :func:`router_models.promotion.gate.decide`'s, with ``GatePolicy.aiq_margin``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from router_models.evaluate_multi import (
    aiq_difference,
    curve_of,
    evaluate_curve,
    single_model_points,
)
from router_models.labels import QualityLabels
from router_models.promotion.choices import route_choices
from router_models.promotion.gate import GatePolicy, gate_decision
from router_models.promotion.records import GateDecision, QualityMetrics
from router_models.promotion.scoring import RouterLike, describe_router

__all__ = ["QualitySlice", "gate_quality"]

FloatArray = npt.NDArray[np.float64]
_DEFAULT_POLICY = GatePolicy()


@dataclass(frozen=True)
class QualitySlice:
    """The held-out queries of a K-model gate: ``labels`` (every cell observed), the cost of
    each query on each model ``true_cost`` ``[n, K]`` and the routers' per-model decision
    cost ``decision_cost`` ``[K]`` (USD)."""

    labels: QualityLabels
    true_cost: FloatArray
    decision_cost: FloatArray

    def __post_init__(self) -> None:
        shape = (len(self.labels), len(self.labels.models))
        if not len(self.labels) or not bool(np.all(self.labels.complete())):
            raise ValueError("a K-model held-out slice needs queries with every model's cell")
        if self.true_cost.shape != shape or self.decision_cost.shape != shape[1:]:
            raise ValueError(f"costs must have shapes {shape} and {shape[1:]}")
        if not np.all(np.isfinite(self.true_cost)) or not float(self.decision_cost.max()) > 0:
            raise ValueError("costs must be finite, with at least one model above 0")


def gate_quality(
    serving: RouterLike,
    candidate: RouterLike,
    heldout: QualitySlice,
    X: npt.ArrayLike,
    *,
    policy: GatePolicy = _DEFAULT_POLICY,
    trained_on: Collection[str] = (),
    serving_name: str | None = None,
    candidate_name: str | None = None,
) -> GateDecision:
    """Score both routers on ``heldout`` (embeddings ``X`` aligned with its prompts) by AIQ
    and decide whether ``candidate`` replaces ``serving``; ``trained_on`` as in ``gate``."""
    labels = heldout.labels
    truth, cost = labels.mean, heldout.true_cost
    choices = {
        role: route_choices(router, X, labels.prompts, labels.models, heldout.decision_cost)
        for role, router in (("serving", serving), ("candidate", candidate))
    }
    singles = single_model_points(truth, cost)
    metrics = {}
    for role, router, name in (
        ("serving", serving, serving_name),
        ("candidate", candidate, candidate_name),
    ):
        report = evaluate_curve(role, curve_of(choices[role], truth, cost), singles)
        label, sha256 = describe_router(router, name)
        metrics[role] = QualityMetrics(
            label, sha256, report.aiq, report.max_quality, dict(report.reach_cost)
        )
    bound = policy.bootstrap(
        lambda rows: aiq_difference(choices["candidate"], choices["serving"], truth, cost, rows),
        len(labels),
    )
    return gate_decision(
        metric="AIQ",
        policy=policy,
        serving=metrics["serving"],
        candidate=metrics["candidate"],
        bound=bound,
        query_ids=labels.query_ids,
        trained_on=trained_on,
        models=labels.models,
    )
