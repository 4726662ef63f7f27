"""Live quality per route of one router version: what users got, from feedback and the judge.

A route's quality under a router is the mean of every client feedback score and every judge
grade of a *served* answer (not the shadow samples) on requests that router decided. The
rollback rule (``router_models.promotion.rollback``) compares it before and after a promotion.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from router_models.live.records import Feedback, Grade, LiveRecord
from router_models.promotion import RouteQuality

__all__ = ["route_quality"]


def route_quality(
    records: Iterable[LiveRecord],
    feedback: Iterable[Feedback],
    grades: Iterable[Grade],
    *,
    router_sha256: str,
) -> dict[str, RouteQuality]:
    """``{route: RouteQuality}`` over the requests routed by the router with that hash."""
    routed = {
        r.request_id: r.route
        for r in records
        if r.router_sha256 == router_sha256 and r.reason != "forced"
    }
    scores: dict[str, list[float]] = defaultdict(list)
    for fb in feedback:
        if fb.request_id in routed:
            scores[routed[fb.request_id]].append(fb.score)
    for grade in grades:
        if grade.served and grade.request_id in routed:
            scores[routed[grade.request_id]].append(grade.score)
    return {
        route: RouteQuality(mean=sum(values) / len(values), count=len(values))
        for route, values in sorted(scores.items())
    }
