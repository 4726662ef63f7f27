"""Shadow sampling: after an answer went back, sample the models again and grade every answer.

A share ``rate`` of recorded requests becomes a :class:`ShadowJob` on a bounded queue (full:
dropped and counted, never waited for). One background task works the queue: each model
answers ``samples[model]`` more times (distinct seeds, so the edge model's decodes differ) on
its own connection pool (never the user's), and the judge grades those answers and the served
one. With a rewriter (``DARS_SHADOW_REWRITES`` = k) the prompt is also paraphrased up to k
times (:mod:`app.live.rewrites`) and every upstream that takes decodes answers each rewrite
once, so every model's input variance is observed alike; the judge grades those answers
against the *original* prompt, and their grades carry ``variant_id`` 1..k. Every call (answers,
rewrites, judge) first waits for a per-minute slot and stops the job when the USD cap of the
day is spent (:class:`app.live.budget.ShadowCaps`: per process, or shared by the replicas
through Redis). Grades go to the store writer as
:class:`~router_models.live.records.Grade`; nothing here can fail or slow a user request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.live.budget import ShadowCaps
from app.live.judge import Judge
from app.live.metrics import LiveMetrics
from app.live.rewrites import ShadowRewriter, last_user_text, with_user_text
from app.live.writer import LiveWriter
from app.tasks import cancel_and_wait
from app.upstream import UpstreamClient, UpstreamFailed, UpstreamName, Usage
from router_models.collect.client import CollectError
from router_models.live.records import Grade

__all__ = ["OverBudget", "ShadowJob", "ShadowSampler", "answer_text"]

logger = logging.getLogger(__name__)

_DROPPED_FIELDS = ("stream", "stream_options", "n", "seed", "user")
_SEED_BASE = 1000  # decode n of a request has seed 1000 + n - 1: reproducible, distinct


class OverBudget(Exception):
    """The day's USD cap is spent or calls are off: the job stops here."""


@dataclass(frozen=True)
class ShadowJob:
    """One sampled request: what to re-send (``body``, without ``model``), who served it and
    with what answer (None when there is none to grade: a stream that was not drawn before it
    started, or did not finish)."""

    request_id: str
    prompt: str
    body: Mapping[str, Any]
    served: UpstreamName
    served_answer: str | None
    served_cost: float | None


def answer_text(payload: Mapping[str, Any]) -> str | None:
    """The first choice's message text of a chat completion, if it has one."""
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


