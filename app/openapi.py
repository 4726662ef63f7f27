"""The OpenAPI document, made to match what the service really answers.

FastAPI documents request validation errors as 422 with its own body; this service answers them
400 with an OpenAI error body (``app.handlers``). Routes declare their error statuses with
``error_responses(...)``; :class:`DarsAPI` drops the 422 entries and their schemas and adds the
``x-request-id`` header that every response carries (``app.request_context``). The document is
checked against the running service by schemathesis (``tests/integration/test_openapi_fuzz.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.protocol import ErrorResponse

__all__ = ["ERROR_DESCRIPTIONS", "DarsAPI", "error_responses"]

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: malformed JSON, a schema error or a bad value",
    401: "Missing or wrong API key (DARS_API_KEYS) or admin token",
    403: "Admin API disabled: DARS_ADMIN_TOKEN is not set",
    404: "Unknown model",
    413: "Body larger than DARS_MAX_BODY_BYTES",
    429: "The upstream kept rate limiting after retries and failover",
    502: "Every upstream tried failed; the message names each one and why",
    503: "The router model or the encoder is not ready",
    504: "The upstream timed out",
}

_REQUEST_ID_HEADER: dict[str, Any] = {
    "description": "The client's x-request-id when it sent a sane one, else a generated id; "
    "also in the service's log lines for the request.",
    "required": True,
    "schema": {"type": "string"},
}
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries: each status with the OpenAI error body and what it means."""
    return {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


class DarsAPI(FastAPI):
    """FastAPI whose OpenAPI document says 400 for validation errors and shows every header."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            for path_item in schema.get("paths", {}).values():
                for operation in path_item.values():
                    responses: dict[str, Any] = operation.get("responses", {})
                    responses.pop("422", None)
                    for response in responses.values():
                        headers = response.setdefault("headers", {})
                        headers["x-request-id"] = _REQUEST_ID_HEADER
            schemas = schema.get("components", {}).get("schemas", {})
            for name in _VALIDATION_SCHEMAS:
                schemas.pop(name, None)
            self.openapi_schema = schema
        return self.openapi_schema
