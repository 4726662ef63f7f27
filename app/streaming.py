"""Server-sent events pass-through: upstream SSE to the client, one event at a time.

Events are forwarded as soon as they are complete, never buffered further. Two edits only:
the usage chunk the service asked for on the client's behalf (``stream_options.include_usage``)
is counted and then removed, and a failure of the upstream after the response started becomes an
OpenAI error event followed by ``data: [DONE]``, since the HTTP status can no longer change.
The upstream response is closed whenever the relay ends: finished, failed, or client gone.
A stream the live loop drew for shadow sampling also keeps choice 0's text (:class:`AnswerCapture`,
bounded), read after each event has gone out, so the client never waits for it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.errors import DarsError
from app.upstream import Upstreams, UpstreamStream, Usage, classify_error

__all__ = [
    "ANSWER_LIMIT_CHARS",
    "DONE_EVENT",
    "AnswerCapture",
    "SSEResponse",
    "StreamEnd",
    "error_event",
    "relay_sse",
    "sse_events",
]

logger = logging.getLogger(__name__)

DONE_EVENT = b"data: [DONE]\n\n"
CLIENT_CLOSED = "499"  # nginx's status for a client that closed the connection first
ANSWER_LIMIT_CHARS = 65_536  # a longer streamed answer is not kept, so it is never graded


@dataclass
class AnswerCapture:
    """Choice 0's content deltas of a stream, kept for the shadow judge (sampled streams only).

    At most ``limit`` characters: beyond that ``truncated`` is set and the answer is dropped, as
    is one whose choice 0 never reported a ``finish_reason``: a partial answer graded as if it
    were whole would bias the served model's live quality down.
    """

    limit: int = ANSWER_LIMIT_CHARS
    parts: list[str] = field(default_factory=list)
    size: int = 0
    truncated: bool = False
    finished: bool = False

    def feed(self, data: str) -> None:
        """Take the text of one event's ``data`` payload (anything unparsable is skipped)."""
        if self.truncated:
            return
        try:
            chunk: Any = json.loads(data)
        except ValueError:  # [DONE], or a payload that is not ours to judge
            return
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                self._add(content)
            if choice.get("finish_reason"):
                self.finished = True

    def _add(self, text: str) -> None:
        room = self.limit - self.size
        if len(text) > room:
            text, self.truncated = text[:room], True
        self.parts.append(text)
        self.size += len(text)

    @property
    def answer(self) -> str | None:
        """The whole answer; None when cut at the limit, unfinished, or without any text."""
        if self.truncated or not self.finished or not self.size:
            return None
        return "".join(self.parts)


@dataclass(frozen=True)
class StreamEnd:
    """How a relayed stream ended: HTTP-like status, the usage seen, the kept answer if any."""

    status: str
    usage: Usage | None
    capture: AnswerCapture | None = None

    @property
    def answer(self) -> str | None:
        """The served answer, only for a stream that was captured and ended normally."""
        if self.status != "200" or self.capture is None:
            return None
        return self.capture.answer


def error_event(error: DarsError) -> bytes:
    """An OpenAI error body as one SSE ``data:`` event."""
    return b"data: " + json.dumps(error.to_body()).encode() + b"\n\n"


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[list[str]]:
    """Group SSE lines into events (lists of lines); a blank line ends an event."""
    event: list[str] = []
    async for line in lines:
        if line:
            event.append(line)
        elif event:
            yield event
            event = []
    if event:
        yield event


def _data(event: list[str]) -> str | None:
    """The joined ``data:`` field of an event, or ``None`` when it has none."""
    parts = [line[5:].removeprefix(" ") for line in event if line.startswith("data:")]
    return "\n".join(parts) if parts else None


def _encode(event: list[str]) -> bytes:
    return ("\n".join(event) + "\n\n").encode()


def _usage_edit(data: str, *, strip: bool) -> tuple[Usage | None, bytes | None, bool]:
    """Inspect one data payload: (usage found, replacement event or None, drop the event)."""
    if '"usage"' not in data:
        return None, None, False
    try:
        chunk: Any = json.loads(data)
    except ValueError:
        return None, None, False
    if not isinstance(chunk, dict) or not chunk.get("usage"):
        return None, None, False
    usage = Usage.from_payload(chunk["usage"])
    if not strip:
        return usage, None, False
    if not chunk.get("choices"):
        return usage, None, True
    del chunk["usage"]
    return usage, b"data: " + json.dumps(chunk).encode() + b"\n\n", False


async def relay_sse(
    stream: UpstreamStream,
    upstreams: Upstreams,
    *,
    strip_usage: bool,
    on_finish: Callable[[StreamEnd], None] | None = None,
    capture: AnswerCapture | None = None,
) -> AsyncIterator[bytes]:
    """Yield the upstream's SSE events as bytes; count usage; end with an error event on failure.

    ``strip_usage`` removes the usage chunk the client did not ask for. ``on_finish`` is called
    once with a :class:`StreamEnd`: status ``"200"``, the mid-stream error's status, or ``"499"``
    when the client went away first. ``capture`` (None: nothing kept) is fed each event after
    it was handed on.
    """
    client = upstreams[stream.upstream]
    usage: Usage | None = None
    status = CLIENT_CLOSED
    first = True
    try:
        try:
            async for event in sse_events(stream.response.aiter_lines()):
                if first:
                    client.observe_ttfb(stream.opened_at)
                    first = False
                data = _data(event)
                if data is None:
                    yield _encode(event)
                    continue
                found, replacement, drop = _usage_edit(data, strip=strip_usage)
                usage = found or usage
                if not drop:
                    yield _encode(event) if replacement is None else replacement
                if capture is not None:
                    capture.feed(data)  # the client already has this event
        except httpx.HTTPError as exc:
            base_url = upstreams[stream.upstream].config.base_url
            failure = classify_error(stream.upstream, exc, base_url=base_url)
            logger.warning("%s upstream failed mid-stream: %s", stream.upstream, failure.kind)
            if upstreams.metrics is not None:
                upstreams.metrics.upstream_errors.labels(
                    upstream=stream.upstream, kind=failure.kind
                ).inc()
            status = str(failure.error.status_code)
            yield error_event(failure.error)
            yield DONE_EVENT
        else:
            status = "200"
        upstreams.observe_total(stream.opened_at)
    finally:
        upstreams.record_usage(stream.upstream, usage)
        if on_finish is not None:
            on_finish(StreamEnd(status, usage, capture))
        with anyio.CancelScope(shield=True):
            await stream.response.aclose()


class SSEResponse(StreamingResponse):
    """A streaming response that always closes its body iterator, even if the client left.

    Starlette stops iterating when the client disconnects but leaves the generator suspended;
    closing it here runs the relay's ``finally`` now, which closes the upstream stream.
    """

    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
