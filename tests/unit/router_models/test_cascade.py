"""The cascade's decision library: meaning classes, entropy, self-consistency, threshold, cost."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest

from router_models.cascade import (
    PriceTable,
    cascade_cost,
    decide,
    disagreement,
    embedding_labels,
    escalates,
    greedy_clusters,
    largest_cluster,
    meaning_labels,
    router_cost,
    semantic_entropy,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PRICES = PriceTable(edge=0.05, cloud=1.0)


def test_answers_extracted_from_texts_group_equal_numbers() -> None:
    texts = ["She makes 9 * 2 = 18 dollars.", "#### 18", "The answer is 20.", "no idea"]
    labels = meaning_labels(texts, kind="number")
    assert labels[0] == labels[1]
    assert len(set(labels)) == 4 - 1  # the unreadable one is a class of its own
    assert labels[3].startswith("unparsed:")


def test_given_answers_compare_numbers_after_normalising() -> None:
    labels = meaning_labels(answers=["18.0", "$18", "18", None, None], kind="number")
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] != labels[4]  # two unreadable samples do not agree with each other


def test_option_letters_group_by_choice() -> None:
    labels = meaning_labels(["The answer is B.", "(B)", "Answer: C"], kind="choice")
    assert labels[0] == labels[1] != labels[2]


def test_text_fallback_ignores_case_and_whitespace() -> None:
    labels = meaning_labels(["Paris ", "paris", "Lyon"])
    assert labels[0] == labels[1] != labels[2]


def test_embedding_clusters_by_meaning(encoder: SentenceTransformer) -> None:
    texts = [
        "The capital of France is Paris.",
        "Paris is the capital city of France.",
        "Bananas are a yellow tropical fruit.",
    ]
    vectors = np.asarray(encoder.encode(texts))
    labels = meaning_labels(texts, embeddings=vectors, similarity=0.8)
    assert labels[0] == labels[1] != labels[2]
    assert len(set(embedding_labels(vectors, similarity=0.999))) == 3


def test_embedding_labels_reject_a_flat_vector() -> None:
    with pytest.raises(ValueError, match="2-D"):
        embedding_labels(np.ones(4))


def test_greedy_clusters_are_prefix_stable() -> None:
    values = [1, 2, 1, 3, 2, 1]
    full = greedy_clusters(len(values), lambda i, j: values[i] == values[j])
    assert full == [0, 1, 0, 2, 1, 0]
    for k in range(1, len(values)):
        assert greedy_clusters(k, lambda i, j: values[i] == values[j]) == full[:k]


@pytest.mark.parametrize("estimator", ["discrete", "paper"])
def test_entropy_is_zero_when_all_agree_and_log_k_when_all_differ(estimator: str) -> None:
    assert semantic_entropy(["a"] * 5, estimator) == 0.0  # type: ignore[arg-type]
    for k in (2, 3, 7):
        labels = [str(i) for i in range(k)]
        assert semantic_entropy(labels, estimator) == pytest.approx(math.log(k))  # type: ignore[arg-type]


def test_entropy_estimators_on_a_known_split() -> None:
    labels = ["a", "a", "a", "b"]
    assert semantic_entropy(labels) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    )
    assert semantic_entropy(labels, "paper") == pytest.approx(
        -(math.log(0.75) + math.log(0.25)) / 2
    )
    with pytest.raises(ValueError, match="estimator"):
        semantic_entropy(labels, "nats")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no samples"):
        semantic_entropy([])


def test_disagreement_rate() -> None:
    assert disagreement(["x", "x", "x"]) == 0.0
    assert disagreement(["x", "y", "z", "w"]) == pytest.approx(0.75)
    assert disagreement(["x", "y", "x", "x"]) == pytest.approx(0.25)


def test_self_consistency_pick() -> None:
    assert largest_cluster(["20", "18", "18"]) == 1
    assert largest_cluster(["a", "b", "c"]) == 0  # all differ: the first sample
    assert largest_cluster(["a", "b", "b", "a"]) == 0  # tie: the class seen first


def test_decision_against_the_threshold() -> None:
    agree = decide(["18", "18", "18"], threshold=0.0)
    assert not agree.escalate and agree.entropy == 0.0 and agree.k == 3
    split = decide(["18", "20", "18"], threshold=0.0)
    assert split.escalate and split.representative == 0 and split.n_clusters == 2
    at = decide(["1", "2"], threshold=math.log(2))
    assert not at.escalate  # strictly above escalates; equal keeps
    assert decide(["1", "1"], threshold=-1.0).escalate  # negative threshold: always escalate
    by_rate = decide(["1", "1", "1", "2"], threshold=0.3, signal="disagreement")
    assert not by_rate.escalate and by_rate.disagreement == pytest.approx(0.25)
    assert decide(["1", "1", "1", "2"], threshold=0.2, signal="disagreement").escalate


def test_decision_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="signal"):
        decide(["a"], 0.0, signal="votes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        escalates(math.nan, 0.1)


def test_cost_accounting() -> None:
    assert router_cost(0.0, PRICES) == pytest.approx(0.05)
    assert router_cost(0.3, PRICES) == pytest.approx(0.7 * 0.05 + 0.3)
    assert cascade_cost(3, 0.3, PRICES) == pytest.approx(3 * 0.05 + 0.3)
    # A router in front sent 20% straight to the cloud: those skip the three samples.
    assert cascade_cost(3, 0.5, PRICES, gated_share=0.2) == pytest.approx(0.8 * 0.15 + 0.5)
    assert cascade_cost(1, 1.0, PRICES) == pytest.approx(1.05)
    with pytest.raises(ValueError, match="k >= 1"):
        cascade_cost(0, 0.5, PRICES)
    with pytest.raises(ValueError, match="share"):
        router_cost(1.5, PRICES)
    with pytest.raises(ValueError, match="gated_share"):
        cascade_cost(2, 0.1, PRICES, gated_share=0.2)
    with pytest.raises(ValueError, match="non-negative"):
        PriceTable(edge=-1.0, cloud=1.0)
