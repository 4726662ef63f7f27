"""The service's one error tree; every error a client sees is one of these, as OpenAI-style JSON.

    DarsError                     base: status 500, type "server_error" / internal_error
    ├── InvalidRequest            400 invalid_request_error: malformed body, bad field values
    │   └── PayloadTooLarge       413 invalid_request_error: body over DARS_MAX_BODY_BYTES
    ├── AuthenticationFailed      401 authentication_error: missing or wrong client/admin key
    ├── PermissionDenied          403 permission_error / admin_disabled: no admin token set
    ├── ModelNotFound             404 invalid_request_error / model_not_found
    ├── RateLimited               429 rate_limit_error: upstream said 429 and retries ran out
    ├── UpstreamError             502 upstream_error: upstream unreachable or failed
    │   └── UpstreamTimeout       504 upstream_error / timeout: upstream too slow
    └── RouterUnavailable         503 service_unavailable: router model or encoder not ready

Every error has a ``code`` (a class default unless the raiser names a more precise one). Foreign
errors (httpx, redis, onnxruntime) are mapped to these where they are raised, ``from exc``.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AuthenticationFailed",
    "DarsError",
    "InvalidRequest",
    "ModelNotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "RouterUnavailable",
    "UpstreamError",
    "UpstreamTimeout",
]


class DarsError(Exception):
    """Base of every error the service reports to a client."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code: str = code if code is not None else self.default_code

    def to_body(self) -> dict[str, Any]:
        """The OpenAI error body: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(DarsError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    default_code = "payload_too_large"


class AuthenticationFailed(DarsError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(DarsError):
    status_code = 403
    error_type = "permission_error"
    default_code = "admin_disabled"


class ModelNotFound(DarsError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class RateLimited(DarsError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(DarsError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    default_code = "timeout"


class RouterUnavailable(DarsError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "router_unavailable"
