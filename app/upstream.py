"""The two upstream LLM servers (edge and cloud): pooled clients, retries, failover, cost.

One ``httpx.AsyncClient`` per upstream keeps connections alive across requests. The client's own
``Authorization`` header is never forwarded (each upstream gets its configured key) and the
upstream's key never reaches a response. Failures are retried with exponential backoff while no
byte has reached the client (connect errors, 429, 5xx; a read timeout is not retried: it already
cost the full timeout), then the request may fail over to the other upstream. httpx errors are
mapped to the service's error tree here, ``from exc``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx

from app.errors import (
    DarsError,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from app.metrics import Metrics
from app.settings import Settings, UpstreamSettings

__all__ = [
    "UPSTREAM_NAMES",
    "UpstreamClient",
    "UpstreamFailure",
    "UpstreamName",
    "UpstreamReply",
    "UpstreamStream",
    "Upstreams",
    "Usage",
    "classify_error",
]

logger = logging.getLogger(__name__)

UpstreamName = Literal["edge", "cloud"]
UPSTREAM_NAMES: tuple[UpstreamName, UpstreamName] = ("edge", "cloud")
CHAT_PATH = "chat/completions"
_MAX_UPSTREAM_MESSAGE = 500

T = TypeVar("T")


@dataclass(frozen=True)
class Usage:
    """Token counts an upstream reported for one response."""

    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def from_payload(cls, usage: object) -> Usage | None:
        """Parse an OpenAI ``usage`` object; ``None`` when absent or malformed."""
        if not isinstance(usage, Mapping):
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        return cls(prompt_tokens=max(prompt, 0), completion_tokens=max(completion, 0))


@dataclass(frozen=True)
class UpstreamFailure:
    """A classified upstream failure: the error for the client, a metric label, what to do."""

    error: DarsError
    kind: str
    retryable: bool

    @property
    def failover(self) -> bool:
        """Unreachable, slow, overloaded or broken upstreams fail over; a rejected body does not."""
        return isinstance(self.error, UpstreamError | RateLimited)


class _StatusError(Exception):
    """An upstream answered with an error status (internal; classified by ``classify_error``)."""

    def __init__(self, status_code: int, body: bytes) -> None:
        super().__init__(f"upstream status {status_code}")
        self.status_code = status_code
        self.body = body


def _upstream_message(body: bytes) -> str | None:
    """The ``error.message`` of an upstream error body, shortened; ``None`` if there is none."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message[:_MAX_UPSTREAM_MESSAGE] if isinstance(message, str) else None


def _classify_status(name: str, exc: _StatusError) -> UpstreamFailure:
    status = exc.status_code
    if status == 429:
        error: DarsError = RateLimited(f"The {name} upstream is rate limiting requests.")
        return UpstreamFailure(error, "status_429", retryable=True)
    if status >= 500:
        error = UpstreamError(f"The {name} upstream failed with status {status}.")
        return UpstreamFailure(error, "status_5xx", retryable=True)
    if status in (401, 403, 404):
        # The service's key or model name is wrong: a configuration error, not the client's.
        # The upstream's message is not relayed: it may quote the (partial) key.
        error = UpstreamError(f"The {name} upstream rejected the service (status {status}).")
        return UpstreamFailure(error, "status_4xx", retryable=False)
    if status == 413:
        error = PayloadTooLarge(f"The {name} upstream refused the request as too large.")
        return UpstreamFailure(error, "status_4xx", retryable=False)
    detail = _upstream_message(exc.body) or f"status {status}"
    error = InvalidRequest(f"The {name} upstream rejected the request: {detail}")
    return UpstreamFailure(error, "status_4xx", retryable=False)


