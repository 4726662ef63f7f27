"""The upstream LLM servers (edge and cloud, or any named list): pooled clients, retries,
failover in the configured order, cost.

One ``httpx.AsyncClient`` per upstream keeps connections alive across requests. The client's own
``Authorization`` header is never forwarded (each upstream gets its configured key) and the
upstream's key never reaches a response. Failures are retried with exponential backoff while no
byte has reached the client (429, 5xx; connect errors and timeouts are not: an unreachable
upstream fails fast), then the request may fail over to the next upstreams of its failover
order (not a forced one, unless ``DARS_FAILOVER_FORCED``). A client error names every upstream
tried, its base URL (never a key) and the setting to check. httpx errors are mapped to the
service's error tree here, ``from exc``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.aiohttp_transport import upstream_transport
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
from app.upstreams_file import UpstreamsConfig, configured_upstreams
from app.utility import TokenAverages

__all__ = [
    "UPSTREAM_NAMES",
    "UpstreamClient",
    "UpstreamFailed",
    "UpstreamFailure",
    "UpstreamName",
    "UpstreamReply",
    "UpstreamStream",
    "Upstreams",
    "Usage",
    "classify_error",
    "public_url",
]

logger = logging.getLogger(__name__)

# An upstream's configured name: ``edge``/``cloud`` in the two-model setup, any name from
# ``DARS_UPSTREAMS_FILE`` (app.upstreams_file).
UpstreamName = str
UPSTREAM_NAMES: tuple[Literal["edge"], Literal["cloud"]] = ("edge", "cloud")
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
    """A classified upstream failure: the error for the client, a metric label, what to do.

    ``summary`` names the upstream, its base URL (credentials stripped), what went wrong and the
    setting to change, so that an operator can fix it from the client's error alone.
    """

    error: DarsError
    kind: str
    retryable: bool
    summary: str

    @property
    def failover(self) -> bool:
        """Unreachable, slow, overloaded or broken upstreams fail over; a rejected body does not."""
        return isinstance(self.error, UpstreamError | RateLimited)


class UpstreamFailed(Exception):
    """Every upstream tried failed (internal); ``error`` names each of them and why."""

    def __init__(self, failures: list[UpstreamFailure]) -> None:
        super().__init__("; ".join(failure.summary for failure in failures))
        self.failures = failures

    @property
    def error(self) -> DarsError:
        """The last failure's error class and code, with a message naming every attempt."""
        last = self.failures[-1].error
        if len(self.failures) == 1:
            return last
        message = _sentence(f"Upstreams failed: {'; '.join(f.summary for f in self.failures)}")
        return type(last)(message, param=last.param, code=last.code)


class _StatusError(Exception):
    """An upstream answered with an error status (internal; classified by ``classify_error``)."""

    def __init__(self, status_code: int, body: bytes) -> None:
        super().__init__(f"upstream status {status_code}")
        self.status_code = status_code
        self.body = body


def _sentence(text: str) -> str:
    return text if text.endswith(".") else text + "."


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to show, whatever the operator put in."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _upstream_message(body: bytes) -> str | None:
    """The ``error.message`` of an upstream error body, shortened; ``None`` if there is none."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message[:_MAX_UPSTREAM_MESSAGE] if isinstance(message, str) else None


def _connect_reason(exc: httpx.ConnectError) -> str:
    """Why a connection failed, from the OS error at the bottom of httpx's exception chain."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        cause = cause.__cause__ or cause.__context__
    return "cannot connect"


@dataclass(frozen=True)
class _Where:
    """The upstream a failure belongs to: its name, public base URL and where it is set
    (``file``: the upstreams file, ``None``: the ``DARS_<NAME>_*`` variables)."""

    name: str
    url: str
    file: str | None = None

    def setting(self, field: str) -> str:
        """What to check for ``field`` (``base_url``, ``model``, ``api_key``)."""
        if self.file is None:
            return f"DARS_{self.name.upper()}_{field.upper()}"
        field = "api_key_env" if field == "api_key" else field
        return f"{field} of upstream {self.name!r} in {self.file}"

    def failure(
        self,
        error_cls: type[DarsError],
        kind: str,
        reason: str,
        *,
        retryable: bool = False,
        check: str | None = None,
    ) -> UpstreamFailure:
        summary = f"{self.name} ({self.url}): {reason}" + (f" (check {check})" if check else "")
        error = error_cls(_sentence(f"Upstream failed: {summary}"))
        return UpstreamFailure(error, kind, retryable, summary)


