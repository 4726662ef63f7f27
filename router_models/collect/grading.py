"""Graders: turn a model's response into a score in [0, 1] against the query's reference.

Four kinds, picked per query: ``numeric`` (GSM8K-style final number), ``choice`` (MMLU-style
option letter), ``short`` (NQ-style short answer against a list of aliases: exact match,
containment or token F1) and ``judge`` (an LLM rates the response 1-10, mapped to [0, 1]).
Number and letter extraction come from :mod:`router_models.answers`, the same rules the
semantic-entropy labels use to compare answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from router_models.answers import answer_kind, answers_match, extract_choice, extract_number
from router_models.collect.client import ChatClient, CollectError, Usage
from router_models.observations import Observation

__all__ = [
    "DEFAULT_JUDGE_PROMPT",
    "GRADERS",
    "Grade",
    "GradingError",
    "JudgeGrader",
    "ShortMode",
    "choose_grader",
    "extract_short_answer",
    "grade_choice",
    "grade_numeric",
    "grade_response",
    "grade_short",
    "normalize_text",
    "parse_rating",
    "token_f1",
]

GRADERS = ("numeric", "choice", "short", "judge")
ShortMode = Literal["em", "contains", "f1"]

DEFAULT_JUDGE_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. Consider helpfulness, relevance, "
    "accuracy, depth and level of detail.{reference_block} Begin your evaluation with a short "
    "explanation. Then rate the response on a scale of 1 to 10 by strictly following this "
    'format: "[[rating]]", for example: "Rating: [[5]]".\n\n'
    "[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{response}\n"
    "[The End of Assistant's Answer]"
)
_REFERENCE_BLOCK = (
    " Compare the response with the reference answer; a response that contradicts it is "
    "wrong.\n\n[Reference Answer]\n{reference}\n"
)


class GradingError(CollectError):
    """A response could not be graded (no reference, or the judge gave no rating)."""


@dataclass(frozen=True)
class Grade:
    """A score with what it was computed from, kept in the observation's ``meta.grader``."""

    score: float
    grader: str
    extracted: str | None = None
    detail: str | None = None

    def as_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.grader, "extracted": self.extracted}
        if self.detail is not None:
            out["detail"] = self.detail
        return out


def choose_grader(obs: Observation, override: str | None = None) -> str:
    """The grader for a query: an explicit choice, ``meta.grader``, or one from the dataset."""
    name = override or obs.meta.get("grader")
    if name is None:
        kind = answer_kind(obs.dataset)
        if kind == "number":
            name = "numeric"
        elif kind == "choice":
            name = "choice"
        elif "answers" in obs.meta:
            name = "short"
        else:
            name = "judge"
    if name not in GRADERS:
        raise GradingError(f"unknown grader {name!r}; expected one of {list(GRADERS)}")
    return str(name)


def _gold(meta: Mapping[str, Any], key: str) -> Any:
    if meta.get(key) in (None, "", []):
        raise GradingError(f"the query has no reference answer (meta.{key})")
    return meta[key]


def grade_numeric(response: str, gold: str | float) -> Grade:
    predicted = extract_number(response)
    return Grade(float(answers_match(predicted, str(gold), "number")), "numeric", predicted)


def grade_choice(response: str, gold: str, letters: str = "ABCD") -> Grade:
    predicted = extract_choice(response, letters)
    return Grade(float(answers_match(predicted, gold, "choice")), "choice", predicted)


