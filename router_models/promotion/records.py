"""The decision records of the gate and the rollback rule: typed, frozen, JSON round-trips.

Every decision of the loop is logged with its numbers, so a record holds what was compared,
on how many queries or observations, the metric values, the thresholds and the verdict with
its reason. Two-model metrics are in percent (as in the reports); K-model AIQ is a mean
quality in [0, 1] and reach costs are USD per 1k requests (as in ``evaluate_multi``). NaN (an
undefined APGR, a bound not computed) is written as JSON ``null`` and read back as NaN.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "GateDecision",
    "GateMetric",
    "GateReason",
    "QualityMetrics",
    "RollbackDecision",
    "RouteCheck",
    "RouteQuality",
    "RouterMetrics",
    "Verdict",
]

Verdict = Literal["promote", "refuse"]
GateMetric = Literal["APGR", "AIQ"]  # APGR: two models (percent); AIQ: K models ([0, 1])
GateReason = Literal[
    "better-by-margin",  # promote: metric >= serving + margin, strictly higher, bound > 0
    "within-margin",  # refuse: better, but by less than the margin
    "not-better",  # refuse: candidate metric <= serving metric
    "not-significant",  # refuse: by the margin, but the bootstrap lower bound is not above 0
    "too-few-queries",  # refuse: the held-out slice is smaller than the policy's minimum
    "no-quality-gap",  # refuse: the strong model is not better on the slice; APGR undefined
    "heldout-overlaps-training",  # refuse: the candidate was trained on held-out queries
]


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _none_to_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class RouterMetrics:
    """One router's metrics on the gate's held-out slice, in percent (NaN: undefined)."""

    name: str
    sha256: str | None
    apgr: float
    cpt50: float
    cpt80: float
    auc: float

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        for key in ("apgr", "cpt50", "cpt80", "auc"):
            row[key] = _nan_to_none(row[key])
        return row

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RouterMetrics:
        return cls(
            name=str(data["name"]),
            sha256=None if data["sha256"] is None else str(data["sha256"]),
            **{k: _none_to_nan(data[k]) for k in ("apgr", "cpt50", "cpt80", "auc")},
        )


@dataclass(frozen=True)
class QualityMetrics:
    """One K-model router's metrics on the held-out slice: AIQ and best mean quality in
    [0, 1], cost to reach x% of the best single model in USD per 1k requests (NaN: never)."""

    name: str
    sha256: str | None
    aiq: float
    max_quality: float
    reach_cost: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["reach_cost"] = {k: _nan_to_none(v) for k, v in self.reach_cost.items()}
        return row

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityMetrics:
        return cls(
            name=str(data["name"]),
            sha256=None if data["sha256"] is None else str(data["sha256"]),
            aiq=_none_to_nan(data["aiq"]),
            max_quality=_none_to_nan(data["max_quality"]),
            reach_cost={str(k): _none_to_nan(v) for k, v in data["reach_cost"].items()},
        )


@dataclass(frozen=True)
class GateDecision:
    """Promote or refuse a candidate, with the numbers the verdict was taken on.

    ``delta`` = candidate - serving metric (APGR: percentage points; AIQ: [0, 1] units);
    ``delta_lower`` its one-sided lower bound at ``confidence`` from ``n_resamples`` paired
    bootstrap resamples of the slice (NaN with ``n_resamples = 0`` or when undefined);
    ``margin`` is in the metric's unit. ``heldout_digest`` names the exact held-out query set
    (sha256 of the sorted ids), so two decisions can be checked to have used the same slice.
    ``models`` are the routed models (APGR: weak, strong; AIQ: the candidate's column order,
    and then ``weak_model``/``strong_model`` are None).
    """

    verdict: Verdict
    reason: GateReason
    detail: str
    metric: GateMetric
    margin: float
    min_queries: int
    n_queries: int
    heldout_digest: str
    weak_model: str | None
    strong_model: str | None
    serving: RouterMetrics | QualityMetrics
    candidate: RouterMetrics | QualityMetrics
    delta: float
    delta_lower: float = math.nan
    confidence: float = 0.95
    n_resamples: int = 0
    models: tuple[str, ...] = ()

    @property
    def promote(self) -> bool:
        return self.verdict == "promote"

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["serving"] = self.serving.to_dict()
        row["candidate"] = self.candidate.to_dict()
        row["delta"] = _nan_to_none(self.delta)
        row["delta_lower"] = _nan_to_none(self.delta_lower)
        row["models"] = list(self.models)
        return row

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        """Also reads records written before the bound existed (no bound, no ``models``)."""
        metrics = QualityMetrics if data["metric"] == "AIQ" else RouterMetrics
        weak, strong = data.get("weak_model"), data.get("strong_model")
        return cls(
            verdict=data["verdict"],
            reason=data["reason"],
            detail=str(data["detail"]),
            metric=data["metric"],
            margin=float(data["margin"]),
            min_queries=int(data["min_queries"]),
            n_queries=int(data["n_queries"]),
            heldout_digest=str(data["heldout_digest"]),
            weak_model=None if weak is None else str(weak),
            strong_model=None if strong is None else str(strong),
            serving=metrics.from_dict(data["serving"]),
            candidate=metrics.from_dict(data["candidate"]),
            delta=_none_to_nan(data["delta"]),
            delta_lower=_none_to_nan(data.get("delta_lower")),
            confidence=float(data.get("confidence", 0.95)),
            n_resamples=int(data.get("n_resamples", 0)),
            models=tuple(str(m) for m in data.get("models", ())),
        )

    @classmethod
    def from_json(cls, text: str) -> GateDecision:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class RouteQuality:
    """Live quality of one route (feedback and judge grades in [0, 1]): mean and count."""

    mean: float
    count: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.mean <= 1.0:
            raise ValueError(f"route quality mean must be within [0, 1], got {self.mean}")
        if self.count < 0:
            raise ValueError(f"route quality count must be non-negative, got {self.count}")


@dataclass(frozen=True)
class RouteCheck:
    """The rollback test of one route: ``drop`` = before - after mean quality; ``stderr`` its
    conservative standard error; ``triggered`` when this route alone asks for a rollback."""

    route: str
    before: RouteQuality
    after: RouteQuality
    drop: float
    stderr: float
    enough: bool
    triggered: bool


@dataclass(frozen=True)
class RollbackDecision:
    """Roll back the promotion or keep it, with every route's numbers."""

    rollback: bool
    reason: str
    max_drop: float
    min_count: int
    z: float
    routes: tuple[RouteCheck, ...]

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        for check in row["routes"]:  # an empty side has no standard error: inf -> null
            check["stderr"] = check["stderr"] if math.isfinite(check["stderr"]) else None
        return row

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RollbackDecision:
        routes = tuple(
            RouteCheck(
                route=str(r["route"]),
                before=RouteQuality(**r["before"]),
                after=RouteQuality(**r["after"]),
                drop=float(r["drop"]),
                stderr=math.inf if r["stderr"] is None else float(r["stderr"]),
                enough=bool(r["enough"]),
                triggered=bool(r["triggered"]),
            )
            for r in data["routes"]
        )
        return cls(
            rollback=bool(data["rollback"]),
            reason=str(data["reason"]),
            max_drop=float(data["max_drop"]),
            min_count=int(data["min_count"]),
            z=float(data["z"]),
            routes=routes,
        )

    @classmethod
    def from_json(cls, text: str) -> RollbackDecision:
        return cls.from_dict(json.loads(text))
