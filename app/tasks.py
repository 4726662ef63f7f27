"""Stopping the service's background tasks: cancel, then wait until each has really ended.

Why wait: a task that is only cancelled may still be running its ``finally`` (a flush, a
close) when the lifespan goes on to close what it uses. Its ``CancelledError`` is the expected
outcome and is swallowed; any other error it ends with still propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel every task given (``None``: none started), then await each one's end."""
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    for task in started:
        with contextlib.suppress(asyncio.CancelledError):
            await task
