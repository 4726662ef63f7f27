"""The edge model's k samples per query, as the cascade experiment sees them.

Observation rows of one (edge, cloud) pair become, per query, the edge samples in the order a
cascade would draw them, and their meaning labels under each clustering candidate:

- **orders**: ``decodes`` = stochastic decodes of one prompt (the best-ranked prompt variant
  that has several), what a served cascade does with k seeds; ``variants`` = round-robin over
  the prompt variants (best variant decode 0, next variant decode 0, ...), the only order
  where a source has one greedy decode per variant (Re2). Variants are ranked by the edge
  model's mean score on the train split (:func:`variant_ranking`).
- **clusterings**: ``auto`` = the final answer where the task has one (the source's own
  parsed prediction ``meta.pred`` when present, so the class and the score agree; else
  :mod:`router_models.answers`), otherwise embedding clusters at 0.9; ``embedding@s`` =
  embedding clusters at cosine ``s`` for every task; ``text`` = identical normalised text.

Greedy clustering is prefix-stable (a sample's class depends only on earlier samples), so the
labels of the full order serve every k by taking a prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from router_models.answers import answer_kind, extract_answer
from router_models.cascade import embedding_labels, meaning_labels
from router_models.labels import QueryPair
from router_models.observations import Observation

__all__ = [
    "ORDERS",
    "EdgeQuery",
    "LabelTable",
    "Sample",
    "edge_queries",
    "embed_samples",
    "label_table",
    "needs_embeddings",
    "order_samples",
    "sample_labels",
    "variant_ranking",
]

ORDERS: tuple[str, ...] = ("decodes", "variants")
EmbedTexts = Callable[[list[str]], object]
# (order, clustering) -> per query: (ordered samples, their meaning labels)
LabelTable = Mapping[tuple[str, str], Sequence[tuple[tuple["Sample", ...], Sequence[str]]]]


@dataclass(frozen=True)
class Sample:
    """One edge observation: its text, extracted answer and score."""

    variant_id: int
    sample_id: int
    text: str
    answer: str | None
    score: float


@dataclass(frozen=True)
class EdgeQuery:
    """The edge model's samples of one query, sorted by (variant, decode)."""

    query_id: str
    dataset: str
    prompt: str
    samples: tuple[Sample, ...]


def _answer(obs: Observation) -> str | None:
    pred = obs.meta.get("pred")
    if pred is not None:
        return str(pred)
    kind = answer_kind(obs.dataset)
    return None if kind is None else extract_answer(obs.response, kind)


def edge_queries(pairs: Sequence[QueryPair]) -> list[EdgeQuery]:
    """The weak (edge) side of each query pair as samples."""
    return [
        EdgeQuery(
            query_id=p.query_id,
            dataset=p.dataset,
            prompt=p.prompt,
            samples=tuple(
                Sample(o.variant_id, o.sample_id, o.response or "", _answer(o), float(o.score or 0))
                for o in p.weak
            ),
        )
        for p in pairs
    ]


def variant_ranking(queries: Sequence[EdgeQuery]) -> list[int]:
    """Prompt variants, best first by the edge model's mean score on these (train) queries:
    a served cascade puts its best prompt first, and ties in the vote go to the first sample."""
    totals: dict[int, list[float]] = {}
    for query in queries:
        for sample in query.samples:
            totals.setdefault(sample.variant_id, []).append(sample.score)
    return sorted(totals, key=lambda v: (-float(np.mean(totals[v])), v))


def order_samples(query: EdgeQuery, order: str, ranking: Sequence[int] = ()) -> tuple[Sample, ...]:
    """The samples in the order the cascade draws them (see the module docstring); variants
    follow ``ranking`` (unranked ones after, by id)."""
    by_variant: dict[int, list[Sample]] = {}
    for sample in query.samples:
        by_variant.setdefault(sample.variant_id, []).append(sample)
    position = {v: i for i, v in enumerate(ranking)}
    variants = sorted(by_variant, key=lambda v: (position.get(v, len(position)), v))
    if order == "decodes":
        several = [v for v in variants if len(by_variant[v]) > 1]
        return tuple(by_variant[(several or variants)[0]])
    if order == "variants":
        depth = max(len(rows) for rows in by_variant.values())
        return tuple(
            by_variant[v][d] for d in range(depth) for v in variants if d < len(by_variant[v])
        )
    raise ValueError(f"unknown sample order {order!r}; expected one of {ORDERS}")


def _similarity(clustering: str) -> float:
    if clustering.startswith("embedding@"):
        return float(clustering.split("@", 1)[1])
    return 0.9


def sample_labels(
    samples: Sequence[Sample],
    dataset: str,
    clustering: str,
    vectors: Mapping[str, np.ndarray] | None = None,
) -> list[str]:
    """Meaning labels of ordered samples under one clustering candidate.

    ``vectors`` maps a sample text to its embedding (needed by embedding clusterings).
    """
    kind = answer_kind(dataset)
    if clustering == "auto" and kind is not None:
        return meaning_labels(answers=[s.answer for s in samples], kind=kind)
    if clustering == "text":
        return meaning_labels([s.text for s in samples])
    if clustering == "auto" or clustering.startswith("embedding@"):
        if vectors is None:
            raise ValueError(f"clustering {clustering!r} needs response embeddings")
        matrix = np.stack([vectors[s.text] for s in samples])
        return embedding_labels(matrix, _similarity(clustering))
    raise ValueError(f"unknown clustering {clustering!r}")


def needs_embeddings(queries: Sequence[EdgeQuery], clusterings: Sequence[str]) -> bool:
    """Whether any candidate clusters some of these queries by embedding."""
    if any(c.startswith("embedding@") for c in clusterings):
        return True
    return "auto" in clusterings and any(answer_kind(q.dataset) is None for q in queries)


def embed_samples(queries: Sequence[EdgeQuery], embed: EmbedTexts) -> dict[str, np.ndarray]:
    """One embedding per distinct sample text (one batched, cached call)."""
    texts = sorted({s.text for q in queries for s in q.samples})
    matrix = np.asarray(embed(texts), dtype=np.float64) if texts else np.empty((0, 0))
    return dict(zip(texts, matrix, strict=True))


def label_table(
    queries: Sequence[EdgeQuery],
    orders: Sequence[str],
    clusterings: Sequence[str],
    vectors: Mapping[str, np.ndarray] | None = None,
    ranking: Sequence[int] = (),
) -> LabelTable:
    """Ordered samples and labels of every query under every (order, clustering)."""
    table: dict[tuple[str, str], list[tuple[tuple[Sample, ...], Sequence[str]]]] = {}
    for order in orders:
        ordered = [order_samples(q, order, ranking) for q in queries]
        for clustering in clusterings:
            table[(order, clustering)] = [
                (s, sample_labels(s, q.dataset, clustering, vectors))
                for s, q in zip(ordered, queries, strict=True)
            ]
    return table
