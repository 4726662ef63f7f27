"""What ``POST /v1/chat/completions`` calls once its answer has gone back.

Entry points, all cheap and unable to fail the request: :func:`after_json` returns a
background task for a JSON answer (Starlette runs it after the last byte is sent) and
:func:`after_stream` schedules the same work when the relay reports a stream's end. A stream's
shadow draw is made before it starts (:func:`stream_capture`): only a drawn stream keeps its
text for the judge, so the other streams pay nothing for it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from starlette.background import BackgroundTask

from app.live.loop import Answered
from app.live.shadow import answer_text
from app.query import query_policy, query_text
from app.streaming import AnswerCapture, StreamEnd
from app.upstream import UpstreamName, UpstreamReply, Usage

if TYPE_CHECKING:
    from app.deps import Services
    from app.policy import Decision
    from app.protocol import ChatCompletionRequest
    from app.request_context import RequestRecord

__all__ = ["after_json", "after_stream", "stream_capture"]

logger = logging.getLogger(__name__)


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
    sampled: bool | None = None,
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
        sampled=sampled,
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


def stream_capture(services: Services) -> AnswerCapture | None:
    """Draw a stream's shadow sample before it starts: a capture for its text when drawn."""
    shadow = services.live.shadow
    if not services.live.enabled or shadow is None or not shadow.wants():
        return None
    return AnswerCapture()


def after_stream(
    services: Services,
    body: ChatCompletionRequest,
    record: RequestRecord,
    decision: Decision,
    *,
    started: float,
    end: StreamEnd,
) -> None:
    """Record a stream's end; a drawn stream that ended whole has its answer graded too.

    An incomplete stream (client gone, upstream failed, no ``finish_reason``, text over the
    capture's limit) is recorded but its answer is never graded."""
    live = services.live
    if not live.enabled:
        return
    if end.capture is not None and end.capture.truncated:
        logger.info("request %s: streamed answer too long to grade", record.request_id)
    answered = _answered(
        services,
        body,
        record,
        decision,
        started=started,
        status=end.status,
        usage=end.usage,
        answer=end.answer,
        stream=True,
        sampled=end.capture is not None,  # drawn before the stream started
    )
    if answered is not None:
        live.spawn(answered, services.scorer.model)
