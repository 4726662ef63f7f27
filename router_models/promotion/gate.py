"""The promotion gate: a candidate replaces the serving router only when it is better by a margin.

Both routers are scored on the same held-out slice of observations, split by query and never
trained on, and compared by APGR (``router_models.evaluate``; two models: weak/edge vs
strong/cloud). The candidate is promoted when its APGR is strictly higher and at least
``margin`` percentage points above the serving router's. A slice that is too small, one on which
the strong model is not better (APGR undefined), or one that overlaps the candidate's training
queries refuses the candidate: without evidence the serving router stays.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy.typing as npt

from router_models.evaluate import RouterReport, Truth, evaluate_router
from router_models.promotion.records import GateDecision, GateReason, RouterMetrics, Verdict
from router_models.promotion.scoring import RouterLike, describe_router, router_scores

__all__ = ["GatePolicy", "decide", "gate", "heldout_digest"]

# APGR values are percent; a difference this small is float noise, not a margin.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class GatePolicy:
    """``margin``: percentage points of APGR the candidate must gain; ``min_queries``: the
    smallest held-out slice whose verdict is trusted."""

    margin: float = 1.0
    min_queries: int = 50

    def __post_init__(self) -> None:
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ValueError(f"margin must be a finite, non-negative number, got {self.margin}")
        if self.min_queries < 1:
            raise ValueError(f"min_queries must be positive, got {self.min_queries}")


def decide(
    serving_apgr: float, candidate_apgr: float, n_queries: int, policy: GatePolicy
) -> tuple[Verdict, GateReason, str]:
    """The verdict on two APGRs (percent) measured on ``n_queries`` held-out queries."""
    if n_queries < policy.min_queries:
        return (
            "refuse",
            "too-few-queries",
            f"{n_queries} held-out queries, the policy needs {policy.min_queries}",
        )
    if math.isnan(serving_apgr) or math.isnan(candidate_apgr):
        return (
            "refuse",
            "no-quality-gap",
            "the strong model is not better than the weak one on the held-out slice",
        )
    delta = candidate_apgr - serving_apgr
    if delta <= _TOLERANCE:
        return "refuse", "not-better", f"APGR {candidate_apgr:.2f} <= serving {serving_apgr:.2f}"
    if delta < policy.margin - _TOLERANCE:
        return (
            "refuse",
            "within-margin",
            f"APGR +{delta:.2f} points, the margin is {policy.margin:g}",
        )
    return "promote", "better-by-margin", f"APGR +{delta:.2f} points >= margin {policy.margin:g}"


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
    names = {
        "serving": describe_router(serving, serving_name),
        "candidate": describe_router(candidate, candidate_name),
    }
    metrics = {
        role: _metrics(
            *names[role], evaluate_router(role, router_scores(r, X, truth.prompts), truth)
        )
        for role, r in (("serving", serving), ("candidate", candidate))
    }
    leaked = set(truth.query_ids).intersection(trained_on)
    if leaked:
        verdict: Verdict = "refuse"
        reason: GateReason = "heldout-overlaps-training"
        detail = f"{len(leaked)} held-out queries are in the candidate's training data"
    else:
        verdict, reason, detail = decide(
            metrics["serving"].apgr, metrics["candidate"].apgr, len(truth.query_ids), policy
        )
    return GateDecision(
        verdict=verdict,
        reason=reason,
        detail=detail,
        metric="APGR",
        margin=policy.margin,
        min_queries=policy.min_queries,
        n_queries=len(truth.query_ids),
        heldout_digest=heldout_digest(truth.query_ids),
        weak_model=truth.weak_model,
        strong_model=truth.strong_model,
        serving=metrics["serving"],
        candidate=metrics["candidate"],
        delta=metrics["candidate"].apgr - metrics["serving"].apgr,
    )
