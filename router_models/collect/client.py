"""Async chat client for any OpenAI-compatible endpoint, built to survive long collection runs.

Label collection makes thousands of calls against rate-limited APIs and small local servers
that answer one request at a time, so every endpoint gets a concurrency limit, a request-rate
limit and retries with exponential backoff on the failures that are worth retrying (429, 5xx,
timeouts, dropped connections). Usage and cost come back with every answer.

Errors::

    CollectError                 base of everything raised by the collector
    ├── UpstreamRejected         the endpoint refused the request (4xx other than 408/429)
    └── RetriesExhausted         a retryable failure persisted through every attempt
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = [
    "RETRYABLE_STATUS",
    "ChatClient",
    "CollectError",
    "Completion",
    "Endpoint",
    "RateLimiter",
    "RetriesExhausted",
    "RetryPolicy",
    "UpstreamRejected",
    "Usage",
    "estimate_tokens",
]

# 408 request timeout, 409 (some gateways use it for transient conflicts), 429 rate limited,
# 5xx server side.
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class CollectError(Exception):
    """Base class of the collector's errors."""


class UpstreamRejected(CollectError):
    """The endpoint answered with a status that retrying will not fix."""

    def __init__(self, endpoint: str, status_code: int, body: str) -> None:
        super().__init__(f"{endpoint}: HTTP {status_code}: {body[:300]}")
        self.status_code = status_code


class RetriesExhausted(CollectError):
    """Every attempt failed with a retryable error; the last one is ``__cause__``."""


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """One model behind an OpenAI-compatible API.

    ``name`` is what observations are labelled with (the ``model`` field); ``model`` is what
    the API is asked for (defaults to ``name``). Prices are USD per million tokens;
    ``rate_limit`` is requests per second; ``max_attempts``/``backoff_s`` shape the retries.
    """

    name: str
    base_url: str
    model: str | None = None
    api_key_env: str | None = None
    price_in: float = 0.0
    price_out: float = 0.0
    max_concurrency: int = 4
    rate_limit: float | None = None
    timeout: float = 120.0
    max_attempts: int = 6
    backoff_s: float = 1.0

    @property
    def api_model(self) -> str:
        return self.model or self.name

    def api_key(self) -> str | None:
        """The key from the named environment variable, read when a client is built."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise CollectError(f"{self.name}: environment variable {self.api_key_env} is not set")
        return key

    def cost(self, usage: Usage) -> float:
        return (
            usage.prompt_tokens * self.price_in + usage.completion_tokens * self.price_out
        ) / 1e6


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
        if self.estimated:
            out["estimated"] = True
        return out


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage
    cost: float
    latency_s: float
    attempts: int
    finish_reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a ``Retry-After`` header wins when it is given."""

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


class RateLimiter:
    """At most ``rate`` request starts per second, spaced evenly (a leaky bucket)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.rate:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + 1.0 / self.rate
        if wait > 0:
            await asyncio.sleep(wait)


def estimate_tokens(text: str) -> int:
    """About four characters per token: only used when the server reports no usage."""
    return max(1, len(text) // 4)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


@dataclass
class ChatClient:
    """Chat completions against one endpoint; use as ``async with ChatClient(ep) as client``.

    ``transport`` is injectable for tests that want an in-process server.
    """

    endpoint: Endpoint
    retry: RetryPolicy | None = None
    transport: httpx.AsyncBaseTransport | None = None
    _http: httpx.AsyncClient | None = field(default=None, init=False, repr=False)
    _slots: asyncio.Semaphore | None = field(default=None, init=False, repr=False)
    _limiter: RateLimiter | None = field(default=None, init=False, repr=False)

    async def __aenter__(self) -> ChatClient:
        headers = {}
        key = self.endpoint.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.AsyncClient(
            base_url=self.endpoint.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(self.endpoint.timeout, connect=10.0),
            transport=self.transport,
        )
        self._slots = asyncio.Semaphore(self.endpoint.max_concurrency)
        self._limiter = RateLimiter(self.endpoint.rate_limit)
        if self.retry is None:
            self.retry = RetryPolicy(
                max_attempts=self.endpoint.max_attempts, base_delay=self.endpoint.backoff_s
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int | None = None,
    ) -> Completion:
        """One non-streamed chat completion, retried on transient failures."""
        http, slots, limiter, retry = self._http, self._slots, self._limiter, self.retry
        if http is None or slots is None or limiter is None or retry is None:
            raise CollectError("ChatClient used outside 'async with'")
        payload: dict[str, Any] = {
            "model": self.endpoint.api_model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "stream": False,
        }
        if seed is not None:
            payload["seed"] = seed
        async with slots:
            return await self._send_with_retries(http, limiter, retry, payload, messages)

    async def _send_with_retries(
        self,
        http: httpx.AsyncClient,
        limiter: RateLimiter,
        retry: RetryPolicy,
        payload: dict[str, Any],
        messages: list[dict[str, str]],
    ) -> Completion:
        last: Exception | None = None
        for attempt in range(1, retry.max_attempts + 1):
            await limiter.acquire()
            started = time.monotonic()
            retry_after: float | None = None
            try:
                response = await http.post("chat/completions", json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = exc
            else:
                if response.status_code == 200:
                    return self._parse(response, messages, time.monotonic() - started, attempt)
                if response.status_code not in RETRYABLE_STATUS:
                    raise UpstreamRejected(self.endpoint.name, response.status_code, response.text)
                last = CollectError(f"HTTP {response.status_code}: {response.text[:200]}")
                retry_after = _retry_after(response)
            if attempt < retry.max_attempts:
                await asyncio.sleep(retry.delay(attempt, retry_after))
        raise RetriesExhausted(
            f"{self.endpoint.name}: {retry.max_attempts} attempts failed: {last!r}"
        ) from last

    def _parse(
        self,
        response: httpx.Response,
        messages: list[dict[str, str]],
        latency: float,
        attempts: int,
    ) -> Completion:
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise UpstreamRejected(self.endpoint.name, response.status_code, response.text) from exc
        raw = body.get("usage") or {}
        if "prompt_tokens" in raw and "completion_tokens" in raw:
            usage = Usage(int(raw["prompt_tokens"]), int(raw["completion_tokens"]))
        else:
            prompt_chars = "".join(m.get("content", "") for m in messages)
            usage = Usage(estimate_tokens(prompt_chars), estimate_tokens(text), estimated=True)
        return Completion(
            text=text,
            usage=usage,
            cost=self.endpoint.cost(usage),
            latency_s=round(latency, 3),
            attempts=attempts,
            finish_reason=choice.get("finish_reason"),
        )
