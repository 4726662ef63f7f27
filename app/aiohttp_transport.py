"""An httpx transport that sends over aiohttp: httpx's API, without httpcore's pool cost.

Profiling cache hits at concurrency 64 (``python -m bench.profile_hit``) put about 38% of the
router's CPU in httpcore's connection pool: each request scans every pooled connection and asks
each socket whether it is idle or expired (encode/httpx#3215). aiohttp's connector hands out a
keep-alive connection without that scan. Everything above the transport (the upstream client,
retries, error classification) keeps speaking httpx; aiohttp's errors are mapped here to the
httpx errors they correspond to, ``from exc``, most specific first:

- connecting times out -> ``httpx.ConnectTimeout``; refused or unresolvable -> ``ConnectError``
- no response byte within the read timeout -> ``httpx.ReadTimeout``
- the server closes or sends garbage -> ``httpx.RemoteProtocolError``
- any other aiohttp client error -> ``httpx.ReadError``

``DARS_UPSTREAM_TRANSPORT=httpx`` switches back to httpx's own transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport", "upstream_transport"]


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Send httpx requests with one shared ``aiohttp.ClientSession``.

    Parameters
    ----------
    max_connections_per_host : int
        Pooled connections per upstream host (``DARS_UPSTREAM_MAX_CONNECTIONS``).

    The session is created on the first request (it needs a running event loop); ``aclose``
    may be called once per httpx client sharing the transport and closes it once.
    """

    def __init__(self, *, max_connections_per_host: int = 100) -> None:
        self.max_connections_per_host = max_connections_per_host
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=self.max_connections_per_host)
            # httpx decodes content-encoding itself; aiohttp must hand over the bytes as sent.
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, trust_env=False
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        # aiohttp writes str headers as UTF-8: decoding the raw bytes as UTF-8 (what the
        # upstream client encodes them as) sends them byte for byte; latin-1 would mangle them.
        headers = [(k.decode(), v.decode()) for k, v in request.headers.raw]
        timeout = _timeout(request)
        with _mapped_errors(request, connecting=True):
            response = await self._client().request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            )
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_ResponseStream(response, request),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
            request=request,
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


def upstream_transport(kind: str, max_connections: int) -> AiohttpTransport | None:
    """The transport ``DARS_UPSTREAM_TRANSPORT`` names; ``None`` = httpx's own."""
    if kind == "httpx":
        return None
    if kind != "aiohttp":
        raise ValueError(f"unknown upstream transport {kind!r}")
    return AiohttpTransport(max_connections_per_host=max_connections)


class _ResponseStream(httpx.AsyncByteStream):
    """The body of an aiohttp response as httpx reads it: chunks as they arrive (SSE too)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors(self._request, connecting=False):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


def _timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts (connect, read) as aiohttp's socket timeouts."""
    timeouts = request.extensions.get("timeout", {})
    return aiohttp.ClientTimeout(
        total=None,
        sock_connect=timeouts.get("connect"),
        sock_read=timeouts.get("read"),
    )


@contextmanager
def _mapped_errors(request: httpx.Request, *, connecting: bool) -> Iterator[None]:
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # these three before TimeoutError: they are
        raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
    except aiohttp.ServerTimeoutError as exc:
        raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.ClientResponseError as exc:  # malformed status line or headers
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.ReadError(str(exc), request=request) from exc
    except TimeoutError as exc:
        kind = httpx.ConnectTimeout if connecting else httpx.ReadTimeout
        raise kind("timed out", request=request) from exc
