"""Hot reload of the running service: ``POST /admin/router/reload`` with the admin token."""

from __future__ import annotations

from pathlib import Path

import httpx

__all__ = ["ReloadFailed", "reload_service"]


class ReloadFailed(RuntimeError):
    """The service refused the file or could not be reached; its old router keeps serving."""


def reload_service(url: str, token: str, path: Path, *, timeout_s: float = 60.0) -> None:
    """Ask the service at ``url`` to load ``path`` (a path the service can read)."""
    endpoint = url.rstrip("/") + "/admin/router/reload"
    try:
        response = httpx.post(
            endpoint,
            json={"path": str(path)},
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        raise ReloadFailed(f"{endpoint}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise ReloadFailed(f"{endpoint}: status {response.status_code}: {response.text[:500]}")
