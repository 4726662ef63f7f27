"""``POST /v1/chat/completions``: score the query, pick edge or cloud, forward, relay.

The handler parses, calls the routing service and the upstreams, and renders; the decision
itself lives in :mod:`app.policy`. Response headers tell the client what happened:
``x-dars-route`` (the upstream that answered), ``x-dars-reason`` (``threshold``, ``forced`` or
``fallback`` when the other upstream had to answer), ``x-dars-score``, ``x-dars-threshold``.
With a ``router-cascade`` model the confidence cascade decides (``app.cascade``): the kept
edge answer is rendered here, an escalation is forwarded like any cloud request, and the
``x-dars-mode``/``-k``/``-entropy``/``-decision`` headers say what happened.
The request's ``RequestRecord`` learns the decision, so error responses carry the route headers
too and ``dars_requests_total`` is counted once, by the middleware, with the final status.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import JSONResponse

from app.cascade import CascadeOutcome
from app.cascade_render import completion, completion_events
from app.deps import ClientAuth, Services, ServicesDep
from app.live.hook import after_json, after_stream, stream_capture
from app.openapi import error_responses
from app.policy import Decision, parse_model_field
from app.protocol import CHAT_EXAMPLES, ChatCompletionRequest
from app.query import query_policy, query_text
from app.request_context import RequestRecord, request_record
from app.routing import decide_scored
from app.streaming import SSEResponse, StreamEnd, relay_sse
from app.upstream import UpstreamName

__all__ = [
    "ROUTE_ERRORS",
    "ChatBody",
    "Routed",
    "forward",
    "route_headers",
    "route_request",
    "router",
]

router = APIRouter(dependencies=[ClientAuth], tags=["chat"])

# The documented examples are real requests: a fuzzer starting from them reaches the chat path.
ChatBody = Annotated[ChatCompletionRequest, Body(openapi_examples=CHAT_EXAMPLES)]
ROUTE_ERRORS = error_responses(400, 401, 404, 413, 503)
_ROUTE_HEADERS: dict[str, Any] = {
    name: {"description": description, "schema": {"type": "string"}}
    for name, description in {
        "x-dars-route": "the upstream that answered: edge or cloud, or its configured name",
        "x-dars-model": "the model of the upstream that answered",
        "x-dars-reason": "threshold, utility (K-model router), forced, or fallback (another "
        "upstream answered)",
        "x-dars-score": "router score (two-model routers); absent for forced models",
        "x-dars-threshold": "threshold, or trade-off knob of a K-model router, used; absent "
        "for forced models",
        "x-dars-quality": "K-model router: predicted quality of the chosen model",
        "x-dars-runner-up": "K-model router: the upstream with the next best utility",
        "x-dars-mode": "cascade when the confidence cascade handled the request",
        "x-dars-k": "cascade: answers sampled, every sampled rung together (0 when none were)",
        "x-dars-entropy": "cascade: normalised semantic entropy of the deciding rung's samples, "
        "in [0, 1]",
        "x-dars-entropy-threshold": "cascade: entropy threshold used",
        "x-dars-decision": "cascade: keep (a sampled rung's answer) or escalate (the top rung "
        "answers)",
        "x-dars-rung": "cascade: the rung of its ladder (configured upstreams, cheapest first) "
        "chosen to answer",
        "x-dars-meaning": "cascade: how answers were grouped (number, choice, embedding, text)",
        "x-dars-clusters": "cascade: distinct meanings among the samples",
        "x-dars-cascade-skipped": "cascade: why the router decided instead (tools, "
        "response_format, n, budget) or a rung failed and the next answered (edge_failed)",
        "x-dars-edge-tokens": "cascade: tokens of all samples together, every sampled rung",
    }.items()
}
_SSE_EVENT: dict[str, Any] = {  # one event of the stream
    "type": "object",
    "properties": {
        "data": {
            "type": "string",
            "description": "A chat.completion.chunk as JSON, an OpenAI error body as JSON after "
            "a mid-stream failure, or [DONE] at the end.",
        }
    },
    "required": ["data"],
}
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A chat completion (JSON), or chunks as server-sent events with stream=true",
        "content": {"text/event-stream": {"schema": _SSE_EVENT}},
        "headers": _ROUTE_HEADERS,
    },
    **ROUTE_ERRORS,
    **error_responses(429, 502, 504),
}


@dataclass(frozen=True)
class Routed:
    """A routing decision and whether the query's embedding came from the cache."""

    decision: Decision
    cache_hit: bool | None


