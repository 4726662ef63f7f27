"""The confidence cascade as a routing mode: sample the edge k times, keep or escalate.

The cascade climbs a **ladder**: the configured upstreams in their configured order (an
upstreams file's order; the edge/cloud shorthand gives ``edge``, ``cloud``), so a cascade lists
its upstreams cheapest first. Every rung but the last is sampled in turn, and the last (the top)
is never sampled: it answers the forwarded request. With two upstreams: sample the edge, keep
its answer or escalate to the cloud.

For one request (``router-cascade``, ``router-cascade-<t>``, or ``router`` when
``DARS_ROUTING_MODE=cascade``) :meth:`CascadeService.run`

1. declines tools, JSON mode and ``n`` > 1 (:func:`app.cascade_policy.skip_reason`): the
   trained router decides instead;
2. with ``DARS_CASCADE_GATE`` set, scores the query with the trained router and sends it
   straight to the top rung when the score reaches the gate (no samples drawn): a two-model
   router's score, a K-model router's 1 - predicted quality of the bottom rung
   (:func:`app.routing.escalation_score`);
3. for each rung below the top: spends k samples from the budget
   (``DARS_CASCADE_MAX_SAMPLES_PER_S``; empty at rung 0: the trained router decides; empty
   higher up: the top rung answers), asks the rung for k answers (:mod:`app.cascade_sampling`)
   and groups them by meaning (:mod:`app.cascade_meaning`);
4. computes the semantic entropy, normalised by log k, and climbs to the next rung when it is
   above the threshold (the trainer's own ``decide``/``escalates``): otherwise the largest
   meaning class's answer at this rung is kept. A rung whose sampling fails climbs too when its
   failover allows it.

The outcome says what to answer; the route renders it (the kept answer) or forwards the request
to the top rung through the normal upstream path, with its retries and failover. ``k`` counts
every sample drawn, ``usage`` sums them, the entropy is the deciding rung's. The entropy
threshold is one for every rung, a :class:`app.policy.ThresholdState` of its own fed by each
sampled rung's entropy (route ``cloud`` = climbed): admin API, live window and calibration to a
climbing share work as for the router's threshold.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from app.cascade_meaning import Meaning, MeaningGrouper, MeaningMode
from app.cascade_policy import (
    CascadeSelection,
    SampleBudget,
    SkipReason,
    normalised_entropy,
    parse_cascade_model,
    skip_reason,
)
from app.cascade_sampling import EdgeSample, EdgeSampler
from app.errors import InvalidRequest
from app.policy import MIN_LIVE_SCORES, Decision, Reason, ThresholdState
from app.protocol import ChatCompletionRequest
from app.query import query_policy, query_text
from app.routing import RouterParts, RoutingParts, decide_scored, escalation_score
from app.shared import LocalState, SharedState
from app.upstream import UpstreamFailed, UpstreamName, Upstreams, Usage
from router_models.cascade import decide as decide_samples
from router_models.cascade import escalates

if TYPE_CHECKING:
    from app.embedding import BatchingEmbedder, QueryEmbedder
    from app.metrics import Metrics
    from app.settings import Settings

__all__ = [
    "CascadeConfig",
    "CascadeOutcome",
    "CascadeService",
    "RouterDecide",
    "RouterScore",
    "build_cascade",
    "trained_router",
]

logger = logging.getLogger(__name__)

# The trained router on one request: its escalation score for the gate (cheapest rung named),
# and its recorded decision at the server's knob for requests the cascade does not sample.
RouterScore = Callable[[ChatCompletionRequest, UpstreamName], Awaitable[float]]
RouterDecide = Callable[[ChatCompletionRequest], Awaitable[Decision]]
Verdict = Literal["keep", "escalate"]


@dataclass(frozen=True, kw_only=True)
class CascadeConfig:
    """The cascade's knobs (``DARS_CASCADE_*``, ``DARS_ROUTING_MODE``)."""

    k: int = 3
    threshold: float = 0.0
    gate: float | None = None
    temperature: float = 0.7
    use_n: bool = False
    meaning: MeaningMode = "auto"
    similarity: float = 0.9
    max_samples_per_s: float | None = None
    default_mode: Literal["router", "cascade"] = "router"
    window: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> CascadeConfig:
        return cls(
            k=settings.cascade_k,
            threshold=settings.cascade_threshold,
            gate=settings.cascade_gate,
            temperature=settings.cascade_temperature,
            use_n=settings.cascade_edge_n,
            meaning=settings.cascade_meaning,
            similarity=settings.cascade_similarity,
            max_samples_per_s=settings.cascade_max_samples_per_s,
            default_mode=settings.routing_mode,
            window=settings.calibration_window,
        )


