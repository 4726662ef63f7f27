"""The decision records of the gate and the rollback rule: typed, frozen, JSON round-trips.

Every decision of the loop is logged with its numbers, so a record holds what was compared,
on how many queries or observations, the metric values, the thresholds and the verdict with
its reason. Metrics are in percent (as in the reports); NaN (an undefined APGR) is written as
JSON ``null`` and read back as NaN.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "GateDecision",
    "GateReason",
    "RollbackDecision",
    "RouteCheck",
    "RouteQuality",
    "RouterMetrics",
    "Verdict",
]

Verdict = Literal["promote", "refuse"]
GateReason = Literal[
    "better-by-margin",  # promote: candidate APGR >= serving APGR + margin (and strictly higher)
    "within-margin",  # refuse: better, but by less than the margin
    "not-better",  # refuse: candidate APGR <= serving APGR
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
class GateDecision:
    """Promote or refuse a candidate, with the numbers the verdict was taken on.

    ``delta`` = candidate APGR - serving APGR (percentage points); ``heldout_digest`` names
    the exact held-out query set (sha256 of the sorted ids), so two decisions can be checked
    to have used the same slice.
    """

    verdict: Verdict
    reason: GateReason
    detail: str
    metric: Literal["APGR"]
    margin: float
    min_queries: int
    n_queries: int
    heldout_digest: str
    weak_model: str
    strong_model: str
    serving: RouterMetrics
    candidate: RouterMetrics
    delta: float

    @property
    def promote(self) -> bool:
        return self.verdict == "promote"

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["serving"] = self.serving.to_dict()
        row["candidate"] = self.candidate.to_dict()
        row["delta"] = _nan_to_none(self.delta)
        return row

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        return cls(
            verdict=data["verdict"],
            reason=data["reason"],
            detail=str(data["detail"]),
            metric=data["metric"],
            margin=float(data["margin"]),
            min_queries=int(data["min_queries"]),
            n_queries=int(data["n_queries"]),
            heldout_digest=str(data["heldout_digest"]),
            weak_model=str(data["weak_model"]),
            strong_model=str(data["strong_model"]),
            serving=RouterMetrics.from_dict(data["serving"]),
            candidate=RouterMetrics.from_dict(data["candidate"]),
            delta=_none_to_nan(data["delta"]),
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
