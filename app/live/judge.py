"""Judges of shadow answers: an LLM with a rubric, or a user grader for checkable tasks.

- :class:`LlmJudge` asks any OpenAI-compatible chat API (by default the cloud upstream) to rate
  an answer on a 1-10 (or 0-1) scale; :func:`parse_grade` reads the rating robustly
  (``[[7]]``, ``Rating: 7``, ``7/10``, ``{"score": 0.7}``, a lone number) and maps it to [0, 1].
- :class:`CallableGrader` runs ``module:function`` (``DARS_SHADOW_GRADER``) as
  ``function(prompt, answer) -> float in [0, 1]`` (sync in a thread, or async).

A judge returns ``Verdict(score, cost_usd)``; ``score`` None means no grade could be read.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

__all__ = [
    "RUBRIC",
    "CallableGrader",
    "Judge",
    "LlmJudge",
    "Scale",
    "Verdict",
    "load_grader",
    "parse_grade",
]

Scale = Literal["0-1", "1-10"]

RUBRIC = (
    "You are a strict grader. Rate how well the RESPONSE answers the QUESTION: correctness "
    "first, then helpfulness and clarity. {scale_text} Reply with the rating only, in the "
    'form "Rating: [[N]]".\n\nQUESTION:\n{prompt}\n\nRESPONSE:\n{answer}'
)
_SCALE_TEXT: dict[Scale, str] = {
    "1-10": "Use a scale of 1 (wrong or useless) to 10 (correct and complete).",
    "0-1": "Use a scale of 0.0 (wrong or useless) to 1.0 (correct and complete).",
}
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_PATTERNS = (
    re.compile(r"\[\[\s*" + _NUMBER + r"\s*\]\]"),
    re.compile(r"(?:rating|score|grade)\s*[:=]?\s*\**\s*" + _NUMBER, re.IGNORECASE),
    re.compile(_NUMBER + r"\s*(?:/|out of)\s*(?:10|1(?:\.0)?)\b", re.IGNORECASE),
)


@dataclass(frozen=True)
class Verdict:
    """A grade in [0, 1] (None: unreadable) and what obtaining it cost in USD."""

    score: float | None
    cost_usd: float = 0.0


class Judge(Protocol):
    """Grades one answer to one prompt."""

    name: str

    async def grade(self, prompt: str, answer: str) -> Verdict: ...


def _normalise(value: float, scale: Scale) -> float | None:
    low, high = (0.0, 1.0) if scale == "0-1" else (1.0, 10.0)
    if scale == "1-10" and 0.0 <= value < 1.0 and value != int(value):
        return value  # a judge that answered on [0, 1] anyway
    if not low <= value <= high:
        return None
    return (value - low) / (high - low)


def _json_score(text: str) -> float | None:
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return None
    for key in ("score", "rating", "grade"):
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def parse_grade(text: str, scale: Scale = "1-10") -> float | None:
    """The judge's rating in ``text`` mapped to [0, 1]; None when there is none in range."""
    found = _json_score(text)
    if found is None:
        for pattern in _PATTERNS:
            match = pattern.search(text)
            if match is not None:
                found = float(match.group(1))
                break
    if found is None:
        numbers = re.findall(_NUMBER, text)
        if len(numbers) != 1:
            return None  # several bare numbers: which one is the rating is a guess
        found = float(numbers[0])
    return _normalise(found, scale)


class LlmJudge:
    """An LLM-as-judge behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        scale: Scale = "1-10",
        price_input_per_mtok: float = 0.0,
        price_output_per_mtok: float = 0.0,
        timeout_s: float = 60.0,
        max_tokens: int = 32,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = f"llm:{model}"
        self.model = model
        self.scale: Scale = scale
        self.prices = (price_input_per_mtok, price_output_per_mtok)
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=timeout_s,
            transport=transport,
        )

    def _cost(self, usage: Any) -> float:
        if not isinstance(usage, dict):
            return 0.0
        tokens_in = usage.get("prompt_tokens") or 0
        tokens_out = usage.get("completion_tokens") or 0
        return (tokens_in * self.prices[0] + tokens_out * self.prices[1]) / 1e6

    async def grade(self, prompt: str, answer: str) -> Verdict:
        """Ask for a rating at temperature 0; raises httpx errors (the sampler counts them)."""
        content = RUBRIC.format(scale_text=_SCALE_TEXT[self.scale], prompt=prompt, answer=answer)
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        response = await self._client.post("chat/completions", json=body)
        response.raise_for_status()
        payload = response.json()
        cost = self._cost(payload.get("usage"))
        try:
            text = payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return Verdict(None, cost)
        return Verdict(parse_grade(str(text), self.scale), cost)

    async def aclose(self) -> None:
        await self._client.aclose()


GraderFn = Callable[[str, str], Any]


def load_grader(spec: str) -> GraderFn:
    """Import ``module:function``; ValueError naming the setting when it is not callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"DARS_SHADOW_GRADER must be module:function, got {spec!r}")
    function = getattr(importlib.import_module(module_name), attr, None)
    if not callable(function):
        raise ValueError(f"DARS_SHADOW_GRADER {spec!r} is not a callable")
    return function  # type: ignore[no-any-return]


class CallableGrader:
    """A user function ``(prompt, answer) -> float in [0, 1]``; out of range = no grade."""

    def __init__(self, spec: str) -> None:
        self.name = f"grader:{spec}"
        self._function = load_grader(spec)

    async def grade(self, prompt: str, answer: str) -> Verdict:
        if inspect.iscoroutinefunction(self._function):
            value = await self._function(prompt, answer)
        else:
            value = await asyncio.to_thread(self._function, prompt, answer)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return Verdict(None)
        score = float(value)
        return Verdict(score if 0.0 <= score <= 1.0 else None)
