"""The cascade's decision: keep the edge model's self-consistent answer, or escalate.

One threshold test lives here, so the trainer's evaluation and the service decide alike:
escalate when the uncertainty is strictly above the threshold (threshold 0 on entropy =
escalate on any disagreement; a negative threshold escalates everything).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from router_models.cascade.uncertainty import (
    Estimator,
    disagreement,
    largest_cluster,
    semantic_entropy,
)

__all__ = ["CascadeDecision", "Signal", "decide", "escalates"]

Signal = Literal["entropy", "disagreement"]


@dataclass(frozen=True)
class CascadeDecision:
    """What the cascade concluded from k samples (enough to log, report and act on)."""

    labels: tuple[str, ...]
    entropy: float
    disagreement: float
    representative: int
    escalate: bool
    signal: Signal
    threshold: float

    @property
    def k(self) -> int:
        """How many edge samples the decision used."""
        return len(self.labels)

    @property
    def n_clusters(self) -> int:
        """How many distinct meanings the samples had."""
        return len(set(self.labels))


def escalates(uncertainty: float, threshold: float) -> bool:
    """The threshold test: escalate when ``uncertainty`` is strictly above ``threshold``."""
    if math.isnan(uncertainty) or math.isnan(threshold):
        raise ValueError("uncertainty and threshold must be numbers, not NaN")
    return uncertainty > threshold


def decide(
    labels: Sequence[str],
    threshold: float,
    *,
    signal: Signal = "entropy",
    estimator: Estimator = "discrete",
) -> CascadeDecision:
    """Decide on one query from its samples' meaning labels (see :mod:`.meaning`).

    ``signal`` picks the uncertainty compared with ``threshold``: semantic entropy (nats) or
    the disagreement rate. The representative is the self-consistency answer either way.
    """
    if signal not in ("entropy", "disagreement"):
        raise ValueError(f"unknown signal {signal!r}; expected 'entropy' or 'disagreement'")
    entropy = semantic_entropy(labels, estimator)
    rate = disagreement(labels)
    value = entropy if signal == "entropy" else rate
    return CascadeDecision(
        labels=tuple(labels),
        entropy=entropy,
        disagreement=rate,
        representative=largest_cluster(labels),
        escalate=escalates(value, threshold),
        signal=signal,
        threshold=threshold,
    )
