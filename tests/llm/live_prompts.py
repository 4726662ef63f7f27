"""Real prompts with gold answers for the live loop's real-model test, and their grader.

Copied verbatim from the project's prompt sets (``../shared/data/prompts-*.jsonl.gz``; the test
does not need that directory):

- GSM8K test (openai/grade-school-math @ 3101c7d5, MIT): the final number.
- NQ-open dev (google-research-datasets/natural-questions, CC BY-SA 3.0): answer aliases.
- MMLU test, high-school geography (hendrycks/test @ 785eba57, MIT): the option letter.

Why MMLU next to GSM8K and NQ-open: at the few tokens a CI test can afford, SmolLM2-135M and
Qwen2.5-Coder-0.5B fail the GSM8K question alike and are alike on the NQ ones (both right on
one, both wrong on the other), so the router has nothing to learn there. These five MMLU
questions are ones Qwen answered right and SmolLM2 wrong in a probe (two seeds each): the
quality gap a promotion needs. ``grade`` is the user grader (``DARS_SHADOW_GRADER``) that scores
an answer against the gold with ``router_models.collect.grading`` (numbers and letters read by
``router_models.answers``).
"""

from __future__ import annotations

from dataclasses import dataclass

from router_models.collect.grading import grade_choice, grade_numeric, grade_short

__all__ = ["PROMPTS", "LivePrompt", "grade", "live_prompt"]


@dataclass(frozen=True)
class LivePrompt:
    """One real prompt: its source id, the text the client sends and its gold answer(s)."""

    source_id: str
    dataset: str  # gsm8k, nq-open or mmlu
    prompt: str
    gold: tuple[str, ...]
    system: str
    max_tokens: int


_GSM8K = "Solve the problem briefly. End with 'The answer is N.'"
_NQ = "Answer in a few words."
_MMLU = "Answer with the letter of the correct option only."

PROMPTS: tuple[LivePrompt, ...] = (
    LivePrompt(
        "nq-open-dev-0000", "nq-open", "when was the last time anyone was on the moon",
        ("14 December 1972 UTC", "December 1972"), _NQ, 12,
    ),
    LivePrompt(
        "nq-open-dev-0019", "nq-open", "what age do you need to be to buy a bb gun",
        ("18",), _NQ, 12,
    ),
    LivePrompt(
        "gsm8k-test-00462", "gsm8k",
        "Ali had $21. Leila gave him half of her $100. How much does Ali have now?",
        ("71",), _GSM8K, 16,
    ),
    LivePrompt(
        "mmlu-hendrycks-test-high_school_geography-0012", "mmlu",
        "What is the most rapidly growing religion in the United States today?\nA. Islam\n"
        "B. Christianity\nC. Hinduism\nD. Buddhism\nAnswer:",
        ("A",), _MMLU, 4,
    ),
    LivePrompt(
        "mmlu-hendrycks-test-high_school_geography-0018", "mmlu",
        "In which urban US setting below would you expect to find planned communities?\n"
        "A. Ghettos\nB. Suburbs\nC. CBDs\nD. Transition zones\nAnswer:",
        ("B",), _MMLU, 4,
    ),
    LivePrompt(
        "mmlu-hendrycks-test-high_school_geography-0025", "mmlu",
        "What is the chief religion practiced in Europe?\nA. Christianity\nB. Islam\n"
        "C. Hinduism\nD. Animism\nAnswer:",
        ("A",), _MMLU, 4,
    ),
    LivePrompt(
        "mmlu-hendrycks-test-high_school_geography-0029", "mmlu",
        "Which type of economic activity is most closely tied to the physical environment?\n"
        "A. Primary\nB. Secondary\nC. Tertiary\nD. Quaternary\nAnswer:",
        ("A",), _MMLU, 4,
    ),
    LivePrompt(
        "mmlu-hendrycks-test-high_school_geography-0024", "mmlu",
        "When a country combines its religion with its government, it is called a\n"
        "A. dictatorship.\nB. theocracy.\nC. democracy.\nD. autocracy.\nAnswer:",
        ("B",), _MMLU, 4,
    ),
)  # fmt: skip

_BY_PROMPT = {p.prompt: p for p in PROMPTS}
_BY_ID = {p.source_id: p for p in PROMPTS}


def live_prompt(source_id: str) -> LivePrompt:
    """The fixture's prompt with this source id (``gsm8k-test-00462``, ...)."""
    return _BY_ID[source_id]


def grade(query: str, answer: str) -> float | None:
    """1.0 when ``answer`` has the gold answer of ``query`` (the router's query text, i.e. the
    user message), else 0.0; None (no grade) for a query that is not in the fixture."""
    item = _BY_PROMPT.get(query)
    if item is None:
        return None
    if item.dataset == "gsm8k":
        return grade_numeric(answer, item.gold[0]).score
    if item.dataset == "mmlu":
        return grade_choice(answer, item.gold[0]).score
    return grade_short(answer, list(item.gold)).score
