"""The chat request schema: validates what the router reads, forwards everything else as sent."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.protocol import ChatCompletionRequest, ThresholdUpdate

BODY: dict[str, Any] = {
    "model": "router",
    "messages": [
        {"role": "system", "content": "be brief", "name": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                {"type": "image_url", "image_url": {"url": "data:,", "detail": "low"}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "auto",
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    "n": 3,
    "seed": 1234,
    "temperature": 0,
    "logit_bias": {"50256": -100},
    "max_completion_tokens": 17,
    "user": "u-1",
    "a_future_field": [1, {"b": None}],
}


def test_every_field_is_forwarded_untouched() -> None:
    body = ChatCompletionRequest.model_validate(BODY).upstream_body(include_usage=True)

    assert body == BODY  # not streaming: include_usage does not apply


def test_unset_fields_are_not_invented() -> None:
    minimal = {"model": "router", "messages": [{"role": "user", "content": "hi"}]}
    assert ChatCompletionRequest.model_validate(minimal).upstream_body(include_usage=True) == (
        minimal
    )


def test_explicit_nulls_are_kept() -> None:
    sent = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": None}
    assert ChatCompletionRequest.model_validate(sent).upstream_body(include_usage=False) == sent


@pytest.mark.parametrize(
    ("stream_options", "wants_usage", "forwarded"),
    [
        (None, False, {"include_usage": True}),
        ({"include_usage": False}, False, {"include_usage": True}),
        ({"include_usage": True}, True, {"include_usage": True}),
        ({"future_option": 1}, False, {"future_option": 1, "include_usage": True}),
    ],
)
def test_streaming_asks_upstream_for_usage(
    stream_options: dict[str, Any] | None, wants_usage: bool, forwarded: dict[str, Any]
) -> None:
    sent: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    sent["stream"] = True
    if stream_options is not None:
        sent["stream_options"] = stream_options
    request = ChatCompletionRequest.model_validate(sent)

    assert request.wants_usage is wants_usage
    assert request.upstream_body(include_usage=True)["stream_options"] == forwarded
    assert request.upstream_body(include_usage=False).get("stream_options") == stream_options


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "x"}]},
        {"model": "", "messages": [{"role": "user", "content": "x"}]},
        {"model": "router", "messages": []},
        {"model": "router", "messages": [{"content": "x"}]},
        {"model": "router", "messages": [{"role": "user", "content": 7}]},
        {"model": "router", "messages": [{"role": "user", "content": {"text": "x"}}]},
        {"model": "router", "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
        {"model": "router", "messages": "hello"},
    ],
)
def test_malformed_requests_are_rejected(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)


def test_admin_bodies_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ThresholdUpdate.model_validate({"value": 0.5, "valeu": 0.7})
