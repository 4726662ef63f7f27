"""Prometheus metrics of the service. The names are public (README lists them; dashboards use them).

All metrics live on one ``CollectorRegistry`` owned by a ``Metrics`` object, built in the app's
lifespan, so that tests and several apps in one process never collide on the global registry.

With several workers (``app/workers.py``) prometheus-client runs in multiprocess mode: values
go to files in ``PROMETHEUS_MULTIPROC_DIR`` and ``Metrics.registry`` is a
``MultiProcessCollector`` over all workers' files. Counters and histograms are summed; every
gauge names how workers' values merge (``multiprocess_mode``, ignored by a single process), and
info-like metrics are gauges with labels (``InfoGauge``), as ``Info`` has no multiprocess mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from app.live.metrics import LiveMetrics
from app.metrics_multiprocess import InfoGauge, multiprocess_dir

__all__ = [
    "LATENCY_BUCKETS_S",
    "LATENCY_STAGES",
    "REASONS",
    "RELOAD_RESULTS",
    "ROUTES",
    "UPSTREAM_ERROR_KINDS",
    "Metrics",
]

# Known label values: every combination is exported as 0 from start-up, so that dashboards and
# alerts see a series before the first event (Prometheus' "avoid missing metrics" practice).
ROUTES: tuple[str, ...] = ("edge", "cloud")
REASONS: tuple[str, ...] = ("threshold", "forced", "fallback", "cascade", "gate", "utility")
LATENCY_STAGES: tuple[str, ...] = (
    "embedding", "scoring", "decision", "upstream_ttfb", "upstream_total", "cascade",
)  # fmt: skip
# The ``kind`` of app.upstream.classify_error (a unit test keeps the two in step).
UPSTREAM_ERROR_KINDS: tuple[str, ...] = (
    "connect", "timeout", "pool_timeout", "status_429", "status_5xx", "status_4xx",
    "protocol", "invalid_response",
)  # fmt: skip
RELOAD_RESULTS: tuple[str, ...] = ("ok", "rejected")
CACHE_RESULTS: tuple[str, ...] = ("hit", "miss", "error")

# Seconds; from sub-millisecond (cache hit, ONNX scoring) to minutes (long generations).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
SCORE_BUCKETS: tuple[float, ...] = tuple(round(i / 20, 2) for i in range(1, 21))
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
ROUTER_INFO_LABELS: tuple[str, ...] = (
    "path", "provider", "embedding_model", "label_scheme", "router", "default_threshold",
)  # fmt: skip


class Metrics:
    """Every metric the service exports, on a private registry.

    Label values: ``route`` and ``upstream`` are ``edge``/``cloud`` or the names of
    ``DARS_UPSTREAMS_FILE``; ``reason`` is one of ``REASONS``; ``stage`` names a latency stage.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        # What /metrics exports: this process's registry, or every worker's files.
        self.registry = r
        directory = multiprocess_dir()
        if registry is None and directory is not None:
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=str(directory))  # type: ignore[no-untyped-call]

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
        # Shared through Redis: every worker holds the same value; the latest write wins.
        self.threshold = Gauge(
            "dars_threshold",
            "Current routing threshold.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.cloud_share = Gauge(
            "dars_cloud_share",
            "Share of scored requests routed to the cloud over the rolling window.",
            registry=r,
            multiprocess_mode="livemostrecent",  # each worker's window: the latest one's share
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
            "Latency by stage: embedding, scoring, decision, upstream_ttfb, upstream_total, "
            "cascade (edge sampling and meaning grouping before the answer or escalation).",
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
            multiprocess_mode="livemax",  # 1 while any worker's breaker is open
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
        self.router_info = InfoGauge(
            "dars_router_model_info",
            "The loaded router model and its provider.",
            ROUTER_INFO_LABELS,
            registry=r,
        )
        self.router_reloads = Counter(
            "dars_router_reloads_total",
            "Router reloads through the admin API by result (ok|rejected).",
            ["result"],
            registry=r,
        )
        # --- confidence cascade (app/cascade.py)
        self.cascade_decisions = Counter(
            "dars_cascade_decisions_total",
            "Cascade verdicts: keep (a sampled rung's answer), escalate (to the top rung: high "
            "entropy on every sampled rung), gate (to the top rung on the router score).",
            ["decision"],
            registry=r,
        )
        self.cascade_skipped = Counter(
            "dars_cascade_skipped_total",
            "Cascade requests not decided by samples, by reason: tools|response_format|n "
            "(the trained router decided), budget (sample cap reached: the router decided, or "
            "the top rung above rung 0), edge_failed (a rung failed: the next one answered).",
            ["reason"],
            registry=r,
        )
        self.cascade_entropy = Histogram(
            "dars_cascade_entropy",
            "Normalised semantic entropy (entropy / log k) of the samples of each sampled rung.",
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.cascade_edge_samples = Counter(
            "dars_cascade_edge_samples_total",
            "Answers sampled by the cascade, every sampled rung of its ladder together.",
            registry=r,
        )
        self.cascade_samples = Counter(
            "dars_cascade_samples_total",
            "Answers sampled by the cascade, by upstream (rung of its ladder).",
            ["upstream"],
            registry=r,
        )
        self.cascade_threshold = Gauge(
            "dars_cascade_threshold",
            "Current entropy threshold of the cascade.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        for verdict in ("keep", "escalate", "gate"):
            self.cascade_decisions.labels(decision=verdict)
        for skipped in ("tools", "response_format", "n", "budget", "edge_failed"):
            self.cascade_skipped.labels(reason=skipped)

        self.upstream_model = Gauge(
            "dars_upstream_model",
            "1 for the model name each upstream serves (dashboards join it on the route).",
            ["upstream", "model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.build_info = InfoGauge("dars_build_info", "The service's version.", ["version"], r)
        self.build_info.info({"version": _version()})
        self.live = LiveMetrics(r)  # records, feedback, shadow sampling (app/live)
        self._initialise()

    def _initialise(self) -> None:
        """Export every known label combination as 0 (see ``ROUTES`` and the others)."""
        for route in ROUTES:
            other = "cloud" if route == "edge" else "edge"
            for reason in REASONS:
                self.decisions.labels(route=route, reason=reason)
                self.requests.labels(route=route, reason=reason, status="200")
            self.tokens.labels(upstream=route, direction="input")
            self.tokens.labels(upstream=route, direction="output")
            self.cost_usd.labels(upstream=route)
            self.retries.labels(upstream=route)
            self.fallbacks.labels(from_upstream=route, to_upstream=other)
            for kind in UPSTREAM_ERROR_KINDS:
                self.upstream_errors.labels(upstream=route, kind=kind)
        for stage in LATENCY_STAGES:
            self.latency.labels(stage=stage)
        for result in RELOAD_RESULTS:
            self.router_reloads.labels(result=result)

    def initialise_upstreams(self, failover: Mapping[str, Sequence[str]]) -> None:
        """Export the zero series of configured upstreams beyond ``edge``/``cloud`` (a
        ``DARS_UPSTREAMS_FILE``): routes, tokens, errors and their failover pairs."""
        for route, targets in failover.items():
            for reason in REASONS:
                self.decisions.labels(route=route, reason=reason)
                self.requests.labels(route=route, reason=reason, status="200")
            for direction in ("input", "output"):
                self.tokens.labels(upstream=route, direction=direction)
            self.cost_usd.labels(upstream=route)
            self.retries.labels(upstream=route)
            for target in targets:
                self.fallbacks.labels(from_upstream=route, to_upstream=target)
            for kind in UPSTREAM_ERROR_KINDS:
                self.upstream_errors.labels(upstream=route, kind=kind)

    def set_upstream_models(self, models: dict[str, str]) -> None:
        """Export ``dars_upstream_model{upstream, model} 1`` for each upstream's model name."""
        for upstream, model in models.items():
            self.upstream_model.labels(upstream=upstream, model=model).set(1)

    def initialise_cache(self, backend: str) -> None:
        """Export the cache's ``hit``/``miss``/``error`` series of ``backend`` as 0."""
        for result in CACHE_RESULTS:
            self.cache.labels(backend=backend, result=result)

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


def _version() -> str:
    try:
        return metadata.version("dars-router")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"
