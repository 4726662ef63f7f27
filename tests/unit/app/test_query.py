"""The routed text: last user message (and, by policy, earlier turns), text parts only."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import InvalidRequest, RouterUnavailable
from app.protocol import ChatCompletionRequest
from app.query import content_text, query_policy, query_text
from app.settings import Settings
from router_models.query_prep import QueryPolicy


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
    assert query_text(req, QueryPolicy(max_chars=100)) == "second question"


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
    assert query_text(req, QueryPolicy(max_chars=100)) == "Look at this:\nwhat is it?"


def test_text_is_truncated_to_max_chars() -> None:
    req = request({"role": "user", "content": "abcdefghij"})
    assert query_text(req, QueryPolicy(max_chars=4)) == "abcd"


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
        query_text(request(*messages), QueryPolicy(max_chars=100))
    assert raised.value.param == param
    assert raised.value.status_code == 400


def test_content_text_of_each_shape() -> None:
    assert content_text(None) == ""
    assert content_text("plain") == "plain"
    parts = request({"role": "user", "content": [{"type": "text", "text": "a"}]}).messages[0]
    assert content_text(parts.content) == "a"


def test_policy_with_turns_adds_the_previous_user_turn_after_the_query() -> None:
    req = request(
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Write a quicksort in Python."},
        {"role": "assistant", "content": "def quicksort(xs): ..."},
        {"role": "user", "content": "Now do it in Rust."},
    )
    two_users = QueryPolicy(turns=2, separator=" | ")
    assert query_text(req, two_users) == "Now do it in Rust. | Write a quicksort in Python."
    with_answers = QueryPolicy(roles=("user", "assistant"), turns=3, separator=" | ")
    assert query_text(req, with_answers) == (
        "Now do it in Rust. | def quicksort(xs): ... | Write a quicksort in Python."
    )


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_policy_precedence_is_file_then_setting_then_default() -> None:
    file_policy = QueryPolicy(turns=3).to_json()
    configured = settings(query_policy='{"turns": 2}', query_max_chars=300)
    assert query_policy(configured, {"dars.query_policy": file_policy}) == QueryPolicy(turns=3)
    assert query_policy(configured, {}) == QueryPolicy(turns=2, max_chars=300)
    assert query_policy(settings(query_max_chars=300), {}) == QueryPolicy(max_chars=300)


def test_a_malformed_policy_is_refused_by_settings_and_unavailable_from_a_file() -> None:
    with pytest.raises(ValueError, match="turns"):
        settings(query_policy='{"turns": 0}')
    with pytest.raises(RouterUnavailable):
        query_policy(settings(), {"dars.query_policy": '{"colour": "blue"}'})
