"""Exception handlers: every error becomes an OpenAI error body with a status, a type and a code.

Request validation (FastAPI's 422) is answered 400 ``invalid_request_error`` with a message that
names the field, and a code: ``invalid_json``, ``missing_body``, ``invalid_content_type``,
``missing_field``, ``unknown_field``, ``invalid_value``, or the schema's own code
(``invalid_threshold``, ``invalid_cloud_share``). Unknown routes are 404 ``not_found``.
Unexpected exceptions are turned into 500s by ``app.request_context.RequestContext``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import DarsError, InvalidRequest
from app.request_context import error_response

__all__ = ["OWN_VALIDATION_CODES", "install_handlers", "validation_error"]

# Codes raised by the schemas themselves (PydanticCustomError), passed through as they are.
OWN_VALIDATION_CODES = frozenset(
    {"invalid_threshold", "invalid_cloud_share", "invalid_calibration_target"}
)
_PYDANTIC_CODES = {"missing": "missing_field", "extra_forbidden": "unknown_field"}


def _required_fields(request: Request) -> list[str]:
    """The required top-level fields of the route's body model, to name them in a message."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body_field, "field_info", None), "annotation", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [name for name, field in model.model_fields.items() if field.is_required()]


def validation_error(exc: RequestValidationError, request: Request) -> InvalidRequest:
    """The first validation error as an ``InvalidRequest`` naming the field and with a code."""
    errors = exc.errors()
    if not errors:
        return InvalidRequest("Invalid request body.", code="invalid_value")
    first: dict[str, Any] = dict(errors[0])
    kind = str(first.get("type", ""))
    loc = tuple(first.get("loc", ()))
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "invalid JSON")
        return InvalidRequest(f"Malformed JSON body: {detail}.", code="invalid_json")
    if loc == ("body",) and kind == "missing":
        fields = _required_fields(request)
        wanted = f" with {', '.join(repr(name) for name in fields)}" if fields else ""
        param = fields[0] if len(fields) == 1 else None
        message = f"The request body is missing: send a JSON object{wanted}."
        return InvalidRequest(message, param=param, code="missing_body")
    if loc == ("body",) and "json" not in request.headers.get("content-type", ""):
        message = "The body must be JSON sent as 'Content-Type: application/json'."
        return InvalidRequest(message, code="invalid_content_type")
    param = ".".join(str(part) for part in loc if part != "body") or None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if kind == "missing" and param is not None:
        message = f"Missing required field '{param}'{more}."
    else:
        where = f" at '{param}'" if param else ""
        message = f"Invalid request body{where}: {first.get('msg', 'invalid')}{more}."
    code = kind if kind in OWN_VALIDATION_CODES else _PYDANTIC_CODES.get(kind, "invalid_value")
    return InvalidRequest(message, param=param, code=code)


async def _dars_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, DarsError):  # pragma: no cover - registered for DarsError only
        raise exc
    return error_response(exc)


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover
        raise exc
    return error_response(validation_error(exc, request))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
        raise exc
    if exc.status_code == 404:
        message = f"Unknown URL: {request.method} {request.url.path}"
        error: DarsError = InvalidRequest(message, code="not_found")
    elif exc.status_code < 500:
        error = InvalidRequest(str(exc.detail), code=f"http_{exc.status_code}")
    else:
        error = DarsError(str(exc.detail))
    response = error_response(error, exc.status_code)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def install_handlers(app: FastAPI) -> None:
    """Register the handlers that render the service's errors."""
    app.add_exception_handler(DarsError, _dars_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
