"""The live loop's client errors, in the service's error tree (``app.errors.DarsError``).

- ``RequestNotFound`` (404): feedback names a request id the store has never seen.
- ``LiveStoreDisabled`` (503): feedback while ``DARS_LIVE_STORE`` is unset.
- ``LiveStoreUnavailable`` (503): the store did not answer (Redis down, disk full).
"""

from __future__ import annotations

from app.errors import DarsError

__all__ = ["LiveStoreDisabled", "LiveStoreUnavailable", "RequestNotFound"]


class RequestNotFound(DarsError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "request_not_found"


class LiveStoreDisabled(DarsError):
    status_code = 503
    error_type = "server_error"
    default_code = "live_store_disabled"


class LiveStoreUnavailable(DarsError):
    status_code = 503
    error_type = "server_error"
    default_code = "live_store_unavailable"
