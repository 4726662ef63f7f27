"""``single-shot`` labels: one seeded observation per query-model pair; win, loss or tie."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np

from router_models.labels.base import LabelSet
from router_models.labels.capability import label_set_from_pairs, pair_observations, pair_stats
from router_models.observations import Observation

__all__ = ["draw_index", "single_shot_labels"]


def draw_index(seed: int, query_id: str, model: str, n: int) -> int:
    """A seeded index in [0, n) that depends only on (seed, query, model): stable under
    reordering or extending the data, unlike one generator consumed in file order."""
    digest = hashlib.blake2b(f"{seed}\0{query_id}\0{model}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def single_shot_labels(
    observations: Iterable[Observation],
    weak: str,
    strong: str,
    *,
    seed: int = 0,
    tie_target: float = 0.0,
    tie_margin: float = 0.0,
    costs: Mapping[str, float] | None = None,
) -> LabelSet:
    """One observation per query-model pair, drawn with ``seed``: win 1, loss 0, tie ``tie_target``.

    A tie is ``|score_strong - score_weak| <= tie_margin``; the default ``tie_target=0``
    reads a tie as "the weak model is enough" (both right: no need to pay; both wrong: paying
    does not help). Every query has weight 1.
    """
    if not 0.0 <= tie_target <= 1.0:
        raise ValueError("tie_target must be within [0, 1]")
    pairs = pair_observations(observations, weak, strong)
    target = np.empty(len(pairs))
    for i, pair in enumerate(pairs):
        s_weak = pair.weak[draw_index(seed, pair.query_id, weak, len(pair.weak))].score
        s_strong = pair.strong[draw_index(seed, pair.query_id, strong, len(pair.strong))].score
        diff = float(s_strong or 0.0) - float(s_weak or 0.0)
        target[i] = tie_target if abs(diff) <= tie_margin else float(diff > 0)
    weak_stats, strong_stats, cost_source = pair_stats(pairs, costs)
    params = {
        "seed": seed,
        "tie_target": tie_target,
        "tie_margin": tie_margin,
        "cost_source": cost_source,
    }
    return label_set_from_pairs(
        "single-shot", pairs, target, np.ones(len(pairs)), (weak_stats, strong_stats), params
    )
