"""Prometheus metrics of the service. The names are public (README lists them; dashboards use them).

All metrics live on one ``CollectorRegistry`` owned by a ``Metrics`` object, built in the app's
lifespan, so that tests and several apps in one process never collide on the global registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = ["LATENCY_BUCKETS_S", "Metrics"]

# Seconds; from sub-millisecond (cache hit, ONNX scoring) to minutes (long generations).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
SCORE_BUCKETS: tuple[float, ...] = tuple(round(i / 20, 2) for i in range(1, 21))
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Every metric the service exports, on a private registry.

    Label values: ``route`` is ``edge``/``cloud``; ``reason`` is ``threshold``/``forced``/
    ``fallback``; ``upstream`` is ``edge``/``cloud``; ``stage`` names a latency stage.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        # --- requests and decisions
        self.requests = Counter(
            "dars_requests_total",
            "Chat completion requests by final route, reason and HTTP status.",
            ["route", "reason", "status"],
            registry=r,
        )
        self.decisions = Counter(
            "dars_decisions_total",
            "Routing decisions (also from POST /v1/route) by route and reason.",
            ["route", "reason"],
            registry=r,
        )
        self.score = Histogram(
            "dars_router_score",
            "Router score (probability the cloud model is needed) of scored requests.",
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.threshold = Gauge("dars_threshold", "Current routing threshold.", registry=r)
        self.cloud_share = Gauge(
            "dars_cloud_share",
            "Share of scored requests routed to the cloud over the rolling window.",
            registry=r,
        )

        # --- tokens, cost, saving
        self.tokens = Counter(
            "dars_tokens_total",
            "Tokens reported by upstreams, by upstream and direction (input|output).",
            ["upstream", "direction"],
            registry=r,
        )
        self.cost_usd = Counter(
            "dars_cost_usd_total",
            "Estimated cost in USD of the tokens sent to each upstream.",
            ["upstream"],
            registry=r,
        )
        self.saving_usd = Counter(
            "dars_saving_usd_total",
            "Estimated USD saved versus sending the same tokens to the cloud model.",
            registry=r,
        )

        # --- latency (seconds)
        self.latency = Histogram(
            "dars_latency_seconds",
            "Latency by stage: embedding, scoring, decision, upstream_ttfb, upstream_total.",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "dars_embedding_batch_size",
            "Texts per embedding forward pass (dynamic micro-batching).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )

        # --- embedding cache
        self.cache = Counter(
            "dars_cache_requests_total",
            "Embedding cache lookups by backend (redis|memory) and result (hit|miss|error).",
            ["backend", "result"],
            registry=r,
        )
        self.cache_breaker_open = Gauge(
            "dars_cache_breaker_open",
            "1 while the Redis circuit breaker is open (cache bypassed), else 0.",
            registry=r,
        )

        # --- errors and fallbacks
        self.upstream_errors = Counter(
            "dars_upstream_errors_total",
            "Upstream failures by upstream and kind (connect|timeout|status_429|status_5xx|...).",
            ["upstream", "kind"],
            registry=r,
        )
        self.fallbacks = Counter(
            "dars_fallbacks_total",
            "Requests failed over from one upstream to the other.",
            ["from_upstream", "to_upstream"],
            registry=r,
        )
        self.retries = Counter(
            "dars_upstream_retries_total",
            "Retries of upstream calls before any byte reached the client.",
            ["upstream"],
            registry=r,
        )

        # --- router model
        self.router_info = Info(
            "dars_router_model", "The loaded router model and its provider.", registry=r
        )
        self.router_reloads = Counter(
            "dars_router_reloads_total",
            "Router reloads through the admin API by result (ok|rejected).",
            ["result"],
            registry=r,
        )

    def observe_tokens(
        self,
        *,
        upstream: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        cloud_cost_usd: float,
    ) -> None:
        """Count one response's usage, its cost and the saving versus the cloud price."""
        self.tokens.labels(upstream=upstream, direction="input").inc(prompt_tokens)
        self.tokens.labels(upstream=upstream, direction="output").inc(completion_tokens)
        self.cost_usd.labels(upstream=upstream).inc(cost_usd)
        saving = cloud_cost_usd - cost_usd
        if saving > 0:
            self.saving_usd.inc(saving)