@dataclass(frozen=True, kw_only=True)
class CascadeOutcome:
    """What the cascade did with one request, enough to answer it and to explain it.

    ``kept`` is set when a sampled rung's answer is the reply (``verdict`` ``keep``); otherwise
    the request is forwarded to ``route`` (the top rung, or the trained router's choice).
    ``skipped`` names why samples did not decide (the trained router did, a rung failed and the
    next one answered, or the budget ran out above rung 0). ``rung`` is the ladder rung that
    answers when the cascade chose it.
    """

    route: UpstreamName
    reason: Reason
    verdict: Verdict | None = None
    k: int = 0
    entropy: float | None = None
    entropy_threshold: float | None = None
    method: str | None = None
    clusters: int | None = None
    score: float | None = None
    router_threshold: float | None = None
    skipped: SkipReason | None = None
    kept: EdgeSample | None = None
    usage: Usage | None = None
    rung: UpstreamName | None = None
    routed: Decision | None = None

    @property
    def decision(self) -> Decision:
        """As a routing decision (``x-dars-route``/``-reason``/``-score``/``-threshold``); the
        trained router's own when it decided (a K-model router's quality and runner-up too)."""
        if self.routed is not None:
            return self.routed
        return Decision(self.route, self.reason, self.score, self.router_threshold)

    def headers(self) -> dict[str, str]:
        """The cascade's own ``x-dars-*`` headers (the route headers come from the decision)."""
        headers = {"x-dars-mode": "cascade", "x-dars-k": str(self.k)}
        if self.verdict is not None:
            headers["x-dars-decision"] = self.verdict
        if self.entropy is not None:
            headers["x-dars-entropy"] = f"{self.entropy:.6f}"
        if self.entropy_threshold is not None:
            headers["x-dars-entropy-threshold"] = f"{self.entropy_threshold:.6f}"
        if self.method is not None and self.clusters is not None:
            headers["x-dars-meaning"] = self.method
            headers["x-dars-clusters"] = str(self.clusters)
        if self.skipped is not None:
            headers["x-dars-cascade-skipped"] = self.skipped
        if self.rung is not None:
            headers["x-dars-rung"] = self.rung
        if self.usage is not None:
            tokens = self.usage.prompt_tokens + self.usage.completion_tokens
            headers["x-dars-edge-tokens"] = str(tokens)
        return headers


def _add(total: Usage | None, usage: Usage) -> Usage:
    if total is None:
        return usage
    return Usage(
        prompt_tokens=total.prompt_tokens + usage.prompt_tokens,
        completion_tokens=total.completion_tokens + usage.completion_tokens,
    )


@dataclass(kw_only=True)
class _Climb:
    """One request's way up the ladder so far: samples drawn (``failed_k`` of them on rungs
    that failed), their usage, the last sampled rung's verdict and a kept answer."""

    score: float | None
    k: int = 0
    failed_k: int = 0
    usage: Usage | None = None
    skipped: SkipReason | None = None
    decided: CascadeOutcome | None = None
    outcome: CascadeOutcome | None = None

    def result(self, top: UpstreamName) -> CascadeOutcome:
        """The kept answer, else the top rung answering (escalated, or every rung failed)."""
        if self.outcome is not None:
            base = self.outcome
        elif self.decided is not None:
            base = replace(self.decided, route=top, rung=top)
        else:
            base = CascadeOutcome(route=top, reason="fallback", score=self.score, rung=top)
        return replace(base, k=self.k, usage=self.usage, skipped=self.skipped)