def classify_error(name: str, exc: Exception) -> UpstreamFailure:
    """Map an httpx or status error of upstream ``name`` to the error tree, most specific first."""
    if isinstance(exc, _StatusError):
        return _classify_status(name, exc)
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        error: DarsError = UpstreamError(f"The {name} upstream is unreachable.")
        return UpstreamFailure(error, "connect", retryable=True)
    if isinstance(exc, httpx.PoolTimeout):
        error = UpstreamTimeout(f"No free connection to the {name} upstream in time.")
        return UpstreamFailure(error, "pool_timeout", retryable=False)
    if isinstance(exc, httpx.TimeoutException):
        error = UpstreamTimeout(f"The {name} upstream timed out.")
        return UpstreamFailure(error, "timeout", retryable=False)
    if isinstance(exc, httpx.HTTPError):
        error = UpstreamError(f"The connection to the {name} upstream failed.")
        return UpstreamFailure(error, "protocol", retryable=False)
    if isinstance(exc, ValueError):
        error = UpstreamError(f"The {name} upstream sent an invalid response.")
        return UpstreamFailure(error, "invalid_response", retryable=False)
    raise TypeError(f"not an upstream error: {exc!r}") from exc


@dataclass(frozen=True)
class UpstreamReply:
    """A complete (non-streamed) answer: the body as received, parsed once for its usage."""

    upstream: UpstreamName
    content: bytes
    payload: dict[str, Any]
    fell_back: bool

    @property
    def usage(self) -> Usage | None:
        return Usage.from_payload(self.payload.get("usage"))


@dataclass(frozen=True)
class UpstreamStream:
    """An open SSE response whose status was OK; the relay reads and closes it."""

    upstream: UpstreamName
    response: httpx.Response
    fell_back: bool
    opened_at: float


