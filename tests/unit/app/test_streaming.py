"""SSE relay pieces: event grouping, the usage-chunk edit and the answer capture."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from app.errors import UpstreamTimeout
from app.streaming import AnswerCapture, StreamEnd, _usage_edit, error_event, sse_events
from app.upstream import Usage


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_events_are_grouped_by_blank_lines_and_a_trailing_event_is_kept() -> None:
    lines = _lines("data: a", "", "", "event: x", "data: b", "", "data: c")
    events = [event async for event in sse_events(lines)]
    assert events == [["data: a"], ["event: x", "data: b"], ["data: c"]]


def test_a_usage_only_chunk_is_dropped_when_the_client_did_not_ask() -> None:
    data = json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}})
    usage, replacement, drop = _usage_edit(data, strip=True)
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 5)
    assert replacement is None
    assert drop


def test_usage_on_a_content_chunk_is_removed_but_the_content_kept() -> None:
    usage_body = {"prompt_tokens": 1, "completion_tokens": 1}
    chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": usage_body}
    usage, replacement, drop = _usage_edit(json.dumps(chunk), strip=True)
    assert usage is not None and not drop
    assert replacement is not None
    relayed = json.loads(replacement.decode().removeprefix("data: "))
    assert relayed == {"choices": [{"index": 0, "delta": {"content": "hi"}}]}


def test_usage_is_counted_and_left_in_place_when_the_client_asked() -> None:
    data = json.dumps({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 2}})
    usage, replacement, drop = _usage_edit(data, strip=False)
    assert usage is not None
    assert (replacement, drop) == (None, False)


def test_chunks_without_usage_and_non_json_payloads_pass_untouched() -> None:
    assert _usage_edit(json.dumps({"choices": []}), strip=True) == (None, None, False)
    assert _usage_edit('{"usage": oops', strip=True) == (None, None, False)
    assert _usage_edit(json.dumps({"usage": None, "choices": []}), strip=True) == (
        None,
        None,
        False,
    )


def test_error_event_is_one_sse_data_event_with_the_openai_error_body() -> None:
    event = error_event(UpstreamTimeout("The edge upstream timed out."))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    body = json.loads(event.decode().removeprefix("data: "))
    assert body == {
        "error": {
            "message": "The edge upstream timed out.",
            "type": "upstream_error",
            "param": None,
            "code": "timeout",
        }
    }


def _delta(content: str | None, *, index: int = 0, finish: str | None = None) -> str:
    delta = {} if content is None else {"content": content}
    return json.dumps({"choices": [{"index": index, "delta": delta, "finish_reason": finish}]})


def _fed(*payloads: str, limit: int = 1000) -> AnswerCapture:
    capture = AnswerCapture(limit=limit)
    for payload in payloads:
        capture.feed(payload)
    return capture


def test_capture_keeps_choice_0_text_of_a_finished_stream() -> None:
    capture = _fed(
        json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        _delta("The answer"),
        _delta("Other choice", index=1),
        _delta(" is 4."),
        "not json",
        _delta(None, finish="stop"),
        json.dumps({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}),
        "[DONE]",
    )
    assert capture.answer == "The answer is 4."
    assert not capture.truncated


def test_an_unfinished_or_textless_stream_has_no_answer() -> None:
    assert _fed(_delta("The answer"), _delta(" is")).answer is None  # no finish_reason
    assert _fed(_delta(None, finish="tool_calls")).answer is None  # nothing to grade


def test_a_capture_stops_at_its_limit_and_drops_the_answer() -> None:
    capture = _fed(_delta("abcdef"), _delta("ghij"), _delta("k", finish="stop"), limit=8)
    assert capture.truncated
    assert capture.size == 8 and "".join(capture.parts) == "abcdefgh"
    assert capture.answer is None  # a cut answer is never graded as if it were whole


def test_only_a_stream_that_ended_normally_gives_its_answer() -> None:
    capture = _fed(_delta("Hi", finish="stop"))
    usage = Usage(prompt_tokens=1, completion_tokens=1)
    assert StreamEnd("200", usage, capture).answer == "Hi"
    assert StreamEnd("499", usage, capture).answer is None  # the client left
    assert StreamEnd("502", None, capture).answer is None  # the upstream failed
    assert StreamEnd("200", usage).answer is None  # not drawn: nothing kept
