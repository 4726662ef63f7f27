"""``LiveLoop``: the live loop's services, built in the lifespan from the settings.

It turns an answered request into a :class:`~router_models.live.records.LiveRecord` for the
writer, offers it to the shadow sampler, and stores client feedback. Disabled (no
``DARS_LIVE_STORE``) every call is a no-op and feedback answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.live.budget import ShadowBudget
from app.live.errors import LiveStoreDisabled, LiveStoreUnavailable, RequestNotFound
from app.live.judge import CallableGrader, Judge, LlmJudge
from app.live.metrics import LiveMetrics
from app.live.shadow import ShadowJob, ShadowSampler
from app.live.writer import LiveWriter
from app.settings import Settings
from app.upstream import UPSTREAM_NAMES, UpstreamClient, UpstreamName, Usage
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


class LiveLoop:
    """Records, shadow sampling and feedback; ``enabled`` only with a store."""

    def __init__(
        self,
        *,
        writer: LiveWriter | None = None,
        shadow: ShadowSampler | None = None,
        metrics: LiveMetrics | None = None,
        record_prompts: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.writer = writer
        self.shadow = shadow
        self.metrics = metrics
        self.record_prompts = record_prompts
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
        url = settings.live_store.get_secret_value()
        store: LiveStore = await asyncio.to_thread(open_store, url)
        writer = LiveWriter(store, metrics, max_queue=settings.live_queue_size)
        writer.start()
        stack.push_async_callback(writer.aclose)
        shadow = None
        if settings.shadow_rate > 0:
            shadow = _build_shadow(settings, writer, metrics)
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
            writer=writer, shadow=shadow, metrics=metrics, record_prompts=settings.record_prompts
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
        )
        self.writer.submit(record)
        if self.shadow is not None and a.status == "200" and self.shadow.wants():
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


def _judge(settings: Settings) -> Judge:
    if settings.shadow_judge == "grader" and settings.shadow_grader is not None:
        return CallableGrader(settings.shadow_grader)
    cloud = settings.upstream("cloud")
    key = settings.shadow_judge_api_key or (
        None if settings.shadow_judge_base_url else cloud.api_key
    )
    prices = (
        settings.shadow_judge_price_input_per_mtok,
        settings.shadow_judge_price_output_per_mtok,
    )
    return LlmJudge(
        base_url=settings.shadow_judge_base_url or cloud.base_url,
        model=settings.shadow_judge_model or cloud.model,
        api_key=key.get_secret_value() if key is not None else None,
        scale=settings.shadow_judge_scale,
        price_input_per_mtok=cloud.price_input_per_mtok if prices[0] is None else prices[0],
        price_output_per_mtok=cloud.price_output_per_mtok if prices[1] is None else prices[1],
        timeout_s=settings.upstream_read_timeout_s,
    )


def _build_shadow(settings: Settings, writer: LiveWriter, metrics: LiveMetrics) -> ShadowSampler:
    """Own clients (own pools, no metrics, no retries): shadow calls never touch user traffic."""
    clients: dict[UpstreamName, UpstreamClient] = {
        name: UpstreamClient(name, settings.upstream(name), retries=0) for name in UPSTREAM_NAMES
    }
    return ShadowSampler(
        clients,
        _judge(settings),
        ShadowBudget(settings.shadow_budget_usd_per_day, settings.shadow_calls_per_minute),
        writer,
        metrics,
        rate=settings.shadow_rate,
        samples={"edge": settings.shadow_edge_samples, "cloud": settings.shadow_cloud_samples},
        temperature=settings.shadow_temperature,
        max_queue=settings.shadow_queue_size,
        keep_responses=settings.record_prompts,
    )