def normalize_text(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def extract_short_answer(response: str) -> str:
    """The answer part of a short reply: its first non-empty line, without an "Answer:" label."""
    for line in response.strip().splitlines():
        line = re.sub(r"^\s*(?:final\s+)?answer\s*[:：]\s*", "", line, flags=re.IGNORECASE)
        if line.strip():
            return line.strip().rstrip(".")
    return ""


def token_f1(predicted: str, gold: str) -> float:
    pred, ref = normalize_text(predicted).split(), normalize_text(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or common == 0:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _contains(response: str, alias: str) -> bool:
    words, needle = normalize_text(response).split(), normalize_text(alias).split()
    if not needle:
        return False
    return any(words[i : i + len(needle)] == needle for i in range(len(words) - len(needle) + 1))


def grade_short(response: str, aliases: list[str] | str, mode: ShortMode = "contains") -> Grade:
    """NQ-style: ``em`` on the extracted answer, ``contains`` anywhere, or best token ``f1``."""
    golds = [aliases] if isinstance(aliases, str) else list(aliases)
    extracted = extract_short_answer(response)
    if mode == "em":
        score = float(any(normalize_text(extracted) == normalize_text(g) for g in golds))
    elif mode == "contains":
        score = float(any(_contains(response, g) for g in golds))
    elif mode == "f1":
        score = max(token_f1(extracted, g) for g in golds)
    else:
        raise GradingError(f"unknown short-answer mode {mode!r}")
    return Grade(score, "short", extracted, detail=mode)


def _letters(meta: Mapping[str, Any]) -> str:
    choices = meta.get("choices")
    if isinstance(choices, list) and 2 <= len(choices) <= 10:
        return "ABCDEFGHIJ"[: len(choices)]
    return "ABCD"


def grade_response(
    grader: str, response: str, meta: Mapping[str, Any], *, short_mode: ShortMode = "contains"
) -> Grade:
    """Grade with a reference-based grader (everything but ``judge``)."""
    if grader == "numeric":
        return grade_numeric(response, _gold(meta, "answer"))
    if grader == "choice":
        return grade_choice(response, str(_gold(meta, "answer")), _letters(meta))
    if grader == "short":
        aliases = meta.get("answers") or _gold(meta, "answer")
        return grade_short(response, aliases, short_mode)
    raise GradingError(f"grader {grader!r} is not reference-based")


_RATING_PATTERNS = (
    re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"),
    re.compile(r"rating\s*[:：]?\s*\[?\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"\b(\d+(?:\.\d+)?)\s*/\s*10\b"),
)


def parse_rating(text: str) -> float | None:
    """The 1-10 rating in a judge's reply (``[[7]]``, ``Rating: 7``, ``7/10``), else None."""
    for pattern in _RATING_PATTERNS:
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            if 1.0 <= value <= 10.0:
                return value
    return None


@dataclass(kw_only=True)
class JudgeGrader:
    """LLM-as-judge: ``prompt`` has ``{question}``, ``{response}`` and ``{reference_block}``."""

    client: ChatClient
    prompt: str = DEFAULT_JUDGE_PROMPT
    max_tokens: int = 512
    attempts: int = 2

    async def grade(
        self, question: str, response: str, reference: str | None, seed: int
    ) -> tuple[Grade, Usage, float]:
        """The grade plus the judge's usage and cost (which the run's total includes)."""
        block = _REFERENCE_BLOCK.format(reference=reference) if reference else ""
        content = self.prompt.format(question=question, response=response, reference_block=block)
        messages = [{"role": "user", "content": content}]
        prompt_tokens = completion_tokens = 0
        cost = 0.0
        for attempt in range(self.attempts):
            completion = await self.client.chat(
                messages,
                temperature=0.0 if attempt == 0 else 0.7,  # a retry must be able to differ
                max_tokens=self.max_tokens,
                seed=seed + attempt,
            )
            prompt_tokens += completion.usage.prompt_tokens
            completion_tokens += completion.usage.completion_tokens
            cost += completion.cost
            rating = parse_rating(completion.text)
            if rating is not None:
                grade = Grade((rating - 1.0) / 9.0, "judge", f"{rating:g}")
                return grade, Usage(prompt_tokens, completion_tokens), cost
        raise GradingError(f"the judge gave no 1-10 rating in {self.attempts} replies")
