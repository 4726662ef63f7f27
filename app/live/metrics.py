"""Prometheus metrics of the live loop (records, feedback, shadow sampling, router version).

Built by :class:`app.metrics.Metrics` on its registry (``metrics.live``), so dashboards and the
deploy test see them like every other ``dars_*`` metric; every known label value starts at 0.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.metrics_multiprocess import InfoGauge

__all__ = ["QUALITY_BUCKETS", "SHADOW_RESULTS", "LiveMetrics"]

QUALITY_BUCKETS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(1, 11))
RECORD_RESULTS: tuple[str, ...] = ("written", "dropped", "failed")
# sampled: queued; done: graded; dropped_*: not (or not fully) sampled; failed: an error.
SHADOW_RESULTS: tuple[str, ...] = (
    "sampled", "done", "dropped_budget", "dropped_queue", "failed",
)  # fmt: skip
GRADE_RESULTS: tuple[str, ...] = ("ok", "unparsed", "failed")


class LiveMetrics:
    """``dars_live_*``, ``dars_feedback_*`` and ``dars_shadow_*`` on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.records = Counter(
            "dars_live_records_total",
            "Live records (requests, grades) by result: written to the store, dropped (queue "
            "full: the request was not slowed), failed (the store refused the batch).",
            ["result"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "dars_live_queue_depth",
            "Live records waiting for the store writer.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.quality = Histogram(
            "dars_live_quality",
            "Live quality in [0, 1] of answers by source (feedback|judge) and upstream.",
            ["source", "upstream"],
            buckets=QUALITY_BUCKETS,
            registry=r,
        )
        self.feedback = Counter(
            "dars_feedback_total",
            "Client feedback posts by kind (score|thumbs) and whether it replaced an earlier one.",
            ["kind", "replaced"],
            registry=r,
        )
        self.shadow = Counter(
            "dars_shadow_requests_total",
            "Shadow-sampled requests by result: sampled, done, dropped_budget (USD per day or "
            "per-minute cap), dropped_queue (backlog full), failed.",
            ["result"],
            registry=r,
        )
        self.shadow_spend = Counter(
            "dars_shadow_spend_usd_total",
            "Estimated USD spent on shadow sampling, by kind (answer|judge|rewrite).",
            ["kind"],
            registry=r,
        )
        self.shadow_backlog = Gauge(
            "dars_shadow_backlog",
            "Shadow jobs waiting for the sampler.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.shadow_budget = Gauge(
            "dars_shadow_budget_usd_per_day",
            "The shadow sampler's USD cap per day, by scope: replica (each replica its own cap: "
            "sum them) or shared (one cap in Redis for all: take the max).",
            ["scope"],
            registry=r,
            multiprocess_mode="livemax",  # several workers need Redis: one shared cap
        )
        self.shadow_budget_unavailable = Counter(
            "dars_shadow_budget_unavailable_total",
            "Calls to the replicas' shared shadow budget in Redis that failed, by op: reserve "
            "(no shadow call started: fail closed) or charge (the cost is kept and sent again).",
            ["op"],
            registry=r,
        )
        self.grades = Counter(
            "dars_shadow_grades_total",
            "Judge verdicts by result: ok, unparsed (no grade in the reply), failed (error).",
            ["result"],
            registry=r,
        )
        self.router_version = InfoGauge(
            "dars_live_router_version",
            "1 for the sha256 of the router file now deciding (its records carry the same).",
            ["sha256"],
            registry=r,
        )
        self.router_changed = Gauge(
            "dars_live_router_changed_timestamp_seconds",
            "When the deciding router file last changed (start, promotion, rollback).",
            registry=r,
            multiprocess_mode="livemax",
        )
        for result in RECORD_RESULTS:
            self.records.labels(result=result)
        for result in SHADOW_RESULTS:
            self.shadow.labels(result=result)
        for result in GRADE_RESULTS:
            self.grades.labels(result=result)
        for kind in ("answer", "judge", "rewrite"):
            self.shadow_spend.labels(kind=kind)
        for op in ("reserve", "charge"):
            self.shadow_budget_unavailable.labels(op=op)
        for kind in ("score", "thumbs"):
            for replaced in ("true", "false"):
                self.feedback.labels(kind=kind, replaced=replaced)
        for source in ("feedback", "judge"):
            for upstream in ("edge", "cloud"):
                self.quality.labels(source=source, upstream=upstream)

    def set_router(self, sha256: str, now: float) -> None:
        """Export the deciding router's hash (one series) and when it changed."""
        self.router_version.info({"sha256": sha256})
        self.router_changed.set(now)
