"""The promotion gate: a candidate replaces the serving router only when it is better by a margin
and the gain is more than the noise of the held-out slice.

Both routers are scored on the same held-out slice of observations, split by query and never
trained on, and compared by APGR (``router_models.evaluate``; two models: weak/edge vs
strong/cloud; K models: :mod:`router_models.promotion.gate_quality`, AIQ). The candidate is
promoted when its metric is strictly higher, at least the margin above the serving router's
and the one-sided lower confidence bound of the difference (paired bootstrap,
:mod:`router_models.promotion.bootstrap`) is above 0.

Why "bound > 0" and not "bound >= margin": the margin is a practical threshold on the size of
the gain (is it worth a new file?), the bound a test that there is a gain at all (is it more
than luck?). Asking the bound to clear the margin would ask for a gain significantly *larger*
than the margin, which a slice of 20-50 queries almost never shows: the gate would never
promote. A slice that is too small, one on which the strong model is not better (APGR
undefined), or one that overlaps the candidate's training queries refuses the candidate:
without evidence the serving router stays.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from router_models.evaluate import RouterReport, Truth, evaluate_router
from router_models.promotion.bootstrap import Bound, apgr_delta, paired_bootstrap
from router_models.promotion.records import (
    GateDecision,
    GateMetric,
    GateReason,
    QualityMetrics,
    RouterMetrics,
    Verdict,
)
from router_models.promotion.scoring import RouterLike, describe_router, router_scores

__all__ = ["GatePolicy", "decide", "gate", "gate_decision", "heldout_digest"]

IntArray = npt.NDArray[np.intp]

# A metric difference this small is float noise, not a margin.
_TOLERANCE = 1e-9


def _non_negative(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite, non-negative number, got {value}")


@dataclass(frozen=True)
class GatePolicy:
    """``margin``: APGR percentage points the candidate must gain (two models);
    ``aiq_margin``: AIQ the candidate must gain (K models; AIQ is a mean quality in [0, 1],
    so 0.01 = one quality point); ``min_queries``: the smallest held-out slice whose verdict
    is trusted; ``confidence``: of the one-sided bootstrap lower bound that must be above 0;
    ``n_resamples``: bootstrap resamples (0: no bound, the margin alone decides); ``seed``:
    of the resamples."""

    margin: float = 1.0
    min_queries: int = 50
    aiq_margin: float = 0.01
    confidence: float = 0.95
    n_resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        _non_negative("margin", self.margin)
        _non_negative("aiq_margin", self.aiq_margin)
        if self.min_queries < 1:
            raise ValueError(f"min_queries must be positive, got {self.min_queries}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be within (0, 1), got {self.confidence}")
        if self.n_resamples < 0:
            raise ValueError(f"n_resamples must be non-negative, got {self.n_resamples}")

    def margin_of(self, metric: GateMetric) -> float:
        """The margin in ``metric``'s unit."""
        return self.aiq_margin if metric == "AIQ" else self.margin

    def bootstrap(self, statistic: Callable[[IntArray | None], float], n: int) -> Bound:
        """The paired bootstrap of ``statistic`` over ``n`` held-out rows, as this policy asks."""
        return paired_bootstrap(
            statistic, n, n_resamples=self.n_resamples, confidence=self.confidence, seed=self.seed
        )


def _format(metric: GateMetric, value: float) -> str:
    return f"{value:.4f}" if metric == "AIQ" else f"{value:.2f} points"


def decide(
    serving_value: float,
    candidate_value: float,
    n_queries: int,
    policy: GatePolicy,
    *,
    metric: GateMetric = "APGR",
    bound: Bound | None = None,
) -> tuple[Verdict, GateReason, str]:
    """The verdict on two metric values measured on ``n_queries`` held-out queries.

    ``bound``: the bootstrap of the difference; with resamples, its lower bound must be
    above 0 (a NaN bound, undefined on too many resamples, refuses too).
    """
    if n_queries < policy.min_queries:
        return (
            "refuse",
            "too-few-queries",
            f"{n_queries} held-out queries, the policy needs {policy.min_queries}",
        )
    if math.isnan(serving_value) or math.isnan(candidate_value):
        return (
            "refuse",
            "no-quality-gap",
            "the strong model is not better than the weak one on the held-out slice",
        )
    delta, margin = candidate_value - serving_value, policy.margin_of(metric)
    if delta <= _TOLERANCE:
        return (
            "refuse",
            "not-better",
            f"{metric} {candidate_value:.4f} <= serving {serving_value:.4f}",
        )
    gain = f"{metric} +{_format(metric, delta)}"
    if delta < margin - _TOLERANCE:
        return "refuse", "within-margin", f"{gain}, the margin is {margin:g}"
    if bound is not None and bound.n_resamples > 0 and not bound.lower > 0:
        return (
            "refuse",
            "not-significant",
            f"{gain} >= margin {margin:g}, but its {bound.confidence:g} lower bound "
            f"({bound.n_resamples} paired resamples) is {bound.lower:.4f}, not above 0",
        )
    lower = "" if bound is None or bound.n_resamples == 0 else f", lower bound {bound.lower:.4f}"
    return "promote", "better-by-margin", f"{gain} >= margin {margin:g}{lower}"


