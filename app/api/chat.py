"""``POST /v1/chat/completions``: score the query, pick edge or cloud, forward, relay.

The handler parses, calls the routing service and the upstreams, and renders; the decision
itself lives in :mod:`app.policy`. Response headers tell the client what happened:
``x-dars-route`` (the upstream that answered), ``x-dars-reason`` (``threshold``, ``forced`` or
``fallback`` when the other upstream had to answer), ``x-dars-score``, ``x-dars-threshold``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from fastapi import APIRouter, Response

from app.deps import ClientAuth, Services, ServicesDep
from app.errors import DarsError
from app.policy import Decision, decide, parse_model_field
from app.protocol import ChatCompletionRequest
from app.query import query_text
from app.streaming import SSEResponse, relay_sse
from app.upstream import UpstreamName

__all__ = ["Routed", "route_headers", "route_request", "router"]

router = APIRouter(dependencies=[ClientAuth], tags=["chat"])

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "Invalid request (OpenAI error body)"},
    401: {"description": "Missing or wrong API key"},
    404: {"description": "Unknown model"},
    413: {"description": "Body too large"},
    429: {"description": "Upstream rate limit"},
    502: {"description": "Upstream failed"},
    503: {"description": "Router not ready"},
    504: {"description": "Upstream timed out"},
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
    selection = parse_model_field(
        request.model, edge_model=settings.edge_model, cloud_model=settings.cloud_model
    )
    if selection.forced_route is not None:
        decision, cache_hit = Decision.forced(selection.forced_route), None
    else:
        text = query_text(request, max_chars=settings.query_max_chars)
        vector, cache_hit = await services.query_embedder.embed(text)
        score = await services.scorer.score(vector, query_length=len(text))
        threshold = selection.threshold
        decision = decide(score, services.threshold.get() if threshold is None else threshold)
        if record:
            services.threshold.record(score, decision.route)
        metrics.latency.labels(stage="decision").observe(time.perf_counter() - started)
    metrics.decisions.labels(route=decision.route, reason=decision.reason).inc()
    return Routed(decision, cache_hit)


def route_headers(decision: Decision) -> dict[str, str]:
    """The ``x-dars-*`` headers of a decision; score and threshold only when it was scored."""
    headers: dict[str, str] = {"x-dars-route": decision.route, "x-dars-reason": decision.reason}
    if decision.score is not None:
        headers["x-dars-score"] = f"{decision.score:.6f}"
    if decision.threshold is not None:
        headers["x-dars-threshold"] = f"{decision.threshold:.6f}"
    return headers


def _served(decision: Decision, upstream: UpstreamName, fell_back: bool) -> Decision:
    return replace(decision, route=upstream, reason="fallback") if fell_back else decision


@router.post("/v1/chat/completions", responses=ERROR_RESPONSES)
async def create_chat_completion(body: ChatCompletionRequest, services: ServicesDep) -> Response:
    """An OpenAI chat completion, answered by the edge or the cloud model."""
    requests = services.metrics.requests
    decision: Decision | None = None
    try:
        decision = (await route_request(body, services, record=True)).decision
        upstream_body = body.upstream_body(include_usage=True)
        if body.stream:
            stream = await services.upstreams.open_stream(decision.route, upstream_body)
            served = _served(decision, stream.upstream, stream.fell_back)

            def finish(status: str) -> None:
                requests.labels(route=served.route, reason=served.reason, status=status).inc()

            events = relay_sse(
                stream, services.upstreams, strip_usage=not body.wants_usage, on_finish=finish
            )
            headers = {**route_headers(served), "cache-control": "no-cache"}
            return SSEResponse(events, headers={**headers, "x-accel-buffering": "no"})
        reply = await services.upstreams.create(decision.route, upstream_body)
        served = _served(decision, reply.upstream, reply.fell_back)
        requests.labels(route=served.route, reason=served.reason, status="200").inc()
        return Response(reply.content, media_type="application/json", headers=route_headers(served))
    except DarsError as exc:
        route = decision.route if decision is not None else "none"
        reason = decision.reason if decision is not None else "none"
        requests.labels(route=route, reason=reason, status=str(exc.status_code)).inc()
        raise