class ShadowSampler:
    """The queue, the worker task, the caps and the judge of shadow sampling."""

    def __init__(
        self,
        clients: Mapping[UpstreamName, UpstreamClient],
        judge: Judge,
        budget: ShadowCaps,
        writer: LiveWriter,
        metrics: LiveMetrics,
        *,
        rate: float,
        samples: Mapping[UpstreamName, int],
        temperature: float = 0.7,
        max_queue: int = 100,
        keep_responses: bool = False,
        model_ids: Mapping[UpstreamName, str] | None = None,
        rewriter: ShadowRewriter | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``model_ids``: the model id each upstream's grades carry (default: its model name);
        ``rewriter``: paraphrases the prompt for more variants (None: originals only)."""
        self.clients = clients
        self.judge = judge
        self.budget = budget
        self.writer = writer
        self.metrics = metrics
        self.rate = rate
        self.samples = samples
        self.temperature = temperature
        self.keep_responses = keep_responses
        self.model_ids = dict(model_ids or {})
        self.rewriter = rewriter
        self._rng = rng or random.Random()
        self._clock = clock
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task[None] | None = None
        metrics.shadow_budget.labels(scope=budget.scope).set(budget.usd_per_day)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dars-shadow-sampler")

    def wants(self) -> bool:
        """Draw whether this request is sampled (before building its job)."""
        return self.rate > 0 and self._rng.random() < self.rate

    def submit(self, job: ShadowJob) -> bool:
        """Queue ``job`` unless the day's budget is spent or the backlog is full (counted)."""
        if not self.budget.can_spend():
            self.metrics.shadow.labels(result="dropped_budget").inc()
            return False
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.shadow.labels(result="dropped_queue").inc()
            return False
        self.metrics.shadow.labels(result="sampled").inc()
        self.metrics.shadow_backlog.set(self._queue.qsize())
        return True

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            self.metrics.shadow_backlog.set(self._queue.qsize())
            try:
                await self.process(job)
            except OverBudget:
                self.metrics.shadow.labels(result="dropped_budget").inc()
            except Exception:
                logger.exception("shadow job of request %s failed", job.request_id)
                self.metrics.shadow.labels(result="failed").inc()
            else:
                self.metrics.shadow.labels(result="done").inc()

    async def slot(self) -> None:
        """Wait for a per-minute slot; OverBudget when the USD cap is spent or calls are off."""
        while True:
            wait = await self.budget.reserve()
            if wait is None:
                raise OverBudget
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def charge(self, usd: float, kind: str) -> None:
        self.budget.charge(usd)
        self.metrics.shadow_spend.labels(kind=kind).inc(usd)

    async def _sample(
        self, name: UpstreamName, request: Mapping[str, Any], seed: int
    ) -> tuple[str, float]:
        """One more answer of ``name`` with ``seed``; raises UpstreamFailed on failure."""
        client = self.clients[name]
        body = {k: v for k, v in request.items() if k not in _DROPPED_FIELDS}
        body.update(seed=seed, temperature=body.get("temperature") or self.temperature)
        await self.slot()
        _, payload = await client.attempt(lambda: client.create_once(body))
        usage = Usage.from_payload(payload.get("usage"))
        cost = client.cost_usd(usage) if usage is not None else 0.0
        self.charge(cost, "answer")
        text = answer_text(payload)
        if text is None:
            raise ValueError(f"{name} answered without text")
        return text, cost

    async def _grade(
        self, job: ShadowJob, name: UpstreamName, sample_id: int, answer: str, **extra: Any
    ) -> None:
        await self.slot()
        try:
            verdict = await self.judge.grade(job.prompt, answer)
        except Exception as exc:
            logger.warning("judge failed on request %s: %r", job.request_id, exc)
            self.metrics.grades.labels(result="failed").inc()
            return
        self.charge(verdict.cost_usd, "judge")
        if verdict.score is None:
            self.metrics.grades.labels(result="unparsed").inc()
            return
        self.metrics.grades.labels(result="ok").inc()
        self.metrics.quality.labels(source="judge", upstream=name).observe(verdict.score)
        self.writer.submit(
            Grade(
                request_id=job.request_id,
                upstream=name,
                model=self.model_ids.get(name) or self.clients[name].model,
                sample_id=sample_id,
                score=verdict.score,
                judge=self.judge.name,
                ts=self._clock(),
                response=answer if self.keep_responses else None,
                **extra,
            )
        )

    async def _decode(
        self,
        job: ShadowJob,
        name: UpstreamName,
        sample_id: int,
        body: Mapping[str, Any],
        **extra: Any,
    ) -> None:
        """Decode ``body`` once on ``name`` as answer ``sample_id`` of the request; grade it."""
        seed = _SEED_BASE + sample_id - 1
        try:
            text, cost = await self._sample(name, body, seed)
        except (UpstreamFailed, ValueError) as exc:
            logger.warning("shadow sample of %s failed: %r", name, exc)
            return
        await self._grade(job, name, sample_id, text, seed=seed, cost_usd=cost, **extra)

    async def _variants(self, job: ShadowJob, rewriter: ShadowRewriter) -> None:
        """Each sampled upstream answers each rewrite once (answers after its own decodes)."""
        original = last_user_text(job.body)
        if original is None:
            return  # no plain-text user message to paraphrase
        try:
            rewrites = await rewriter.rewrite(original, self)
        except CollectError as exc:
            logger.warning("shadow rewrite of request %s failed: %r", job.request_id, exc)
            return
        for variant_id, text in enumerate(rewrites, start=1):
            body = with_user_text(job.body, text)
            kept = text if self.keep_responses else None
            for name, count in self.samples.items():
                if count > 0:
                    await self._decode(
                        job, name, count + variant_id, body, variant_id=variant_id, rewrite=kept
                    )

    async def process(self, job: ShadowJob) -> None:
        """Grade the served answer, sample and grade each model ``samples[model]`` times, then
        the rewrites, if any. Sample ids number one model's answers to the request."""
        if job.served_answer is not None:
            cost = job.served_cost or 0.0
            await self._grade(job, job.served, 0, job.served_answer, served=True, cost_usd=cost)
        for name, count in self.samples.items():
            for sample_id in range(1, count + 1):
                await self._decode(job, name, sample_id, job.body)
        if self.rewriter is not None:
            await self._variants(job, self.rewriter)

    async def aclose(self) -> None:
        """Stop sampling; queued jobs are dropped (they were never on a request's path)."""
        await cancel_and_wait(self._task)
        close = getattr(self.judge, "aclose", None)
        if close is not None:
            await close()
        if self.rewriter is not None:
            await self.rewriter.aclose()
        await asyncio.gather(*(client.aclose() for client in self.clients.values()))
        await self.budget.aclose()
