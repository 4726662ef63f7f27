"""The shadow sampler's caps: USD per UTC day and upstream calls per minute.

:class:`ShadowCaps` is what the sampler asks of them; :class:`ShadowBudget` keeps them in this
process (per replica), :mod:`app.live.shared_budget` in Redis for all replicas together.

Spend is known only after a call (its usage), so the USD cap is checked before each call and
charged after it: a day overshoots by at most one call. The per-minute cap is a sliding
60-second window of call start times; ``wait`` says how long until the next call may start.
The clock is injected, so tests step time instead of sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

__all__ = ["ShadowBudget", "ShadowCaps"]

_DAY_S = 86_400.0
_MINUTE_S = 60.0


class ShadowCaps(Protocol):
    """The sampler's view of its caps; ``reserve`` is async because shared caps live in Redis."""

    usd_per_day: float
    scope: str  # "replica": this process's own cap; "shared": one cap for every replica

    def can_spend(self) -> bool:
        """Whether today's cap looked unspent when last seen (no I/O: a quick filter)."""
        ...

    async def reserve(self) -> float | None:
        """Take a call slot: 0 = taken, > 0 = seconds to wait before asking again, None = no
        call may start (the day's USD spent, calls off, or the shared caps unreachable)."""
        ...

    def charge(self, usd: float) -> None:
        """Charge a finished call's cost to today (no I/O here; shared caps write it later)."""
        ...

    async def aclose(self) -> None: ...


class ShadowBudget:
    """``usd_per_day`` (0 = nothing may be spent) and ``calls_per_minute`` (0 = no calls)."""

    scope = "replica"

    def __init__(
        self,
        usd_per_day: float,
        calls_per_minute: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.usd_per_day = usd_per_day
        self.calls_per_minute = calls_per_minute
        self._clock = clock
        self._day = self._today()
        self._spent = 0.0
        self._calls: deque[float] = deque()

    def _today(self) -> int:
        return int(self._clock() // _DAY_S)

    def spent_today(self) -> float:
        """USD charged since UTC midnight."""
        if self._today() != self._day:
            self._day, self._spent = self._today(), 0.0
        return self._spent

    def can_spend(self) -> bool:
        """Whether today's spend is still under the cap."""
        return self.spent_today() < self.usd_per_day

    def charge(self, usd: float) -> None:
        self.spent_today()  # roll the day first
        self._spent += max(usd, 0.0)

    def wait(self) -> float | None:
        """Seconds until a call may start (0 = now); None when calls are off altogether."""
        if self.calls_per_minute <= 0:
            return None
        now = self._clock()
        while self._calls and self._calls[0] <= now - _MINUTE_S:
            self._calls.popleft()
        if len(self._calls) < self.calls_per_minute:
            return 0.0
        return self._calls[0] + _MINUTE_S - now

    def start_call(self) -> None:
        """Count a call that starts now against the per-minute window."""
        self._calls.append(self._clock())

    async def reserve(self) -> float | None:
        """:meth:`ShadowCaps.reserve` on this process's own caps."""
        if not self.can_spend():
            return None
        wait = self.wait()
        if wait == 0.0:
            self.start_call()
        return wait

    async def aclose(self) -> None:
        return None
