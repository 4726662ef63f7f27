"""Meaning-preserving query rewrites (the input side of DARS) and the checks that guard them.

DARS asks how a model does on a query *and its paraphrases*; a "paraphrase" that changes a
number, drops a name or loses an answer option is a different question, and its outcomes would
poison the label. So every rewrite from the rewriter model must pass cheap, explainable checks
before it becomes a variant: same numbers, same named entities, same answer options, a sane
length, not a copy, and sentence-embedding similarity to the original above a threshold.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router_models.collect.client import ChatClient, Completion, Usage

__all__ = [
    "REWRITE_EXAMPLES",
    "REWRITE_SYSTEM_PROMPT",
    "RewriteChecker",
    "RewriteResult",
    "Rewriter",
    "answer_options",
    "clean_rewrite",
    "join_options",
    "named_entities",
    "numbers",
    "reason_kind",
    "split_options",
]

REWRITE_SYSTEM_PROMPT = (
    "You paraphrase questions. Reword the question so that it asks exactly the same thing: "
    "keep every number, name and detail, change only the wording and sentence structure. "
    "Never answer or solve it. Reply with the reworded question only."
)

# Two worked examples (a word problem, a trivia question) sent as chat turns before the
# query: small rewriter models otherwise tend to answer or summarise instead of rewording.
REWRITE_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Tom has 3 apples and buys 5 more at $2 each. How many apples does Tom have now?",
        "Tom starts with 3 apples and then purchases 5 more, paying $2 for each. "
        "What is the number of apples Tom has now?",
    ),
    (
        "who played the lead role in the movie titanic",
        "which actor starred as the main character in the film titanic",
    ),
)

_NUMBER_WORDS: dict[str, str] = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
    "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40",
    "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "dozen": "12",
}  # fmt: skip

# Capitalised words that are not names: function words, question words, pronouns, months are
# kept (they are entities for our purpose).
_NOT_ENTITY_WORDS = """
    a an the and or but if then so because as at by for from in into of on onto to with
    without over under after before during since until while about above below between each
    every all any some no not this that these those there here what which who whom whose when
    where why how is are was were be been being do does did has have had will would can could
    should shall may might must i you he she it we they me him her us them my your his its our
    their mine yours ours theirs find calculate compute determine given suppose assume let
    answer question please true false yes also one two three four five six seven eight nine
    ten first second third next last total altogether"""
_NOT_ENTITIES = frozenset(_NOT_ENTITY_WORDS.split())

_NUMBER_RE = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?")
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'’\-]*")
_OPTION_RE = re.compile(r"^\s*\(?([A-J])[.)]\s+(.*\S)\s*$", re.MULTILINE)
_PREFIX_RE = re.compile(
    r"^\s*(?:rewritten question|rewrite|paraphrase|question)\s*\d*\s*[:：-]\s*", re.IGNORECASE
)


def _canonical_number(token: str) -> str:
    value = token.replace(",", "").lstrip("+")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value or "0"


def numbers(text: str) -> set[str]:
    """Numbers in ``text``, canonical (``1,000.50`` -> ``1000.5``), number words included."""
    found = {_canonical_number(m.group()) for m in _NUMBER_RE.finditer(text)}
    for word in _WORD_RE.findall(text.lower()):
        if word in _NUMBER_WORDS:
            found.add(_NUMBER_WORDS[word])
    return found


def named_entities(text: str) -> set[str]:
    """Capitalised words that are not function words: a dependency-free stand-in for NER."""
    out = set()
    for word in _WORD_RE.findall(text):
        base = re.sub(r"['’]s$", "", word)
        if base[:1].isupper() and base.lower() not in _NOT_ENTITIES and len(base) > 1:
            out.add(base)
    return out


def answer_options(text: str) -> dict[str, str]:
    """Lettered answer options (``A. foo`` / ``(B) bar``) when there are at least two."""
    options = {m.group(1): m.group(2) for m in _OPTION_RE.finditer(text)}
    return options if len(options) >= 2 else {}


def split_options(text: str) -> tuple[str, str]:
    """Split a multiple-choice prompt into its stem and the block of options after it.

    The rewriter only ever sees the stem; the options are re-attached verbatim.
    """
    if not answer_options(text):
        return text, ""
    first = next(_OPTION_RE.finditer(text))
    return text[: first.start()].rstrip(), text[first.start() :].strip("\n")


def join_options(stem: str, options: str) -> str:
    return f"{stem}\n{options}" if options else stem


def clean_rewrite(text: str) -> str:
    """Strip the wrappers small models put around a rewrite: fences, quotes, labels."""
    previous = None
    while text != previous:  # wrappers nest ("Rewrite: \"...\"" inside a fence)
        previous = text
        text = re.sub(r"^```\w*\s*|\s*```$", "", text.strip()).strip()
        text = _PREFIX_RE.sub("", text).strip()
        if len(text) >= 2 and (text[0], text[-1]) in (('"', '"'), ("'", "'"), ("“", "”")):
            text = text[1:-1].strip()
    return text


def reason_kind(reason: str) -> str:
    """The check a rejection reason names, without its details ("length ratio 0.2" -> ...)."""
    match = re.match(r"[a-z][a-z ]*?(?=\s*(?:[\d(\[<]|$))", reason)
    return match.group() if match else reason


def _normalise(text: str) -> str:
    """Lower case, words only: "Who won?" and "who won" are the same text."""
    return " ".join(re.findall(r"\w+", text.lower()))


def _contains_word(haystack: str, word: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(word.lower())}(?![\w])", haystack) is not None


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return np.asarray(a @ b.T)


@dataclass(frozen=True, kw_only=True)
class RewriteChecker:
    """Reasons to reject a rewrite; an empty list means it is accepted.

    ``embed`` maps texts to embeddings (rows); ``None`` skips the similarity check.
    """

    embed: Callable[[list[str]], np.ndarray] | None = None
    min_similarity: float = 0.8
    min_length_ratio: float = 0.5
    max_length_ratio: float = 2.0

    def reasons(self, original: str, candidate: str, similarity: float | None = None) -> list[str]:
        """Checks that need no model, plus the similarity when it is given."""
        found: list[str] = []
        if not candidate.strip():
            return ["empty"]
        if _normalise(candidate) == _normalise(original):
            found.append("unchanged")
        ratio = len(candidate) / max(1, len(original))
        if not self.min_length_ratio <= ratio <= self.max_length_ratio:
            found.append(f"length ratio {ratio:.2f}")
        if numbers(candidate) != numbers(original):
            missing = sorted(numbers(original) - numbers(candidate))
            added = sorted(numbers(candidate) - numbers(original))
            found.append(f"numbers changed (missing {missing}, added {added})")
        lowered = candidate.lower()
        dropped = sorted(e for e in named_entities(original) if not _contains_word(lowered, e))
        if dropped:
            found.append(f"named entities dropped {dropped}")
        lowered_original = original.lower()
        added = sorted(
            e for e in named_entities(candidate) if not _contains_word(lowered_original, e)
        )
        if added:
            found.append(f"named entities added {added}")
        missing_options = [
            letter
            for letter, option in answer_options(original).items()
            if _normalise(option) not in _normalise(candidate)
        ]
        if missing_options:
            found.append(f"answer options dropped {missing_options}")
        if similarity is not None and similarity < self.min_similarity:
            found.append(f"similarity {similarity:.3f} < {self.min_similarity}")
        return found

    def check(self, original: str, candidates: Sequence[str]) -> list[list[str]]:
        """Reasons for each candidate, similarity included (one batched embedding call)."""
        sims: list[float | None] = [None] * len(candidates)
        if self.embed is not None and candidates:
            vectors = np.asarray(self.embed([original, *candidates]), dtype=np.float64)
            sims = [float(s) for s in _cosine(vectors[:1], vectors[1:])[0]]
        return [self.reasons(original, c, s) for c, s in zip(candidates, sims, strict=True)]


@dataclass
class RewriteResult:
    """Accepted rewrites (in order), rejected ones with reasons, and what they cost."""

    accepted: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def add_usage(self, usage: Usage, cost: float) -> None:
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cost += cost


@dataclass(kw_only=True)
class Rewriter:
    """Asks the rewriter model for up to ``k`` accepted rewrites of one query.

    One call per candidate (multi-line questions survive, no list parsing), each with its own
    seed; ``attempts`` bounds the calls at ``k * attempts``. A query whose rewrites all fail
    still has variant 0, the original.
    """

    client: ChatClient
    checker: RewriteChecker
    k: int = 2
    temperature: float = 0.7
    max_tokens: int = 256
    attempts: int = 2
    system_prompt: str = REWRITE_SYSTEM_PROMPT
    examples: tuple[tuple[str, str], ...] = REWRITE_EXAMPLES

    async def rewrite(self, text: str, seeds: Callable[[int], int]) -> RewriteResult:
        """``seeds(i)`` gives the seed of the i-th candidate call."""
        result = RewriteResult()
        stem, options = split_options(text)
        calls = 0
        while len(result.accepted) < self.k and calls < self.k * self.attempts:
            wanted = min(self.k - len(result.accepted), self.k * self.attempts - calls)
            completions = await asyncio.gather(
                *(self._one(stem, seeds(calls + i)) for i in range(wanted))
            )
            calls += wanted
            candidates = []
            for completion in completions:
                result.add_usage(completion.usage, completion.cost)
                candidates.append(join_options(clean_rewrite(completion.text), options))
            verdicts = await asyncio.to_thread(self.checker.check, text, candidates)
            seen = {_normalise(t) for t in result.accepted}
            for candidate, reasons in zip(candidates, verdicts, strict=True):
                if not reasons and _normalise(candidate) in seen:
                    reasons = ["duplicate of another rewrite"]
                if reasons:
                    result.rejected.append({"text": candidate, "reasons": reasons})
                elif len(result.accepted) < self.k:
                    result.accepted.append(candidate)
                    seen.add(_normalise(candidate))
        return result

    async def _one(self, stem: str, seed: int) -> Completion:
        messages = [{"role": "system", "content": self.system_prompt}]
        for question, rewrite in self.examples:
            messages.append({"role": "user", "content": question})
            messages.append({"role": "assistant", "content": rewrite})
        messages.append({"role": "user", "content": stem})
        return await self.client.chat(
            messages, temperature=self.temperature, max_tokens=self.max_tokens, seed=seed
        )
