"""What ``POST /v1/chat/completions`` calls once its answer has gone back.

Two entry points, both cheap and unable to fail the request: :func:`after_json` returns a
background task for a JSON answer (Starlette runs it after the last byte is sent) and
:func:`after_stream` schedules the same work when the relay reports a stream's end.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.background import BackgroundTask

from app.live.loop import Answered
from app.live.shadow import answer_text
from app.query import query_policy, query_text
from app.upstream import UpstreamName, UpstreamReply, Usage

if TYPE_CHECKING:
    from app.deps import Services
    from app.policy import Decision
    from app.protocol import ChatCompletionRequest
    from app.request_context import RequestRecord

__all__ = ["after_json", "after_stream"]


def _answered(
    services: Services,
    body: ChatCompletionRequest,
    record: RequestRecord,
    decision: Decision,
    *,
    started: float,
    status: str,
    usage: Usage | None,
    answer: str | None,
    stream: bool,
) -> Answered | None:
    try:
        policy = query_policy(services.settings, services.scorer.model.metadata)
        prompt = query_text(body, policy)
    except Exception:  # a query without text: nothing to learn from
        return None
    route: UpstreamName = decision.route
    client = services.upstreams[route]
    return Answered(
        request_id=record.request_id,
        route=route,
        reason=decision.reason,
        model=client.model,
        status=status,
        prompt=prompt,
        body=body.upstream_body(include_usage=False),
        score=decision.score,
        threshold=decision.threshold,
        usage=usage,
        cost_usd=client.cost_usd(usage) if usage is not None else None,
        latency_ms=(time.perf_counter() - started) * 1000,
        stream=stream,
        answer=answer,
    )


def after_json(
    services: Services,
    body: ChatCompletionRequest,
    record: RequestRecord,
    decision: Decision,
    reply: UpstreamReply,
    *,
    started: float,
) -> BackgroundTask | None:
    """The background task recording a JSON answer; None when the loop is off."""
    live = services.live
    if not live.enabled:
        return None
    answered = _answered(
        services,
        body,
        record,
        decision,
        started=started,
        status="200",
        usage=reply.usage,
        answer=answer_text(reply.payload),
        stream=False,
    )
    if answered is None:
        return None
    return BackgroundTask(live.observe, answered, services.scorer.model)


def after_stream(
    services: Services,
    body: ChatCompletionRequest,
    record: RequestRecord,
    decision: Decision,
    *,
    started: float,
    status: str,
) -> None:
    """Record a stream that ended with ``status`` (the relay keeps neither text nor usage)."""
    live = services.live
    if not live.enabled:
        return
    answered = _answered(
        services,
        body,
        record,
        decision,
        started=started,
        status=status,
        usage=None,
        answer=None,
        stream=True,
    )
    if answered is not None:
        live.spawn(answered, services.scorer.model)
