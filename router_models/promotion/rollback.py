"""The rollback rule: after a promotion, a quality drop on any route beyond a threshold, seen on
enough observations, rolls the promotion back.

Live quality per route (feedback and judge grades in [0, 1]) is compared before and after the
promotion. A route triggers when both sides have at least ``min_count`` observations, the drop
``before - after`` exceeds ``max_drop`` and it exceeds ``z`` standard errors. The standard
error uses the Bernoulli bound ``mean * (1 - mean) / count`` per side, which is the largest
variance any [0, 1] score with that mean can have, so only means and counts are needed and
noise is never underestimated. ``z = 0`` leaves only the threshold and the count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from router_models.promotion.records import RollbackDecision, RouteCheck, RouteQuality

__all__ = ["RollbackPolicy", "check_route", "rollback_decision"]


@dataclass(frozen=True)
class RollbackPolicy:
    """``max_drop``: tolerated fall of mean quality (fraction); ``min_count``: observations
    per side before a route is judged; ``z``: standard errors the drop must also exceed."""

    max_drop: float = 0.05
    min_count: int = 50
    z: float = 1.645

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_drop < 1.0:
            raise ValueError(f"max_drop must be within [0, 1), got {self.max_drop}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be positive, got {self.min_count}")
        if not math.isfinite(self.z) or self.z < 0:
            raise ValueError(f"z must be a finite, non-negative number, got {self.z}")


def _bound_stderr(before: RouteQuality, after: RouteQuality) -> float:
    """Upper bound of the standard error of ``before.mean - after.mean`` (inf if a side is
    empty)."""
    if before.count == 0 or after.count == 0:
        return math.inf
    var = (
        before.mean * (1 - before.mean) / before.count + after.mean * (1 - after.mean) / after.count
    )
    return math.sqrt(var)


def check_route(
    route: str, before: RouteQuality, after: RouteQuality, policy: RollbackPolicy
) -> RouteCheck:
    """One route's test: enough observations, a drop beyond the threshold and beyond noise."""
    drop = before.mean - after.mean
    stderr = _bound_stderr(before, after)
    enough = min(before.count, after.count) >= policy.min_count
    triggered = enough and drop > policy.max_drop and drop > policy.z * stderr
    return RouteCheck(
        route=route,
        before=before,
        after=after,
        drop=drop,
        stderr=stderr,
        enough=enough,
        triggered=triggered,
    )


def rollback_decision(
    before: Mapping[str, RouteQuality],
    after: Mapping[str, RouteQuality],
    policy: RollbackPolicy = RollbackPolicy(),
) -> RollbackDecision:
    """Roll back when any route seen both before and after the promotion triggers.

    A route seen on one side only cannot show a drop and is left out of the record.
    """
    checks = tuple(
        check_route(route, before[route], after[route], policy)
        for route in sorted(before)
        if route in after
    )
    fired = [c.route for c in checks if c.triggered]
    if fired:
        reason = f"quality dropped beyond {policy.max_drop:g} on: {', '.join(fired)}"
    elif not any(c.enough for c in checks):
        reason = f"no route has {policy.min_count} observations before and after yet"
    else:
        reason = "no route dropped beyond the threshold and the noise"
    return RollbackDecision(
        rollback=bool(fired),
        reason=reason,
        max_drop=policy.max_drop,
        min_count=policy.min_count,
        z=policy.z,
        routes=checks,
    )