class CascadeService:
    """The cascade policy; built once in the lifespan, used by the chat route."""

    def __init__(
        self,
        config: CascadeConfig,
        *,
        upstreams: Upstreams,
        grouper: MeaningGrouper,
        score: RouterScore,
        decide: RouterDecide,
        router_threshold: ThresholdState,
        metrics: Metrics | None = None,
        budget: SampleBudget | None = None,
    ) -> None:
        if config.k < 2:
            raise ValueError(f"the cascade needs k >= 2 samples, got {config.k}")
        self.config = config
        self.upstreams = upstreams
        self.sampler = EdgeSampler(upstreams, temperature=config.temperature, use_n=config.use_n)
        self.grouper = grouper
        self.score = score
        self.decide = decide
        self.router_threshold = router_threshold
        self.metrics = metrics
        rate = config.max_samples_per_s
        self.budget = budget or SampleBudget(
            rate, burst=None if rate is None else max(rate, config.k)
        )
        # The live window of normalised entropies (route "cloud" = escalated); no metrics object:
        # dars_threshold and dars_cloud_share belong to the router's threshold.
        self.threshold = ThresholdState(
            config.threshold,
            window=config.window,
            source="default",
            value_gauge=None if metrics is None else metrics.cascade_threshold,
        )
        # With Redis, the threshold and entropy window of every replica (app.shared); the
        # lifespan replaces this local one and starts it.
        self.shared: SharedState = LocalState()

    @property
    def ladder(self) -> tuple[UpstreamName, ...]:
        """The configured upstreams in configured order: sampled bottom up, the last forwarded."""
        return tuple(self.upstreams.clients)

    def selection(self, model: str) -> CascadeSelection | None:
        """The cascade selection of a ``model`` field, ``None`` for another routing mode."""
        return parse_cascade_model(model, default_mode=self.config.default_mode)

    async def set_threshold(self, value: float) -> float:
        """An operator's entropy threshold (admin API), here and (with Redis) on every replica."""
        value = self.threshold.set(value)
        await self.shared.publish()
        return value

    async def calibrate(self, cloud_share: float) -> float:
        """The entropy threshold escalating about ``cloud_share`` of the recent sampled requests
        of every replica with Redis, else of this one (ties at the threshold stay on the edge:
        entropies take few distinct values).

        Raises ``InvalidRequest``: a share outside [0, 1], or fewer than ``MIN_LIVE_SCORES``
        sampled requests so far (code ``calibration_unavailable``).
        """
        scores = await self.shared.live_scores()
        if scores is None:
            scores = self.threshold.live_scores()
        if scores.size < MIN_LIVE_SCORES and cloud_share not in (0.0, 1.0):
            raise InvalidRequest(
                f"cannot calibrate the cascade: {scores.size} sampled requests so far "
                f"(need {MIN_LIVE_SCORES})",
                param="cloud_share",
                code="calibration_unavailable",
            )
        value = self.threshold.calibrate(cloud_share, None, scores=scores)
        await self.shared.publish()
        return value

    async def run(
        self, request: ChatCompletionRequest, selection: CascadeSelection
    ) -> CascadeOutcome:
        """Decide for one request (see the module docstring); may raise a rung's error when
        its sampling fails and its failover is off."""
        outcome = await self._run(request, selection)
        if self.metrics is not None:
            self.metrics.decisions.labels(route=outcome.route, reason=outcome.reason).inc()
        return outcome

    async def _run(
        self, request: ChatCompletionRequest, selection: CascadeSelection
    ) -> CascadeOutcome:
        body = request.upstream_body(include_usage=False)
        skipped = skip_reason(body)
        if skipped is not None:
            return await self._by_router(request, skipped)
        ladder = self.ladder
        top = ladder[-1]
        score = None
        gate = self.config.gate
        if gate is not None:
            score = await self.score(request, ladder[0])
            if score >= gate:
                self._count("gate")
                return CascadeOutcome(
                    route=top,
                    reason="gate",
                    verdict="escalate",
                    score=score,
                    router_threshold=gate,
                    rung=top,
                )
        threshold = selection.threshold if selection.threshold is not None else self.threshold.get()
        started = time.perf_counter()
        climb = _Climb(score=score)
        for index, rung in enumerate(ladder[:-1]):
            if not self.budget.take(self.config.k):
                if index == 0:
                    return await self._by_router(request, "budget")
                self._skip("budget")
                climb.skipped = "budget"
                break
            outcome = await self._sample_rung(body, rung, ladder[index + 1], threshold, climb)
            if outcome is not None:
                climb.outcome = outcome
                break
        if self.metrics is not None and climb.k > climb.failed_k:
            self.metrics.latency.labels(stage="cascade").observe(time.perf_counter() - started)
        if climb.outcome is None and climb.decided is not None:
            self._count("escalate")
        return climb.result(top)

    async def _sample_rung(
        self,
        body: dict[str, Any],
        rung: UpstreamName,
        above: UpstreamName,
        threshold: float,
        climb: _Climb,
    ) -> CascadeOutcome | None:
        """Sample one rung into ``climb``; its keep outcome, or ``None`` to climb to ``above``.

        Raises the rung's error when sampling fails and its failover is off."""
        k = self.config.k
        climb.k += k
        try:
            samples = await self.sampler.sample(body, k, rung)
        except UpstreamFailed as failed:
            if self.upstreams.failover_to[rung] is None or not failed.failures[0].failover:
                raise failed.error from failed.__cause__
            logger.warning("%s; the cascade climbs to %s", failed, above)
            self._skip("edge_failed")
            climb.failed_k += k
            climb.skipped = "edge_failed"
            return None
        climb.usage = _add(climb.usage, samples.usage)
        meaning = await self.grouper.group(samples.texts)
        outcome, representative = self._decide(meaning, threshold, climb.score)
        keep = outcome.verdict == "keep"
        self.threshold.record(outcome.entropy or 0.0, "edge" if keep else "cloud")
        if self.metrics is not None:
            self.metrics.cascade_edge_samples.inc(k)
            self.metrics.cascade_samples.labels(upstream=rung).inc(k)
            self.metrics.cascade_entropy.observe(outcome.entropy or 0.0)
        climb.decided = outcome
        if not keep:
            return None
        self._count("keep")
        return replace(outcome, route=rung, kept=samples.samples[representative], rung=rung)

    @staticmethod
    def _decide(
        meaning: Meaning, threshold: float, score: float | None
    ) -> tuple[CascadeOutcome, int]:
        """The verdict on normalised entropy, and the self-consistency sample's index."""
        k = len(meaning.labels)
        samples = decide_samples(meaning.labels, math.inf)  # entropy and representative only
        entropy = normalised_entropy(samples.entropy, k)
        escalate = escalates(entropy, threshold)
        outcome = CascadeOutcome(
            route="cloud" if escalate else "edge",
            reason="cascade",
            verdict="escalate" if escalate else "keep",
            k=k,
            entropy=entropy,
            entropy_threshold=threshold,
            method=meaning.method,
            clusters=samples.n_clusters,
            score=score,
        )
        return outcome, samples.representative

    async def _by_router(
        self, request: ChatCompletionRequest, skipped: SkipReason
    ) -> CascadeOutcome:
        """The trained router's decision (two-model or K-model, recorded in its live window),
        for a request the cascade does not sample."""
        self._skip(skipped)
        routed = await self.decide(request)
        return CascadeOutcome(
            route=routed.route,
            reason=routed.reason,
            score=routed.score,
            router_threshold=routed.threshold,
            skipped=skipped,
            routed=routed,
        )

    def _count(self, verdict: str) -> None:
        if self.metrics is not None:
            self.metrics.cascade_decisions.labels(decision=verdict).inc()

    def _skip(self, reason: SkipReason) -> None:
        if self.metrics is not None:
            self.metrics.cascade_skipped.labels(reason=reason).inc()