class UpstreamClient:
    """One upstream: its pooled client, key, model name and prices."""

    def __init__(
        self,
        name: UpstreamName,
        config: UpstreamSettings,
        *,
        retries: int = 2,
        backoff_s: float = 0.2,
        metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.retries = retries
        self.backoff_s = backoff_s
        self.metrics = metrics
        headers = {"Accept": "application/json"}
        if config.api_key is not None:
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
            ),
            transport=transport,
        )

    @property
    def model(self) -> str:
        return self.config.model

    def cost_usd(self, usage: Usage) -> float:
        """What ``usage`` costs at this upstream's prices (USD per million tokens)."""
        return (
            usage.prompt_tokens * self.config.price_input_per_mtok
            + usage.completion_tokens * self.config.price_output_per_mtok
        ) / 1e6

    def _request(self, body: Mapping[str, Any]) -> httpx.Request:
        return self._client.build_request("POST", CHAT_PATH, json={**body, "model": self.model})

    async def create_once(self, body: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """One non-streamed call: the raw body and its parsed JSON; raises httpx/status errors."""
        started = time.perf_counter()
        response = await self._client.send(self._request(body), stream=True)
        try:
            if response.status_code < 400:
                self.observe_ttfb(started)
            content = await response.aread()
        finally:
            await response.aclose()
        if response.status_code >= 400:
            raise _StatusError(response.status_code, content)
        payload = json.loads(content)
        if not isinstance(payload, dict):
            raise ValueError("upstream response is not a JSON object")
        return content, payload

    def observe_ttfb(self, started: float) -> None:
        """Time from sending a successful request to its headers (JSON) or first event (SSE)."""
        if self.metrics is not None:
            elapsed = time.perf_counter() - started
            self.metrics.latency.labels(stage="upstream_ttfb").observe(elapsed)

    async def open_stream_once(self, body: Mapping[str, Any]) -> httpx.Response:
        """Send a streamed call and return once the status is known OK; the caller closes it."""
        response = await self._client.send(self._request(body), stream=True)
        if response.status_code >= 400:
            try:
                content = await response.aread()
            finally:
                await response.aclose()
            raise _StatusError(response.status_code, content)
        return response

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` with retries and backoff; raise the mapped error ``from`` the last."""
        retry = 0
        while True:
            try:
                return await attempt()
            except (httpx.HTTPError, _StatusError, ValueError) as exc:
                failure = classify_error(self.name, exc)
                if self.metrics is not None:
                    self.metrics.upstream_errors.labels(upstream=self.name, kind=failure.kind).inc()
                if not failure.retryable or retry >= self.retries:
                    raise failure.error from exc
            logger.warning("%s upstream: %s; retry %d", self.name, failure.kind, retry + 1)
            if self.metrics is not None:
                self.metrics.retries.labels(upstream=self.name).inc()
            await asyncio.sleep(self.backoff_s * 2**retry)
            retry += 1

    async def aclose(self) -> None:
        await self._client.aclose()


class Upstreams:
    """The edge and cloud upstreams and the failover policy between them."""

    def __init__(
        self,
        edge: UpstreamClient,
        cloud: UpstreamClient,
        *,
        failover_edge_to_cloud: bool = True,
        failover_cloud_to_edge: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.clients: dict[UpstreamName, UpstreamClient] = {"edge": edge, "cloud": cloud}
        self.failover_to: dict[UpstreamName, UpstreamName | None] = {
            "edge": "cloud" if failover_edge_to_cloud else None,
            "cloud": "edge" if failover_cloud_to_edge else None,
        }
        self.metrics = metrics

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Upstreams:
        def client(name: UpstreamName) -> UpstreamClient:
            return UpstreamClient(
                name,
                settings.upstream(name),
                retries=settings.upstream_retries,
                backoff_s=settings.upstream_backoff_s,
                metrics=metrics,
                transport=transport,
            )

        return cls(
            client("edge"),
            client("cloud"),
            failover_edge_to_cloud=settings.failover_edge_to_cloud,
            failover_cloud_to_edge=settings.failover_cloud_to_edge,
            metrics=metrics,
        )

    def __getitem__(self, name: UpstreamName) -> UpstreamClient:
        return self.clients[name]

    async def _with_failover(
        self, route: UpstreamName, attempt: Callable[[UpstreamClient], Awaitable[T]]
    ) -> tuple[UpstreamName, T]:
        client = self.clients[route]
        try:
            return route, await client.call(lambda: attempt(client))
        except (UpstreamError, RateLimited) as exc:
            other = self.failover_to[route]
            if other is None:
                raise
            logger.warning("%s upstream failed (%s); failing over to %s", route, exc, other)
            if self.metrics is not None:
                self.metrics.fallbacks.labels(from_upstream=route, to_upstream=other).inc()
            fallback = self.clients[other]
            return other, await fallback.call(lambda: attempt(fallback))

    async def create(self, route: UpstreamName, body: Mapping[str, Any]) -> UpstreamReply:
        """A complete answer from ``route`` (or its failover upstream)."""
        started = time.perf_counter()
        served, (content, payload) = await self._with_failover(
            route, lambda client: client.create_once(body)
        )
        self.observe_total(started)
        reply = UpstreamReply(served, content, payload, fell_back=served != route)
        self.record_usage(served, reply.usage)
        return reply

    async def open_stream(self, route: UpstreamName, body: Mapping[str, Any]) -> UpstreamStream:
        """An open SSE stream from ``route`` (or its failover upstream), status already OK."""
        started = time.perf_counter()
        served, response = await self._with_failover(
            route, lambda client: client.open_stream_once(body)
        )
        return UpstreamStream(served, response, fell_back=served != route, opened_at=started)

    def observe_total(self, started: float) -> None:
        """Time from the first attempt to the last byte, retries and failover included."""
        if self.metrics is not None:
            elapsed = time.perf_counter() - started
            self.metrics.latency.labels(stage="upstream_total").observe(elapsed)

    def record_usage(self, upstream: UpstreamName, usage: Usage | None) -> float | None:
        """Count tokens, cost and saving versus the cloud price; return the cost in USD."""
        if usage is None:
            return None
        cost = self.clients[upstream].cost_usd(usage)
        if self.metrics is not None:
            self.metrics.observe_tokens(
                upstream=upstream,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=cost,
                cloud_cost_usd=self.clients["cloud"].cost_usd(usage),
            )
        return cost

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients.values()))
