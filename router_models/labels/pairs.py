"""Labels by scheme name, model choice by mean quality, and several model pairs stacked."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from router_models.labels.base import STAT_FIELDS, LabelSet, ModelPair, ModelStats
from router_models.labels.dars import dars_labels
from router_models.labels.entropy import semantic_entropy_labels
from router_models.labels.single_shot import single_shot_labels
from router_models.observations import Observation, group_by_query

__all__ = [
    "PAIR_MAPPINGS",
    "SCHEMES",
    "choose_pair",
    "concat_label_sets",
    "make_labels",
    "model_means",
    "model_pairs",
    "multi_pair_labels",
]

SCHEMES: tuple[str, ...] = ("single-shot", "dars", "semantic-entropy")
PAIR_MAPPINGS: tuple[str, ...] = ("extreme", "all")


def make_labels(
    observations: Iterable[Observation], weak: str, strong: str, scheme: str, **params: Any
) -> LabelSet:
    """Labels by scheme name (one of :data:`SCHEMES`); ``params`` go to the scheme's function."""
    builders: dict[str, Callable[..., LabelSet]] = {
        "single-shot": single_shot_labels,
        "dars": dars_labels,
        "semantic-entropy": semantic_entropy_labels,
    }
    if scheme not in builders:
        raise ValueError(f"unknown label scheme {scheme!r}; choose from {list(SCHEMES)}")
    return builders[scheme](observations, weak, strong, **params)


def model_means(observations: Iterable[Observation]) -> dict[str, float]:
    """Mean quality per model: the mean over queries of its per-query mean score."""
    per_model: dict[str, list[float]] = {}
    for by_model in group_by_query(observations).values():
        for model, rows in by_model.items():
            per_model.setdefault(model, []).append(float(np.mean([o.score for o in rows])))
    return {model: float(np.mean(values)) for model, values in sorted(per_model.items())}


def choose_pair(
    observations: Iterable[Observation], weak: str | None = None, strong: str | None = None
) -> tuple[str, str]:
    """(weak, strong): the given names, or the lowest / highest mean-quality model."""
    means = model_means(observations)
    for name in (weak, strong):
        if name is not None and name not in means:
            raise ValueError(f"model {name!r} not in the observations; have {sorted(means)}")
    ranked = sorted(means, key=lambda m: means[m])
    if weak is None:
        weak = next(m for m in ranked if m != strong)
    if strong is None:
        strong = next(m for m in reversed(ranked) if m != weak)
    return weak, strong


def model_pairs(
    observations: Iterable[Observation], mapping: str = "all", min_gap: float = 0.0
) -> list[ModelPair]:
    """(weak, strong) training pairs ordered by mean quality.

    ``extreme`` = the weakest vs the strongest model (:func:`choose_pair`); ``all`` = every
    pair whose strong model's mean quality is higher by at least ``min_gap`` (and strictly
    higher), or the extreme pair when none is.
    """
    means = model_means(observations)
    ranked = sorted(means, key=lambda m: means[m])
    if len(ranked) < 2:
        raise ValueError("the observations need at least two models to form a pair")
    if mapping == "extreme":
        return [(ranked[0], ranked[-1])]
    if mapping == "all":
        pairs = [
            (a, b)
            for i, a in enumerate(ranked)
            for b in ranked[i + 1 :]
            if means[b] > means[a] and means[b] - means[a] >= min_gap
        ]
        return pairs or [(ranked[0], ranked[-1])]
    raise ValueError(f"unknown pair mapping {mapping!r}; choose from {list(PAIR_MAPPINGS)}")


def concat_label_sets(sets: Sequence[LabelSet]) -> LabelSet:
    """Stack label sets of one scheme (e.g. several model pairs); a query may repeat.

    Model names of the result are the distinct names joined with ``+``; every row keeps its
    pair (``row_pairs``), and the result scores the first set's scored pair.
    """
    if not sets:
        raise ValueError("no label sets to concatenate")
    if len({s.scheme for s in sets}) != 1:
        raise ValueError("label sets of different schemes cannot be stacked")

    def names(attr: str) -> str:
        return "+".join(dict.fromkeys(getattr(s, attr) for s in sets))

    def stats(side: str) -> ModelStats:
        return ModelStats(
            *(np.concatenate([getattr(getattr(s, side), n) for s in sets]) for n in STAT_FIELDS)
        )

    row_pairs = tuple(p for s in sets for p in s.pair_of_rows())
    distinct = dict.fromkeys(p for s in sets for p in s.distinct_pairs())
    return LabelSet(
        scheme=sets[0].scheme,
        weak_model=names("weak_model"),
        strong_model=names("strong_model"),
        query_ids=tuple(q for s in sets for q in s.query_ids),
        prompts=tuple(p for s in sets for p in s.prompts),
        datasets=tuple(d for s in sets for d in s.datasets),
        target=np.concatenate([s.target for s in sets]),
        weight=np.concatenate([s.weight for s in sets]),
        weak=stats("weak"),
        strong=stats("strong"),
        params={**sets[0].params, "pairs": [list(p) for p in distinct]},
        extra={
            name: np.concatenate([s.extra[name] for s in sets])
            for name in sets[0].extra
            if all(name in s.extra for s in sets)
        },
        row_pairs=row_pairs,
        score_pair=sets[0].scored_pair(),
    )


def multi_pair_labels(
    observations: Iterable[Observation],
    scheme: str,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    mapping: str = "all",
    min_gap: float = 0.0,
    **params: Any,
) -> LabelSet:
    """Labels from several (weak, strong) pairs stacked, for training data whose models
    differ from the deployed pair.

    ``pairs=None`` takes :func:`model_pairs` (``mapping``, ``min_gap``) and scores the
    weakest vs the strongest model; given ``pairs``, the first one is scored.
    """
    rows = list(observations)
    score_pair = None
    if pairs is None:
        pairs = model_pairs(rows, mapping, min_gap)
        score_pair = model_pairs(rows, "extreme")[0]
    stacked = concat_label_sets([make_labels(rows, w, s, scheme, **params) for w, s in pairs])
    return stacked if score_pair is None else replace(stacked, score_pair=score_pair)