async def route_request(
    request: ChatCompletionRequest, services: Services, *, record: bool
) -> Routed:
    """Decide edge or cloud for ``request``; ``record`` adds the score to the live window.

    Raises ``InvalidRequest``/``ModelNotFound`` for a bad ``model`` or a query without text,
    ``RouterUnavailable`` when the encoder or router cannot score.
    """
    settings, metrics = services.settings, services.metrics
    started = time.perf_counter()
    selection = parse_model_field(request.model, upstream_models=services.upstreams.by_model)
    if selection.forced_route is not None:
        decision, cache_hit = Decision.forced(selection.forced_route), None
    else:
        text = query_text(request, query_policy(settings, services.scorer.model.metadata))
        vector, cache_hit = await services.query_embedder.embed(text)
        decision = await decide_scored(
            services, selection.threshold, vector, len(text), record=record
        )
        metrics.latency.labels(stage="decision").observe(time.perf_counter() - started)
    metrics.decisions.labels(route=decision.route, reason=decision.reason).inc()
    return Routed(decision, cache_hit)


def route_headers(decision: Decision, model: str | None = None) -> dict[str, str]:
    """The ``x-dars-*`` headers of a decision; score and threshold only when it was scored;
    ``model``: the upstream model (``x-dars-model``); quality and runner-up for utility."""
    headers: dict[str, str] = {"x-dars-route": decision.route, "x-dars-reason": decision.reason}
    if model is not None:
        headers["x-dars-model"] = model
    if decision.score is not None:
        headers["x-dars-score"] = f"{decision.score:.6f}"
    if decision.threshold is not None:
        headers["x-dars-threshold"] = f"{decision.threshold:.6f}"
    if decision.quality is not None:
        headers["x-dars-quality"] = f"{decision.quality:.6f}"
    if decision.runner_up is not None:
        headers["x-dars-runner-up"] = decision.runner_up
    return headers


def _served(decision: Decision, upstream: UpstreamName, fell_back: bool) -> Decision:
    """The decision as served; after a failover the prediction was another model's."""
    if not fell_back:
        return decision
    return replace(decision, route=upstream, reason="fallback", quality=None, runner_up=None)


def _note(
    record: RequestRecord, decision: Decision, extra: dict[str, str], model: str | None = None
) -> dict[str, str]:
    """Tell the request's record where the request went (metric labels, error headers)."""
    record.route, record.reason = decision.route, decision.reason
    record.headers = {**route_headers(decision, model), **extra}
    return record.headers


@router.post("/v1/chat/completions", responses=CHAT_RESPONSES)
async def create_chat_completion(
    body: ChatBody, services: ServicesDep, request: Request
) -> Response:
    """An OpenAI chat completion, answered by the edge or the cloud model."""
    record = request_record(request)
    selection = services.cascade.selection(body.model)
    if selection is None:
        decision = (await route_request(body, services, record=True)).decision
        return await forward(body, services, record, decision)
    outcome = await services.cascade.run(body, selection)
    if outcome.kept is None:
        return await forward(body, services, record, outcome.decision, outcome.headers())
    return _kept(body, record, outcome)


def _kept(body: ChatCompletionRequest, record: RequestRecord, outcome: CascadeOutcome) -> Response:
    """The cascade's kept edge answer, as JSON or replayed as SSE."""
    headers = _note(record, outcome.decision, outcome.headers())
    if outcome.kept is None or outcome.usage is None:
        raise ValueError("a kept outcome carries its answer and usage")
    if body.stream:
        events = completion_events(outcome.kept, outcome.usage, include_usage=body.wants_usage)
        stream_headers = {**headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return SSEResponse(events, headers=stream_headers)
    return JSONResponse(completion(outcome.kept, outcome.usage), headers=headers)


async def forward(
    body: ChatCompletionRequest,
    services: Services,
    record: RequestRecord,
    decision: Decision,
    extra: dict[str, str] | None = None,
) -> Response:
    """Send the request to ``decision.route`` (retries, failover) and relay its answer;
    ``extra`` headers join the route headers."""
    extra = extra or {}
    started = time.perf_counter()
    upstreams = services.upstreams
    _note(record, decision, extra, upstreams[decision.route].model)
    upstream_body = body.upstream_body(include_usage=True)
    forced = decision.reason == "forced"
    if body.stream:
        stream = await services.upstreams.open_stream(decision.route, upstream_body, forced=forced)
        served = _served(decision, stream.upstream, stream.fell_back)
        headers = _note(record, served, extra, upstreams[served.route].model)
        capture = stream_capture(services)  # drawn before the first byte, kept only if drawn

        def finish(end: StreamEnd) -> None:
            record.outcome = end.status
            after_stream(services, body, record, served, started=started, end=end)

        events = relay_sse(
            stream,
            services.upstreams,
            strip_usage=not body.wants_usage,
            on_finish=finish,
            capture=capture,
        )
        headers = {**headers, "cache-control": "no-cache"}
        return SSEResponse(events, headers={**headers, "x-accel-buffering": "no"})
    reply = await services.upstreams.create(decision.route, upstream_body, forced=forced)
    served = _served(decision, reply.upstream, reply.fell_back)
    headers = _note(record, served, extra, upstreams[served.route].model)
    live = after_json(services, body, record, served, reply, started=started)
    return Response(reply.content, media_type="application/json", headers=headers, background=live)
