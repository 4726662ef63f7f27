"""The confidence cascade's request-level rules: model names, what it declines, its sample budget.

Pure and synchronous (no I/O), so every rule is unit-tested without a server:

- :func:`parse_cascade_model`: ``router-cascade`` (the server's entropy threshold) and
  ``router-cascade-<t>`` (per request), and the bare ``router`` when the server's default mode
  is ``cascade``. The threshold is a *normalised* semantic entropy in [0, 1] (entropy / log k),
  so one number means the same for every k: 0 escalates on any disagreement, 1 never escalates.
- :func:`skip_reason`: requests the cascade declines (tools, JSON mode, ``n`` > 1); they are
  routed by the trained router instead, because k free-text samples cannot be grouped by
  meaning when the answer is a tool call or a JSON document, and ``n`` > 1 asks for k answers
  the client would then have to choose among itself.
- :class:`SampleBudget`: a token bucket capping edge samples per second; when it is empty the
  trained router decides, so a traffic spike cannot multiply the edge load by k.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from app.errors import InvalidRequest
from app.policy import ROUTER_MODEL, check_threshold

__all__ = [
    "CASCADE_MODEL",
    "CascadeSelection",
    "SampleBudget",
    "SkipReason",
    "normalised_entropy",
    "parse_cascade_model",
    "skip_reason",
]

CASCADE_MODEL = ROUTER_MODEL + "-cascade"
_PREFIX = CASCADE_MODEL + "-"
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # as router-<t>: plain decimals only

SkipReason = Literal["tools", "response_format", "n", "budget", "edge_failed"]


@dataclass(frozen=True)
class CascadeSelection:
    """A ``model`` field that asks for the cascade; ``threshold`` ``None`` = the server's."""

    model: str
    threshold: float | None = None


def parse_cascade_model(model: str, *, default_mode: str = "router") -> CascadeSelection | None:
    """The cascade selection of ``model``, or ``None`` when it names another routing mode.

    Raises ``InvalidRequest`` (code ``invalid_threshold``) for ``router-cascade-<t>`` whose
    ``t`` is not a plain decimal in [0, 1].
    """
    if model == CASCADE_MODEL or (model == ROUTER_MODEL and default_mode == "cascade"):
        return CascadeSelection(model=model)
    if not model.startswith(_PREFIX):
        return None
    text = model[len(_PREFIX) :]
    if _DECIMAL.fullmatch(text) is None or not 0.0 <= float(text) <= 1.0:
        raise InvalidRequest(
            f"entropy threshold must be a number in [0, 1], got {text!r} in model {model!r}; "
            f"use {CASCADE_MODEL}-<t>, e.g. {CASCADE_MODEL}-0.5",
            param="model",
            code="invalid_threshold",
        )
    return CascadeSelection(model=model, threshold=check_threshold(float(text)))


def _present(value: object) -> bool:
    return value is not None and value != [] and value != {}


def skip_reason(body: Mapping[str, Any]) -> SkipReason | None:
    """Why the cascade declines this request body (the client's fields), or ``None``.

    ``tools``: tools, functions, a tool choice, or a tool/function message in the conversation;
    ``response_format``: JSON mode or a JSON schema; ``n``: more than one choice asked for.
    """
    if any(_present(body.get(name)) for name in ("tools", "functions", "tool_choice")):
        return "tools"
    messages = body.get("messages") or []
    if any(isinstance(m, Mapping) and m.get("role") in ("tool", "function") for m in messages):
        return "tools"
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type", "text") != "text":
        return "response_format"
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return "n"
    return None


def normalised_entropy(entropy: float, k: int) -> float:
    """Semantic entropy (nats) of k samples divided by its maximum, log k: a value in [0, 1]."""
    if k < 2:
        raise ValueError(f"normalised entropy needs k >= 2 samples, got {k}")
    return min(1.0, max(0.0, entropy / math.log(k)))


class SampleBudget:
    """A token bucket of edge samples: ``rate`` per second, bursts up to ``burst``; thread-safe.

    ``rate`` ``None`` means no cap. ``take(k)`` takes k samples' worth or nothing.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be positive (or None for no cap), got {rate}")
        self.rate = rate
        self.burst = burst if burst is not None else (rate or 0.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._at = clock()

    def take(self, samples: int) -> bool:
        """Whether ``samples`` edge calls fit the budget now (and, if so, spend them)."""
        if self.rate is None:
            return True
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < samples:
                return False
            self._tokens -= samples
            return True
