"""``LiveLoop``: the live loop's services, built in the lifespan from the settings.

It turns an answered request into a :class:`~router_models.live.records.LiveRecord` for the
writer, offers it to the shadow sampler, and stores client feedback. Disabled (no
``DARS_LIVE_STORE``) every call is a no-op and feedback answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.live.errors import LiveStoreDisabled, LiveStoreUnavailable, RequestNotFound
from app.live.judge import CallableGrader, Judge, LlmJudge
from app.live.metrics import LiveMetrics
from app.live.rewrites import ShadowRewriter
from app.live.shadow import ShadowJob, ShadowSampler
from app.live.shadow_config import JudgeEndpoint, judge_endpoint, shadow_plan, training_model_id
from app.live.shared_budget import build_shadow_budget
from app.live.writer import LiveWriter
from app.settings import Settings
from app.upstream import UpstreamClient, UpstreamName, Usage
from app.upstreams_file import UpstreamsConfig, configured_upstreams
from router_models.live.records import Feedback, FeedbackSource, LiveRecord, prompt_sha256
from router_models.live.store import LiveStore, open_store, store_label

if TYPE_CHECKING:
    from app.scoring import RouterModel

__all__ = ["Answered", "LiveLoop"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answered:
    """What the chat handler knows once a routed request is answered."""

    request_id: str
    route: UpstreamName
    reason: str
    model: str
    status: str
    prompt: str
    body: dict[str, Any]
    score: float | None
    threshold: float | None
    usage: Usage | None
    cost_usd: float | None
    latency_ms: float
    stream: bool
    answer: str | None
    sampled: bool | None = None  # the shadow draw if made before answering (streams)


class LiveLoop:
    """Records, shadow sampling and feedback; ``enabled`` only with a store."""

    def __init__(
        self,
        *,
        writer: LiveWriter | None = None,
        shadow: ShadowSampler | None = None,
        metrics: LiveMetrics | None = None,
        record_prompts: bool = False,
        model_ids: Mapping[UpstreamName, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``model_ids``: each upstream's id for training, kept in its records."""
        self.writer = writer
        self.shadow = shadow
        self.metrics = metrics
        self.record_prompts = record_prompts
        self.model_ids = dict(model_ids or {})
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def disabled(cls) -> LiveLoop:
        return cls()

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    @classmethod
    async def build(
        cls, settings: Settings, metrics: LiveMetrics, stack: AsyncExitStack
    ) -> LiveLoop:
        """The loop the settings ask for; its tasks and clients close with ``stack``."""
        if settings.live_store is None:
            return cls.disabled()
        upstreams = configured_upstreams(settings)
        url = settings.live_store.get_secret_value()
        store: LiveStore = await asyncio.to_thread(open_store, url)
        writer = LiveWriter(store, metrics, max_queue=settings.live_queue_size)
        writer.start()
        stack.push_async_callback(writer.aclose)
        shadow = None
        if settings.shadow_rate > 0:
            shadow = _build_shadow(settings, upstreams, writer, metrics)
            shadow.start()
            stack.push_async_callback(shadow.aclose)
        logger.info(
            "live store %s (%s), prompts %s, shadow rate %g",
            store_label(url),
            store.backend,
            "kept" if settings.record_prompts else "hashed",
            settings.shadow_rate,
        )
        return cls(
            writer=writer,
            shadow=shadow,
            metrics=metrics,
            record_prompts=settings.record_prompts,
            model_ids={spec.name: training_model_id(spec) for spec in upstreams.upstreams},
        )

    async def observe(self, answered: Answered, router: RouterModel) -> None:
        """Record one answered request and maybe shadow-sample it; never raises.

        ``router``: the model that decided (its file path and sha256, hashed at load)."""
        try:
            await self._observe(answered, router)
        except Exception:
            logger.exception("live record of request %s failed", answered.request_id)

    def spawn(self, answered: Answered, router: RouterModel) -> None:
        """:meth:`observe` as a task (stream ends are reported from inside the relay)."""
        task = asyncio.get_running_loop().create_task(self.observe(answered, router))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _observe(self, a: Answered, router: RouterModel) -> None:
        if self.writer is None:
            return
        routed = a.reason != "forced"
        record = LiveRecord(
            request_id=a.request_id,
            ts=self._clock(),
            route=a.route,
            reason=a.reason,
            model=a.model,
            status=a.status,
            prompt_sha256=prompt_sha256(a.prompt),
            router=str(router.path) if routed else None,
            router_sha256=router.sha256 if routed else None,
            score=a.score,
            threshold=a.threshold,
            prompt=a.prompt if self.record_prompts else None,
            prompt_tokens=a.usage.prompt_tokens if a.usage else None,
            completion_tokens=a.usage.completion_tokens if a.usage else None,
            cost_usd=a.cost_usd,
            latency_ms=a.latency_ms,
            stream=a.stream,
            model_id=self.model_ids.get(a.route),
        )
        self.writer.submit(record)
        if (
            self.shadow is not None
            and a.status == "200"
            and (self.shadow.wants() if a.sampled is None else a.sampled)
        ):
            self.shadow.submit(
                ShadowJob(
                    request_id=a.request_id,
                    prompt=a.prompt,
                    body=a.body,
                    served=a.route,
                    served_answer=a.answer,
                    served_cost=a.cost_usd,
                )
            )

    async def feedback(self, request_id: str, score: float, source: FeedbackSource) -> bool:
        """Store a client's feedback; True when it replaced an earlier one.

        ``RequestNotFound`` for an id never recorded; ``LiveStore*`` errors without a store.
        """
        if self.writer is None or self.metrics is None:
            raise LiveStoreDisabled("Feedback needs a live store: set DARS_LIVE_STORE.")
        store = self.writer.store
        feedback = Feedback(request_id=request_id, score=score, source=source, ts=self._clock())
        record = self.writer.pending(request_id)
        try:
            if record is None:
                record = await asyncio.to_thread(store.get_record, request_id)
            if record is None:
                raise RequestNotFound(
                    f"No recorded request has id {request_id!r}.", param="request_id"
                )
            replaced = await asyncio.to_thread(store.put_feedback, feedback)
        except RequestNotFound:
            raise
        except Exception as exc:
            raise LiveStoreUnavailable(f"The live store failed: {type(exc).__name__}.") from exc
        self.metrics.feedback.labels(kind=source, replaced=str(replaced).lower()).inc()
        if not replaced:
            self.metrics.quality.labels(source="feedback", upstream=record.route).observe(score)
        return replaced


