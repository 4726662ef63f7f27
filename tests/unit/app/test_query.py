"""The routed text: last user message, text parts only, stripped and truncated."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import InvalidRequest
from app.protocol import ChatCompletionRequest
from app.query import content_text, query_text


def request(*messages: dict[str, Any]) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="router", messages=list(messages))


def test_last_user_message_wins_over_earlier_turns_and_other_roles() -> None:
    req = request(
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "  second question \n"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t1"}]},
        {"role": "tool", "content": "tool output", "tool_call_id": "t1"},
    )
    assert query_text(req, max_chars=100) == "second question"


def test_text_parts_are_joined_and_other_parts_ignored() -> None:
    req = request(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look at this:"},
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                {"type": "text", "text": "what is it?"},
            ],
        }
    )
    assert query_text(req, max_chars=100) == "Look at this:\nwhat is it?"


def test_text_is_truncated_to_max_chars() -> None:
    req = request({"role": "user", "content": "abcdefghij"})
    assert query_text(req, max_chars=4) == "abcd"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": ""}], "messages[0].content"),
        ([{"role": "user", "content": " \t\n"}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "user", "content": []}], "messages[0].content"),
        (
            [
                {"role": "user", "content": "earlier text does not count"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]},
            ],
            "messages[1].content",
        ),
        ([{"role": "user", "content": [{"type": "text", "text": "  "}]}], "messages[0].content"),
        ([{"role": "system", "content": "no user here"}], "messages"),
        ([{"role": "assistant", "content": "hi"}], "messages"),
    ],
)
def test_no_routable_text_is_invalid_request(messages: list[dict[str, Any]], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        query_text(request(*messages), max_chars=100)
    assert raised.value.param == param
    assert raised.value.status_code == 400


def test_content_text_of_each_shape() -> None:
    assert content_text(None) == ""
    assert content_text("plain") == "plain"
    parts = request({"role": "user", "content": [{"type": "text", "text": "a"}]}).messages[0]
    assert content_text(parts.content) == "a"
