"""Graders on responses whose right score is known, answer extraction included."""

from __future__ import annotations

import pytest
from fake_llm_server import FakeLLM

from router_models.collect.client import ChatClient, Endpoint, RetryPolicy
from router_models.collect.grading import (
    GradingError,
    JudgeGrader,
    choose_grader,
    extract_short_answer,
    grade_response,
    grade_short,
    parse_rating,
    token_f1,
)
from router_models.collect.prompts import prompt_row


@pytest.mark.parametrize(
    ("response", "gold", "score", "extracted"),
    [
        ("She has 16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\nThe answer is 18.", "18", 1.0, "18"),
        ("Total: $1,250.00\n#### 1250", "1250", 1.0, "1250"),
        ("so the result is \\boxed{72}", "72", 1.0, "72"),
        ("The answer is 17. (I checked: 18 would be wrong.)", "18", 0.0, "17"),
        ("First 3 eggs, then 4, so 18 remain", "18", 1.0, "18"),
        ("I cannot solve this.", "18", 0.0, None),
    ],
)
def test_numeric(response: str, gold: str, score: float, extracted: str | None) -> None:
    grade = grade_response("numeric", response, {"answer": gold})
    assert (grade.score, grade.extracted, grade.grader) == (score, extracted, "numeric")


@pytest.mark.parametrize(
    ("response", "score", "extracted"),
    [
        ("The answer is B.", 1.0, "B"),
        ("(C) because the extension has degree 2", 0.0, "C"),
        ("Answer: B", 1.0, "B"),
        ("the answer is a number", 0.0, None),
    ],
)
def test_choice(response: str, score: float, extracted: str | None) -> None:
    grade = grade_response("choice", response, {"answer": "B", "choices": ["0", "4", "2", "6"]})
    assert (grade.score, grade.extracted) == (score, extracted)


def test_short_answer_modes_with_aliases() -> None:
    aliases = ["14 December 1972 UTC", "December 1972"]
    response = "Answer: In December 1972, with Apollo 17."
    assert grade_short(response, aliases, "contains").score == 1.0
    assert grade_short(response, aliases, "em").score == 0.0
    assert grade_short("December 1972.", aliases, "em").score == 1.0  # normalised
    assert grade_short("the moon landing of 1969", aliases, "contains").score == 0.0
    f1 = grade_short("Answer: December 1972, Apollo 17", aliases, "f1").score
    assert f1 == pytest.approx(token_f1("December 1972, Apollo 17", "December 1972"))
    assert 0.0 < f1 < 1.0


def test_contains_matches_whole_words_only() -> None:
    assert grade_short("It was 19721", ["1972"], "contains").score == 0.0
    assert grade_short("It was (1972)", ["1972"], "contains").score == 1.0


def test_extract_short_answer_and_token_f1() -> None:
    assert extract_short_answer("\n\nFinal answer: Paris.\nBecause...") == "Paris"
    assert token_f1("the Eiffel Tower", "Eiffel tower") == 1.0
    assert token_f1("Paris", "London") == 0.0


def test_missing_reference_is_a_grading_error() -> None:
    with pytest.raises(GradingError, match="reference"):
        grade_response("numeric", "The answer is 3", {})


def test_choose_grader_from_dataset_meta_and_override() -> None:
    gsm = prompt_row({"dataset": "gsm8k", "prompt": "q", "answer": "3"})
    mmlu = prompt_row({"dataset": "mmlu", "prompt": "q\nA. x\nB. y", "answer": "A"})
    nq = prompt_row({"dataset": "nq-open", "prompt": "who", "answers": ["x"]})
    chat = prompt_row({"prompt": "write a poem"})
    assert [choose_grader(p) for p in (gsm, mmlu, nq, chat)] == [
        "numeric",
        "choice",
        "short",
        "judge",
    ]
    assert choose_grader(chat, "short") == "short"
    assert choose_grader(prompt_row({"prompt": "x", "grader": "numeric"})) == "numeric"
    with pytest.raises(GradingError):
        choose_grader(chat, "vibes")


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("Good answer. Rating: [[8]]", 8.0),
        ("Rating: 3", 3.0),
        ("I'd give it 7/10.", 7.0),
        ("[[11]] is out of range", None),
        ("no rating here", None),
    ],
)
def test_parse_rating(text: str, rating: float | None) -> None:
    assert parse_rating(text) == rating


async def test_judge_maps_rating_to_unit_interval(fake_llm: FakeLLM) -> None:
    replies = iter(["I cannot decide.", "Helpful and right. Rating: [[8]]"])
    fake_llm.reply = lambda body: next(replies)
    endpoint = Endpoint(name="judge", base_url=fake_llm.base_url, price_out=1.0)
    async with ChatClient(endpoint, retry=RetryPolicy(base_delay=0.01)) as client:
        judge = JudgeGrader(client=client)
        grade, usage, cost = await judge.grade("What is 2+2?", "4", reference="4", seed=1)
    assert grade.score == pytest.approx(7 / 9)
    assert (grade.grader, grade.extracted) == ("judge", "8")
    assert len(fake_llm.bodies) == 2  # one reply without a rating, then a retry
    assert "[Reference Answer]\n4" in fake_llm.bodies[0]["messages"][0]["content"]
    assert usage.completion_tokens == 3 + 5 and cost > 0


async def test_judge_without_rating_fails(fake_llm: FakeLLM) -> None:
    fake_llm.reply = lambda body: "no idea"
    endpoint = Endpoint(name="judge", base_url=fake_llm.base_url)
    async with ChatClient(endpoint, retry=RetryPolicy(base_delay=0.01)) as client:
        with pytest.raises(GradingError, match="rating"):
            await JudgeGrader(client=client, attempts=2).grade("q", "r", None, seed=1)