def _judge(settings: Settings, endpoint: JudgeEndpoint) -> Judge:
    if settings.shadow_judge == "grader" and settings.shadow_grader is not None:
        return CallableGrader(settings.shadow_grader)
    return LlmJudge(
        base_url=endpoint.base_url,
        model=endpoint.model,
        api_key=endpoint.api_key,
        scale=settings.shadow_judge_scale,
        price_input_per_mtok=endpoint.price_input_per_mtok,
        price_output_per_mtok=endpoint.price_output_per_mtok,
        timeout_s=settings.upstream_read_timeout_s,
    )


def _build_shadow(
    settings: Settings, upstreams: UpstreamsConfig, writer: LiveWriter, metrics: LiveMetrics
) -> ShadowSampler:
    """Own clients (own pools, no metrics, no retries): shadow calls never touch user traffic.

    Raises :class:`~app.live.shadow_config.ShadowConfigError` when a shadow setting names an
    upstream that is not configured (start-up stops with that message).
    """
    plan = shadow_plan(settings, upstreams)
    endpoint = judge_endpoint(settings, plan.judge)
    file = None if upstreams.source == "env" else upstreams.source
    clients: dict[UpstreamName, UpstreamClient] = {
        spec.name: UpstreamClient(spec.name, spec.config, retries=0, file=file)
        for spec in upstreams.upstreams
    }
    rewriter = None
    if settings.shadow_rewrites > 0:
        rewriter = ShadowRewriter(
            endpoint, k=settings.shadow_rewrites, timeout_s=settings.upstream_read_timeout_s
        )
    return ShadowSampler(
        clients,
        _judge(settings, endpoint),
        build_shadow_budget(settings, metrics),
        writer,
        metrics,
        rate=settings.shadow_rate,
        samples=plan.samples,
        temperature=settings.shadow_temperature,
        max_queue=settings.shadow_queue_size,
        keep_responses=settings.record_prompts,
        model_ids=plan.model_ids,
        rewriter=rewriter,
    )
