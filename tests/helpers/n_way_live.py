"""Prompts and a user grader for the K-model live loop test (``DARS_SHADOW_GRADER``).

The service imports :func:`grade` by ``helpers.n_way_live:grade``. The fake upstreams answer
"Hello from <name>." (``integration.upstream_server.FakeUpstream``), so the grader can tell
who answered; it then scores the answer like a checker that knows each model's skill: every
model answers the short, easy questions right, only ``large`` the long multi-step ones. That is
a quality gap that depends on the prompt in a learnable way (the text embedding separates the
two kinds), which is what a retrained K-model router must pick up.
"""

from __future__ import annotations

__all__ = ["EASY", "HARD", "NEW_EASY", "NEW_HARD", "SOLVES", "grade", "upstream_of"]

_COUNTRIES = ("France", "Japan", "Kenya", "Peru", "Norway", "Egypt")
_WORDS = ("good morning", "thank you", "see you tomorrow")
_ANIMALS = ("a cat", "a spider", "an octopus")

EASY: tuple[str, ...] = (
    *(f"What is the capital of {country}?" for country in _COUNTRIES),
    *(f"Translate '{words}' into Spanish." for words in _WORDS),
    *(f"How many legs does {animal} have?" for animal in _ANIMALS),
    "Say hi to Alice.",
    "What color is the sky on a clear day?",
    "Name a fruit that is yellow.",
)

HARD: tuple[str, ...] = (
    *(
        f"A warehouse ships {a} boxes on Monday and each following day ships {b} more boxes "
        f"than the day before. Each box weighs {c} kg. Compute the total weight shipped from "
        "Monday to Sunday, show every intermediate step, and state the final answer in tonnes."
        for a, b, c in ((120, 15, 3), (85, 9, 7), (240, 30, 2), (64, 11, 5))
    ),
    *(
        f"Prove that for every integer n >= {n}, the sum of the first n odd numbers equals n "
        "squared. Use induction, state the base case and the inductive step explicitly, and "
        "explain why the argument covers every case."
        for n in (1, 2, 3)
    ),
    *(
        f"Write a Python function that returns the {k} largest values of a list of integers "
        "in O(n log k) time without sorting the whole list, explain why the bound holds, and "
        "give two test cases including one with repeated values."
        for k in ("three", "five", "ten")
    ),
    "Two trains leave stations 450 km apart at 9:00, one at 80 km/h and the other at 70 km/h, "
    "heading toward each other. At what time do they meet, and how far from the first "
    "station? Show the equations and check the answer.",
    "A recipe needs 2.5 cups of flour for 12 cookies. How much flour is needed for 45 cookies, "
    "and how many full 1 kg bags if one cup weighs 125 g? Show each step of the computation.",
    "Explain step by step how to compute the determinant of a 3x3 matrix by cofactor "
    "expansion, then apply it to the matrix with rows (2, 0, 1), (1, 3, 2) and (1, 1, 1).",
)

# Never sent before the promotion: the promoted router must generalise to them.
NEW_EASY = "What is the capital of Chile?"
NEW_HARD = (
    "A tank holds 900 litres and drains at 12 litres per minute while a pump refills it at 5 "
    "litres per minute. How long until it is empty, and how much water has the pump added by "
    "then? Show the equations and every intermediate step."
)

SOLVES: dict[str, frozenset[str]] = {
    "small": frozenset({"easy"}),
    "medium": frozenset({"easy"}),
    "large": frozenset({"easy", "hard"}),
}
_LEVEL = {**dict.fromkeys((*EASY, NEW_EASY), "easy"), **dict.fromkeys((*HARD, NEW_HARD), "hard")}


def upstream_of(answer: str) -> str:
    """The upstream name in a fake's answer ``Hello from <name>.``."""
    return answer.strip().removeprefix("Hello from ").removesuffix(".")


def grade(prompt: str, answer: str) -> float | None:
    """1.0 when the upstream that answered solves prompts of this level, else 0.0; None (no
    grade) for a prompt this test did not write."""
    level = _LEVEL.get(prompt)
    if level is None:
        return None
    return 1.0 if level in SOLVES.get(upstream_of(answer), frozenset()) else 0.0