def trained_router(
    query_embedder: QueryEmbedder, parts: RoutingParts, settings: Settings
) -> tuple[RouterScore, RouterDecide]:
    """The trained router as the cascade asks it (embedding cache and all): the gate's
    escalation score and the recorded decision at the server's knob, for either router kind."""

    async def embedded(request: ChatCompletionRequest) -> tuple[Any, int]:
        text = query_text(request, query_policy(settings, parts.scorer.model.metadata))
        vector, _ = await query_embedder.embed(text)
        return vector, len(text)

    async def score(request: ChatCompletionRequest, cheapest: UpstreamName) -> float:
        vector, length = await embedded(request)
        return await escalation_score(parts, vector, length, cheapest)

    async def decide(request: ChatCompletionRequest) -> Decision:
        vector, length = await embedded(request)
        return await decide_scored(parts, None, vector, length, record=True)

    return score, decide


def build_cascade(
    settings: Settings,
    *,
    upstreams: Upstreams,
    embedder: BatchingEmbedder,
    query_embedder: QueryEmbedder,
    router: RouterParts,
    metrics: Metrics,
) -> CascadeService:
    """The cascade from the settings and the services the lifespan already built."""
    config = CascadeConfig.from_settings(settings)
    grouper = MeaningGrouper(embedder.embed, mode=config.meaning, similarity=config.similarity)
    score, decide = trained_router(query_embedder, router, settings)
    return CascadeService(
        config,
        upstreams=upstreams,
        grouper=grouper,
        score=score,
        decide=decide,
        router_threshold=router.threshold,
        metrics=metrics,
    )
