"""How unsure the edge model is, from the meaning classes of its k samples.

Cluster probabilities are class frequencies: token likelihoods are rarely available (not in
observation data, not from every OpenAI-compatible server), and with k samples the frequency
is the maximum-likelihood estimate. Both measures are 0 when all samples agree.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Literal

__all__ = ["Estimator", "disagreement", "largest_cluster", "semantic_entropy"]

Estimator = Literal["paper", "discrete"]


def _probabilities(labels: Sequence[str]) -> list[float]:
    if not labels:
        raise ValueError("no samples: entropy needs at least one meaning label")
    counts = Counter(labels)
    return [c / len(labels) for c in counts.values()]


def semantic_entropy(labels: Sequence[str], estimator: Estimator = "discrete") -> float:
    """Semantic entropy (nats) of one set of samples from their meaning-class labels.

    ``discrete``: -sum_c p(c) log p(c) (Kuhn et al.); ``paper``: eq. 2 of the
    Confidence-Driven Router, -(1/|C|) sum_c log p(c), which weighs rare classes more.
    Both are 0 when every sample agrees and log k when all k differ.
    """
    p = _probabilities(labels)
    if estimator == "discrete":
        return max(0.0, -sum(q * math.log(q) for q in p))
    if estimator == "paper":
        return max(0.0, -sum(math.log(q) for q in p) / len(p))
    raise ValueError(f"unknown estimator {estimator!r}; expected 'discrete' or 'paper'")


def disagreement(labels: Sequence[str]) -> float:
    """Share of samples outside the largest meaning class: 0 all agree, (k-1)/k all differ."""
    p = _probabilities(labels)
    return 1.0 - max(p)


def largest_cluster(labels: Sequence[str]) -> int:
    """Index of the self-consistency answer: the first sample of the largest meaning class
    (ties go to the class seen first, so with all samples different it is sample 0)."""
    counts = Counter(labels)
    best = max(counts.values())
    return next(i for i, label in enumerate(labels) if counts[label] == best)
