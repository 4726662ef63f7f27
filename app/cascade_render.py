"""The kept edge answer as an OpenAI chat completion, whole (JSON) or as SSE chunks.

The answer is the self-consistency sample (first of the largest meaning class); ``usage`` is
the sum over the k samples, since the client's request caused all of them. A stream is replayed
from the buffered answer once the decision is taken: role, content, finish reason, then the
usage chunk when the client asked for it (``stream_options.include_usage``), then ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from app.cascade_sampling import EdgeSample
from app.streaming import DONE_EVENT
from app.upstream import Usage

__all__ = ["completion", "completion_events", "usage_body"]


def usage_body(usage: Usage) -> dict[str, int]:
    """An OpenAI ``usage`` object."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def completion(sample: EdgeSample, usage: Usage) -> dict[str, Any]:
    """A ``chat.completion`` holding ``sample``'s choice (as index 0) and the summed usage."""
    body = dict(sample.payload)
    body["object"] = "chat.completion"
    body["choices"] = [{**sample.choice, "index": 0}]
    body["usage"] = usage_body(usage)
    return body


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def completion_events(
    sample: EdgeSample, usage: Usage, *, include_usage: bool
) -> AsyncIterator[bytes]:
    """``sample`` as ``chat.completion.chunk`` SSE events, ending with ``[DONE]``."""
    base = {
        "id": sample.payload.get("id", "chatcmpl-cascade"),
        "object": "chat.completion.chunk",
        "created": sample.payload.get("created", 0),
        "model": sample.payload.get("model", ""),
    }
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

    yield _event(chunk({"role": "assistant", "content": ""}, None))
    if sample.text:
        yield _event(chunk({"content": sample.text}, None))
    yield _event(chunk({}, str(sample.choice.get("finish_reason") or "stop")))
    if include_usage:
        yield _event({**base, "choices": [], "usage": usage_body(usage)})
    yield DONE_EVENT