def _classify_status(where: _Where, exc: _StatusError) -> UpstreamFailure:
    status = exc.status_code
    if status == 429:
        return where.failure(RateLimited, "status_429", "rate limited (status 429)", retryable=True)
    if status >= 500:
        return where.failure(UpstreamError, "status_5xx", f"status {status}", retryable=True)
    if status in (401, 403):
        # The service's key is wrong: a configuration error, not the client's. The upstream's
        # message is not relayed: it may quote the (partial) key.
        reason = f"rejected the service's key (status {status})"
        return where.failure(UpstreamError, "status_4xx", reason, check=where.setting("api_key"))
    if status == 404:
        check = f"{where.setting('model')} and {where.setting('base_url')}"
        return where.failure(UpstreamError, "status_4xx", "not found (status 404)", check=check)
    if status == 413:
        reason = "refused the request as too large (status 413)"
        return where.failure(PayloadTooLarge, "status_4xx", reason)
    detail = _upstream_message(exc.body) or f"status {status}"
    return where.failure(InvalidRequest, "status_4xx", f"rejected the request: {detail}")


def classify_error(
    name: str, exc: Exception, *, base_url: str, file: str | None = None
) -> UpstreamFailure:
    """Map an httpx or status error of upstream ``name`` to the error tree, most specific first.

    Connect errors are not retried: an upstream that refuses connections, cannot be resolved or
    does not accept one within the connect timeout will not within a backoff either, and retries
    stacked with failover only delay the answer (fail fast, then fail over).
    """
    where = _Where(name, public_url(base_url), file)
    if isinstance(exc, _StatusError):
        return _classify_status(where, exc)
    if isinstance(exc, httpx.ConnectTimeout):
        check = f"{where.setting('base_url')} or DARS_UPSTREAM_CONNECT_TIMEOUT_S"
        return where.failure(UpstreamError, "connect", "no connection in time", check=check)
    if isinstance(exc, httpx.ConnectError):
        reason = _connect_reason(exc)
        return where.failure(UpstreamError, "connect", reason, check=where.setting("base_url"))
    if isinstance(exc, httpx.PoolTimeout):
        reason = "no free connection in time"
        check = "DARS_UPSTREAM_MAX_CONNECTIONS"
        return where.failure(UpstreamTimeout, "pool_timeout", reason, check=check)
    if isinstance(exc, httpx.TimeoutException):
        check = "DARS_UPSTREAM_READ_TIMEOUT_S"
        return where.failure(UpstreamTimeout, "timeout", "timed out", check=check)
    if isinstance(exc, httpx.HTTPError):
        return where.failure(UpstreamError, "protocol", "the connection failed")
    if isinstance(exc, ValueError):
        return where.failure(UpstreamError, "invalid_response", "sent an invalid response")
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
    """One upstream: its connection pool (the transport), key, model name and prices."""

    def __init__(
        self,
        name: UpstreamName,
        config: UpstreamSettings,
        *,
        retries: int = 2,
        backoff_s: float = 0.2,
        metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        file: str | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.file = file  # the upstreams file it came from, for error messages
        self.retries = retries
        self.backoff_s = backoff_s
        self.metrics = metrics
        # Requests go straight to the transport: an httpx.AsyncClient in between would add
        # auth, redirect and cookie handling per call, none of which an upstream call uses.
        self._transport = transport or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
            )
        )
        # What every chat call shares, built once (URL, headers, timeouts).
        self._chat_url = httpx.URL(config.base_url.rstrip("/") + "/").join(CHAT_PATH)
        headers = {
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "Content-Type": "application/json",
            "User-Agent": "dars-router",
        }
        if config.api_key is not None:
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        # Raw, with Host: a request given its stream skips httpx's header preparation, which
        # scans the headers once per default header (several times a hit's JSON encoding).
        self._chat_headers = [
            (b"Host", self._chat_url.netloc),
            *((name.encode(), value.encode()) for name, value in headers.items()),
        ]
        timeout = httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s)
        self._chat_extensions = {"timeout": timeout.as_dict()}

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
        """The chat request for ``body`` with this upstream's model (compact JSON, UTF-8)."""
        content = json.dumps(
            {**body, "model": self.model},
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        ).encode()
        return httpx.Request(
            "POST",
            self._chat_url,
            headers=[*self._chat_headers, (b"Content-Length", b"%d" % len(content))],
            stream=httpx.ByteStream(content),
            extensions=self._chat_extensions,
        )

    async def create_once(self, body: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """One non-streamed call: the raw body and its parsed JSON; raises httpx/status errors."""
        started = time.perf_counter()
        response = await self._transport.handle_async_request(self._request(body))
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
        response = await self._transport.handle_async_request(self._request(body))
        if response.status_code >= 400:
            try:
                content = await response.aread()
            finally:
                await response.aclose()
            raise _StatusError(response.status_code, content)
        return response

    async def attempt(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` with retries and backoff; ``UpstreamFailed`` ``from`` the last error."""
        retry = 0
        while True:
            try:
                return await attempt()
            except (httpx.HTTPError, _StatusError, ValueError) as exc:
                failure = classify_error(
                    self.name, exc, base_url=self.config.base_url, file=self.file
                )
                if self.metrics is not None:
                    self.metrics.upstream_errors.labels(upstream=self.name, kind=failure.kind).inc()
                if not failure.retryable or retry >= self.retries:
                    raise UpstreamFailed([failure]) from exc
            logger.warning("%s; retry %d", failure.summary, retry + 1)
            if self.metrics is not None:
                self.metrics.retries.labels(upstream=self.name).inc()
            await asyncio.sleep(self.backoff_s * 2**retry)
            retry += 1

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """:meth:`attempt`, raising the client-facing error ``from`` the last upstream error."""
        try:
            return await self.attempt(attempt)
        except UpstreamFailed as failed:
            raise failed.error from failed.__cause__

    async def aclose(self) -> None:
        await self._transport.aclose()


class Upstreams:
    """The configured upstreams, the failover order between them and their token averages.

    ``clients`` in configured order. ``failover`` maps each name to the upstreams it fails over
    to, tried in that order; without it, the two-model switches apply (edge to cloud, cloud to
    edge). ``tokens`` holds each upstream's running token averages (app.utility), fed by
    :meth:`record_usage`, from which utility routing estimates each model's cost per request.
    """

    def __init__(
        self,
        *clients: UpstreamClient,
        failover_edge_to_cloud: bool = True,
        failover_cloud_to_edge: bool = False,
        failover: Mapping[UpstreamName, Sequence[UpstreamName]] | None = None,
        failover_forced: bool = False,
        metrics: Metrics | None = None,
        token_window: int = 1000,
    ) -> None:
        self.clients: dict[UpstreamName, UpstreamClient] = {c.name: c for c in clients}
        # The ``model`` values that force an upstream (app.policy.parse_model_field).
        self.by_model: dict[str, UpstreamName] = {c.model: c.name for c in clients}
        if failover is None:
            failover = {
                "edge": ["cloud"] if failover_edge_to_cloud else [],
                "cloud": ["edge"] if failover_cloud_to_edge else [],
            }
        self.failover: dict[UpstreamName, tuple[UpstreamName, ...]] = {
            name: tuple(n for n in failover.get(name, ()) if n in self.clients and n != name)
            for name in self.clients
        }
        self.failover_forced = failover_forced
        self.metrics = metrics
        self.tokens = TokenAverages(window=token_window)

    @property
    def failover_to(self) -> dict[UpstreamName, UpstreamName | None]:
        """The first upstream each one fails over to (``None``: no failover)."""
        return {name: (order[0] if order else None) for name, order in self.failover.items()}

    @property
    def reference(self) -> UpstreamClient:
        """The upstream savings are measured against: ``cloud``, else the dearest by price."""
        if "cloud" in self.clients:
            return self.clients["cloud"]
        return max(self.clients.values(), key=lambda c: c.cost_usd(Usage(1, 1)))

    @classmethod
    def from_config(
        cls,
        config: UpstreamsConfig,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Upstreams:
        """Clients for every configured upstream (a file's or the edge/cloud shorthand).

        Each gets its own ``DARS_UPSTREAM_TRANSPORT`` pool of its own ``max_connections`` (a
        file's per-upstream value, else ``DARS_UPSTREAM_MAX_CONNECTIONS``), unless one
        ``transport`` is given for all (tests).
        """
        file = None if config.source == "env" else config.source
        clients = [
            UpstreamClient(
                spec.name,
                spec.config,
                retries=settings.upstream_retries,
                backoff_s=settings.upstream_backoff_s,
                metrics=metrics,
                transport=transport
                or upstream_transport(settings.upstream_transport, spec.config.max_connections),
                file=file,
            )
            for spec in config.upstreams
        ]
        return cls(
            *clients,
            failover=config.failover,
            failover_forced=settings.failover_forced,
            metrics=metrics,
            token_window=settings.calibration_window,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Upstreams:
        """:meth:`from_config` of :func:`app.upstreams_file.configured_upstreams`."""
        config = configured_upstreams(settings)
        return cls.from_config(config, settings, metrics, transport=transport)

    def __getitem__(self, name: UpstreamName) -> UpstreamClient:
        return self.clients[name]

    async def _with_failover(
        self,
        route: UpstreamName,
        attempt: Callable[[UpstreamClient], Awaitable[T]],
        *,
        forced: bool,
    ) -> tuple[UpstreamName, T]:
        """``attempt`` on ``route``, then on its failover upstreams in order, while allowed.

        A forced request (the client named an upstream's model) fails over only with
        ``DARS_FAILOVER_FORCED``; a failure that must not fail over (e.g. the client's own bad
        request) stops at once. When every upstream tried failed, the error names each of them.
        """
        failures: list[UpstreamFailure] = []
        order = (route,) + (() if forced and not self.failover_forced else self.failover[route])
        previous: UpstreamName | None = None
        last: UpstreamFailed | None = None
        for name in order:
            if previous is not None:
                logger.warning("%s; failing over to %s", failures[-1].summary, name)
                if self.metrics is not None:
                    self.metrics.fallbacks.labels(from_upstream=previous, to_upstream=name).inc()
            client = self.clients[name]
            try:
                return name, await client.attempt(functools.partial(attempt, client))
            except UpstreamFailed as failed:
                failures.extend(failed.failures)
                last = failed
                if not failed.failures[0].failover:
                    break
            previous = name
        every = UpstreamFailed(failures)
        raise every.error from (last.__cause__ if last is not None else None)

    async def create(
        self, route: UpstreamName, body: Mapping[str, Any], *, forced: bool = False
    ) -> UpstreamReply:
        """A complete answer from ``route`` (or its failover upstream)."""
        started = time.perf_counter()
        served, (content, payload) = await self._with_failover(
            route, lambda client: client.create_once(body), forced=forced
        )
        self.observe_total(started)
        reply = UpstreamReply(served, content, payload, fell_back=served != route)
        self.record_usage(served, reply.usage)
        return reply

    async def open_stream(
        self, route: UpstreamName, body: Mapping[str, Any], *, forced: bool = False
    ) -> UpstreamStream:
        """An open SSE stream from ``route`` (or its failover upstream), status already OK."""
        started = time.perf_counter()
        served, response = await self._with_failover(
            route, lambda client: client.open_stream_once(body), forced=forced
        )
        return UpstreamStream(served, response, fell_back=served != route, opened_at=started)

    def observe_total(self, started: float) -> None:
        """Time from the first attempt to the last byte, retries and failover included."""
        if self.metrics is not None:
            elapsed = time.perf_counter() - started
            self.metrics.latency.labels(stage="upstream_total").observe(elapsed)

    def record_usage(self, upstream: UpstreamName, usage: Usage | None) -> float | None:
        """Count tokens (metrics, running averages), cost and saving versus the cloud price (the
        dearest upstream's without a ``cloud``); return the cost in USD."""
        if usage is None:
            return None
        cost = self.clients[upstream].cost_usd(usage)
        self.tokens.record(upstream, usage.prompt_tokens, usage.completion_tokens)
        if self.metrics is not None:
            self.metrics.observe_tokens(
                upstream=upstream,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=cost,
                cloud_cost_usd=self.reference.cost_usd(usage),
            )
        return cost

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients.values()))
