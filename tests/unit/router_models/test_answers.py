"""Final-answer extraction shared by semantic-entropy clustering and the collector's graders."""

from __future__ import annotations

import pytest

from router_models.answers import (
    answer_kind,
    answers_match,
    extract_answer,
    extract_choice,
    extract_number,
    normalize_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She sells 9 eggs for $2 each.\n#### 18", "18"),
        ("9 * 2 = 18 dollars, the answer is $1,234.", "1234"),
        ("so \\boxed{42} is it; 7 apples", "42"),
        ("x = 3\nans = 12.50", "12.5"),
        ("First 3, then 4, finally 7.", "7"),
        ("The total is -5.", "-5"),
        ("Answer: 18.00", "18"),
        ("no digits here", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_number(text: str | None, expected: str | None) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("D. Paris is the capital", "D"),
        ("A", "A"),
        ("I pick option (A) because ...", "A"),
        ("the answer is a number, not a letter", None),
        ("", None),
    ],
)
def test_extract_choice(text: str, expected: str | None) -> None:
    assert extract_choice(text) == expected


def test_extract_choice_respects_the_letter_set() -> None:
    assert extract_choice("The answer is E", letters="ABCDE") == "E"
    assert extract_choice("The answer is E") is None


def test_normalize_number_unifies_formats() -> None:
    assert normalize_number("$1,000") == normalize_number("1000.0") == "1000"
    assert normalize_number("0.50") == "0.5"
    assert normalize_number("abc") is None


def test_answer_kind_by_dataset() -> None:
    assert answer_kind("gsm8k") == "number"
    assert answer_kind("agentverse-mgsm") == "number"
    assert answer_kind("mmlu") == "choice"
    assert answer_kind("arc-challenge") == "choice"
    assert answer_kind("mt-bench") is None
    assert answer_kind("humaneval") is None


def test_extract_answer_dispatch_and_match() -> None:
    assert extract_answer("#### 7", "number") == "7"
    assert extract_answer("Answer: B", "choice") == "B"
    with pytest.raises(ValueError, match="unknown answer kind"):
        extract_answer("x", "free")  # type: ignore[arg-type]
    assert answers_match("7.0", "7", "number")
    assert not answers_match("8", "7", "number")
    assert answers_match("b", "B", "choice")
    assert not answers_match(None, "B", "choice")
