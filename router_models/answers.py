"""Final-answer extraction: the number of a math solution, the letter of a multiple-choice reply.

Two users share it: semantic-entropy labels cluster responses by their final answer (two
decodes that end in ``18`` mean the same thing), and the label collector grades responses
against a gold answer. Both must read an answer the same way, so the rules live here once.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = [
    "AnswerKind",
    "answer_kind",
    "answers_match",
    "extract_answer",
    "extract_choice",
    "extract_number",
    "has_answer_marker",
    "normalize_number",
]

AnswerKind = Literal["number", "choice"]

# Datasets whose answer is a final number, and those whose answer is an option letter.
_NUMBER_DATASETS = ("gsm8k", "mgsm", "math", "mawps", "svamp", "asdiv", "multiarith")
_CHOICE_DATASETS = (
    "mmlu",
    "cmmlu",
    "ceval",
    "arc",
    "gpqa",
    "commonsenseqa",
    "openbookqa",
    "hellaswag",
    "winogrande",
    "piqa",
)

_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
# Explicit answer markers, most specific first: GSM8K's "#### 18", LaTeX "\boxed{18}",
# "The answer is 18", "ans = 18" (program-of-thought), "Answer: 18".
_NUMBER_MARKERS = (
    re.compile(r"####\s*(" + _NUMBER + r")"),
    re.compile(r"\\boxed\{\s*(" + _NUMBER + r")"),
    re.compile(r"answer\s+is\s*:?\s*(" + _NUMBER + r")", re.IGNORECASE),
    re.compile(r"\bans\s*=\s*(" + _NUMBER + r")"),
    re.compile(r"answer\s*:\s*(" + _NUMBER + r")", re.IGNORECASE),
)
_CHOICE_MARKERS = (
    r"(?i:answer\s+is)\s*:?\s*\(?([{letters}])\b",
    r"(?i:answer)\s*:\s*\(?([{letters}])\b",
    r"^\s*\(?([{letters}])[\)\.:]",
    r"^\s*([{letters}])\s*$",
    r"\(([{letters}])\)",
)


def answer_kind(dataset: str) -> AnswerKind | None:
    """The kind of final answer a dataset's tasks have, or None for open-ended tasks."""
    name = dataset.lower()
    if any(
        name == d or name.startswith(d + "-") or name.endswith("-" + d) for d in _NUMBER_DATASETS
    ):
        return "number"
    if any(
        name == d or name.startswith(d + "-") or name.endswith("-" + d) for d in _CHOICE_DATASETS
    ):
        return "choice"
    return None


def normalize_number(text: str) -> str | None:
    """Canonical string of a number: no ``$``, commas or spaces; ``18.00`` -> ``18``."""
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(round(value, 6))


def extract_number(text: str | None) -> str | None:
    """The final numeric answer of a math response, normalised; None when it has none.

    An explicit marker wins (``####``, ``\\boxed{}``, "the answer is", ``ans =``,
    "Answer:"), taking its last occurrence; otherwise the last number in the text.
    """
    if not text:
        return None
    for marker in _NUMBER_MARKERS:
        found = marker.findall(text)
        if found:
            return normalize_number(found[-1])
    numbers = _NUMBER_RE.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def has_answer_marker(text: str | None, kind: AnswerKind) -> bool:
    """Whether ``text`` states its final answer explicitly (``####``, "the answer is"...), as
    opposed to merely containing a number: the service clusters by answer only then."""
    if not text:
        return False
    if kind == "number":
        return any(marker.search(text) for marker in _NUMBER_MARKERS)
    return extract_choice(text) is not None


def extract_choice(text: str | None, letters: str = "ABCD") -> str | None:
    """The option letter a multiple-choice response picks; None when unclear.

    Letters count only in upper case ("the answer is a number" names no option).
    """
    if not text:
        return None
    for pattern in _CHOICE_MARKERS:
        regex = re.compile(pattern.format(letters=letters.upper()), re.MULTILINE)
        found = regex.findall(text)
        if found:
            return str(found[-1])
    return None


def extract_answer(text: str | None, kind: AnswerKind, letters: str = "ABCD") -> str | None:
    """Dispatch on the answer kind: a normalised number or an option letter."""
    if kind == "number":
        return extract_number(text)
    if kind == "choice":
        return extract_choice(text, letters)
    raise ValueError(f"unknown answer kind {kind!r}; expected 'number' or 'choice'")


def answers_match(predicted: str | None, gold: str | None, kind: AnswerKind) -> bool:
    """Whether an extracted answer equals the gold one (numbers compared after normalising)."""
    if predicted is None or gold is None:
        return False
    if kind == "number":
        a, b = normalize_number(predicted), normalize_number(gold)
        return a is not None and a == b
    return predicted.strip().upper() == gold.strip().upper()
