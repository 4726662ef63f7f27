"""Per-request context: the request id, the headers every response carries, the request count.

``RequestContext`` is the outermost middleware, so it sees every response the API sends, the
ones rejected before any handler (malformed JSON, schema errors, 413) and unexpected failures
included. For each request it

- takes the client's ``x-request-id`` when it is sane (``REQUEST_ID``), else generates one, and
  puts it on the response, in ``current_request_id`` (log records carry it) and in the access log;
- adds the route headers of a routing decision to error responses that lack them, so a client
  learns where a failed request was going;
- counts ``POST /v1/chat/completions`` once in ``dars_requests_total`` with its final status;
- turns an unexpected exception into a 500 OpenAI error before any byte was sent.

Handlers report what they know through :class:`RequestRecord` (``request_record(request)``).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import DarsError

if TYPE_CHECKING:
    from app.metrics import Metrics

__all__ = [
    "CHAT_PATH",
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "RequestContext",
    "RequestRecord",
    "current_request_id",
    "error_response",
    "request_record",
]

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# Echoed ids: printable ASCII tokens only, so a client cannot inject headers or log lines.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
CHAT_PATH = "/v1/chat/completions"
_STATE_KEY = "dars_record"

current_request_id: ContextVar[str | None] = ContextVar("dars_request_id", default=None)


@dataclass
class RequestRecord:
    """What a handler learned about its request, read by the middleware once it is answered.

    ``route``/``reason`` label ``dars_requests_total`` (``none`` before a decision);
    ``headers`` are the decision's ``x-dars-*`` headers; ``outcome`` overrides the HTTP status
    for a stream whose result is only known at its end (``499``, a mid-stream error).
    """

    request_id: str
    route: str = "none"
    reason: str = "none"
    headers: dict[str, str] = field(default_factory=dict)
    outcome: str | None = None


def request_record(request: Request) -> RequestRecord:
    """The request's record (one is made when the middleware did not run, e.g. in unit tests)."""
    state: dict[str, Any] = request.scope.setdefault("state", {})
    record = state.get(_STATE_KEY)
    if not isinstance(record, RequestRecord):
        record = RequestRecord(request_id=_request_id(request.scope))
        state[_STATE_KEY] = record
    return record


def error_response(error: DarsError, status_code: int | None = None) -> JSONResponse:
    """``error`` as its OpenAI JSON body and status."""
    return JSONResponse(error.to_body(), status_code=status_code or error.status_code)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode("latin-1"):
            text = bytes(value).decode("latin-1")
            if REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class RequestContext:
    """ASGI middleware: request id, headers on every response, request count, last-resort 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(request_id=_request_id(scope))
        scope.setdefault("state", {})[_STATE_KEY] = record
        token = current_request_id.set(record.request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = record.request_id
                if "x-dars-route" not in headers:
                    for name, value in record.headers.items():
                        headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            logger.error(
                "request %s: unhandled error on %s %s",
                record.request_id,
                scope["method"],
                scope["path"],
                exc_info=exc,
            )
            if response_started:
                raise
            await error_response(DarsError("Internal server error."))(
                scope, receive, send_with_headers
            )
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            final = record.outcome or str(status)
            _count(scope, record, final)
            logger.info(
                "request %s: %s %s -> %s in %.1f ms",
                record.request_id,
                scope["method"],
                scope["path"],
                final,
                elapsed_ms,
            )
            current_request_id.reset(token)


def _count(scope: Scope, record: RequestRecord, status: str) -> None:
    """``dars_requests_total`` for chat completions, once per request whatever the outcome."""
    if scope["method"] != "POST" or scope["path"] != CHAT_PATH:
        return
    services = getattr(scope["app"].state, "services", None) if "app" in scope else None
    metrics: Metrics | None = getattr(services, "metrics", None)
    if metrics is not None:
        metrics.requests.labels(route=record.route, reason=record.reason, status=status).inc()
