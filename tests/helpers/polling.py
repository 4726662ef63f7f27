"""Waiting for what a background task does (a writer, a sampler), without timed assertions.

``until`` polls and returns the last value read once ``done`` holds or the deadline passes;
the caller asserts on that value, so a slow machine only waits longer and a broken feature
fails on the assertion, with the value it saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["until"]

T = TypeVar("T")


def until(
    read: Callable[[], T], done: Callable[[T], bool], timeout_s: float, *, every_s: float = 0.1
) -> T:
    """``read()`` every ``every_s`` until ``done`` of it, or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(every_s)
