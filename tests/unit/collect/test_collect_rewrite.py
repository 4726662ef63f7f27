"""Rewrite checks reject planted bad rewrites; the rewriter keeps only checked ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from fake_llm_server import FakeLLM

from router_models.collect.client import ChatClient, Endpoint, RetryPolicy
from router_models.collect.rewrite import (
    RewriteChecker,
    Rewriter,
    answer_options,
    clean_rewrite,
    named_entities,
    numbers,
    split_options,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

GSM = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' "
    "market daily for $2 per fresh duck egg. How much in dollars does she make every day?"
)
GOOD_GSM = (
    "Every day Janet's ducks lay 16 eggs. Each morning she eats 3 of them for breakfast and "
    "uses 4 to bake muffins for her friends. The rest she sells daily at the farmers' market "
    "for $2 per fresh duck egg. How many dollars does she earn each day?"
)
MMLU = "Which planet is known as the Red Planet?\nA. Venus\nB. Mars\nC. Jupiter\nD. Saturn\nAnswer:"
NQ = "who wrote he ain't heavy he's my brother lyrics"

CHECKER = RewriteChecker()


def test_accepts_a_faithful_rewrite() -> None:
    assert CHECKER.reasons(GSM, GOOD_GSM) == []
    assert (
        CHECKER.reasons(NQ, "who is the author of the lyrics of he ain't heavy he's my brother")
        == []
    )


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (GOOD_GSM.replace("16 eggs", "15 eggs"), "numbers changed"),
        (GOOD_GSM.replace("uses 4", "uses 5"), "numbers changed"),
        (GOOD_GSM.replace("for $2 per", "for $2.50 per"), "numbers changed"),
        (GOOD_GSM.replace("Janet's ducks", "her ducks"), "named entities dropped ['Janet']"),
        (GOOD_GSM.replace("Every day Janet's", "Every day Mary's"), "named entities"),
        (GSM, "unchanged"),
        (GSM.upper().lower() + "  ", "unchanged"),
        ("How much does Janet make?", "length ratio"),
        ("", "empty"),
    ],
)
def test_rejects_planted_bad_rewrites(bad: str, reason: str) -> None:
    reasons = CHECKER.reasons(GSM, bad)
    assert any(reason in r for r in reasons), reasons


def test_rejects_dropped_answer_options() -> None:
    dropped = MMLU.replace("C. Jupiter\n", "")
    reasons = CHECKER.reasons(
        MMLU, "What planet is called the Red Planet?\n" + dropped.split("\n", 1)[1]
    )
    assert any("answer options dropped ['C']" in r for r in reasons), reasons
    kept = "What planet do people call the Red Planet?\n" + MMLU.split("\n", 1)[1]
    assert CHECKER.reasons(MMLU, kept) == []


def test_rejects_hallucinated_entity() -> None:
    reasons = CHECKER.reasons(NQ, 'Who wrote "He Ain\'t Heavy" by The Beatles?')
    assert any("named entities added ['Beatles']" in r for r in reasons), reasons


def test_low_embedding_similarity_is_rejected(encoder: SentenceTransformer) -> None:
    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(encoder.encode(texts, normalize_embeddings=True))

    checker = RewriteChecker(embed=embed, min_similarity=0.8)
    # Same numbers and names, different question: only the similarity check can catch it.
    off_topic = (
        "Janet's 16 ducks, three cats and four dogs visit the farmers' market, where a ride "
        "costs $2 for every child and every adult. What colour is the roof of the big old "
        "market hall next to the station, and who painted it?"
    )
    good, bad = checker.check(GSM, [GOOD_GSM, off_topic])
    assert good == []
    assert len(bad) == 1 and bad[0].startswith("similarity"), bad


def test_helpers() -> None:
    assert numbers("It costs $1,000.50, two items and 3.0 kg") == {"1000.5", "2", "3"}
    assert named_entities("Janet's friend Bob went to Paris. The day after, she") == {
        "Janet",
        "Bob",
        "Paris",
    }
    assert answer_options(MMLU) == {"A": "Venus", "B": "Mars", "C": "Jupiter", "D": "Saturn"}
    assert answer_options("Plan A. then B") == {}
    stem, options = split_options(MMLU)
    assert stem == "Which planet is known as the Red Planet?"
    assert options.startswith("A. Venus") and options.endswith("Answer:")
    assert clean_rewrite('```\n"Rewritten question: Who won?"\n```') == "Who won?"


async def test_rewriter_keeps_checked_rewrites_and_reattaches_options(fake_llm: FakeLLM) -> None:
    stems = iter(
        [
            "Which planet is called the Red Planet?",  # good
            "The answer is Mars.",  # answers instead of rewording: too short
            "Which planet is called the Red Planet?",  # duplicate of the first
            "What planet do people call the Red Planet?",  # good
        ]
    )
    fake_llm.reply = lambda body: next(stems)
    async with ChatClient(
        Endpoint(name="rw", base_url=fake_llm.base_url), retry=RetryPolicy(base_delay=0.01)
    ) as client:
        rewriter = Rewriter(client=client, checker=RewriteChecker(), k=2, attempts=3)
        result = await rewriter.rewrite(MMLU, seeds=lambda i: 100 + i)
    assert result.accepted == [
        "Which planet is called the Red Planet?\n" + split_options(MMLU)[1],
        "What planet do people call the Red Planet?\n" + split_options(MMLU)[1],
    ]
    assert [r["reasons"][0] for r in result.rejected][-1] == "duplicate of another rewrite"
    assert len(result.rejected) == 2
    # The rewriter only sees the stem, after the worked examples; each call has its own seed.
    last = fake_llm.bodies[0]["messages"][-1]["content"]
    assert last == "Which planet is known as the Red Planet?"
    assert sorted(b["seed"] for b in fake_llm.bodies) == [100, 101, 102, 103]
    assert result.completion_tokens > 0