def heldout_digest(query_ids: Iterable[str]) -> str:
    """sha256 of the sorted, NUL-joined query ids: names a held-out slice in a record."""
    return hashlib.sha256("\0".join(sorted(query_ids)).encode()).hexdigest()


def _metrics(name: str, sha256: str | None, report: RouterReport) -> RouterMetrics:
    row = report.as_percent()
    return RouterMetrics(
        name=name,
        sha256=sha256,
        apgr=row["APGR"],
        cpt50=row["CPT(50%)"],
        cpt80=row["CPT(80%)"],
        auc=row["AUC"],
    )


def gate_decision(
    *,
    metric: GateMetric,
    policy: GatePolicy,
    serving: RouterMetrics | QualityMetrics,
    candidate: RouterMetrics | QualityMetrics,
    bound: Bound,
    query_ids: Sequence[str],
    trained_on: Collection[str],
    models: Sequence[str],
    pair: tuple[str | None, str | None] = (None, None),
) -> GateDecision:
    """The record of one comparison: the leak check, then :func:`decide` on the metric."""
    before, after = (
        m.aiq if isinstance(m, QualityMetrics) else m.apgr for m in (serving, candidate)
    )
    leaked = set(query_ids).intersection(trained_on)
    if leaked:
        verdict: Verdict = "refuse"
        reason: GateReason = "heldout-overlaps-training"
        detail = f"{len(leaked)} held-out queries are in the candidate's training data"
    else:
        verdict, reason, detail = decide(
            before, after, len(query_ids), policy, metric=metric, bound=bound
        )
    return GateDecision(
        verdict=verdict,
        reason=reason,
        detail=detail,
        metric=metric,
        margin=policy.margin_of(metric),
        min_queries=policy.min_queries,
        n_queries=len(query_ids),
        heldout_digest=heldout_digest(query_ids),
        weak_model=pair[0],
        strong_model=pair[1],
        serving=serving,
        candidate=candidate,
        delta=after - before,
        delta_lower=bound.lower,
        confidence=bound.confidence,
        n_resamples=bound.n_resamples,
        models=tuple(models),
    )


def gate(
    serving: RouterLike,
    candidate: RouterLike,
    truth: Truth,
    X: npt.ArrayLike,
    *,
    policy: GatePolicy = GatePolicy(),
    trained_on: Collection[str] = (),
    serving_name: str | None = None,
    candidate_name: str | None = None,
) -> GateDecision:
    """Score both routers on the held-out slice ``truth`` (embeddings ``X``, aligned with
    ``truth.prompts``) and decide whether ``candidate`` replaces ``serving``.

    ``trained_on``: the candidate's training query ids; any overlap with the slice refuses.
    """
    scores = {
        "serving": router_scores(serving, X, truth.prompts),
        "candidate": router_scores(candidate, X, truth.prompts),
    }
    metrics = {
        role: _metrics(*describe_router(router, name), evaluate_router(role, scores[role], truth))
        for role, router, name in (
            ("serving", serving, serving_name),
            ("candidate", candidate, candidate_name),
        )
    }
    bound = policy.bootstrap(
        lambda rows: apgr_delta(scores["serving"], scores["candidate"], truth, rows),
        len(truth.query_ids),
    )
    return gate_decision(
        metric="APGR",
        policy=policy,
        serving=metrics["serving"],
        candidate=metrics["candidate"],
        bound=bound,
        query_ids=truth.query_ids,
        trained_on=trained_on,
        models=(truth.weak_model, truth.strong_model),
        pair=(truth.weak_model, truth.strong_model),
    )
