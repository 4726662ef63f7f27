"""``semantic-entropy`` labels: responses clustered into meaning classes; the model with
clearly lower semantic entropy wins (Confidence-Driven Router, eq. 2-4)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from router_models.answers import answer_kind
from router_models.cascade import (
    answer_labels,
    embedding_labels,
    extracted_answers,
    greedy_clusters,
    text_labels,
)
from router_models.cascade import semantic_entropy as _semantic_entropy
from router_models.labels.base import LabelSet
from router_models.labels.capability import label_set_from_pairs, pair_observations, pair_stats
from router_models.observations import Observation, PathLike

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

__all__ = [
    "DEFAULT_TAU",
    "ClusterMode",
    "EmbedFn",
    "NliEquivalence",
    "cluster_responses",
    "semantic_entropy",
    "semantic_entropy_labels",
]

DEFAULT_TAU = 0.1
ClusterMode = Literal["auto", "answer", "embedding", "nli", "text", "score"]
EmbedFn = Callable[[list[str]], Any]


class NliEquivalence:
    """Bidirectional entailment with a local NLI cross-encoder (Kuhn et al.; the paper's DeBERTa).

    ``model_path`` is a local directory (nothing is downloaded). Two responses mean the same
    when each entails the other.
    """

    def __init__(self, model_path: PathLike, *, device: str = "cpu") -> None:
        self.model_path = Path(model_path)
        self.device = device
        self._model: CrossEncoder | None = None
        self._entail = -1

    def _load(self) -> CrossEncoder:
        if self._model is None:
            from sentence_transformers import CrossEncoder

            if not self.model_path.is_dir():
                raise FileNotFoundError(f"NLI model directory not found: {self.model_path}")
            model = CrossEncoder(str(self.model_path), device=self.device, local_files_only=True)
            labels = {str(v).lower(): int(k) for k, v in model.config.id2label.items()}
            if "entailment" not in labels:
                raise ValueError(f"NLI model has no 'entailment' label: {labels}")
            self._entail = labels["entailment"]
            self._model = model
        return self._model

    def __call__(self, first: str, second: str) -> bool:
        logits = np.asarray(self._load().predict([(first, second), (second, first)]))
        return bool(np.all(logits.argmax(axis=1) == self._entail))


def cluster_responses(
    rows: Sequence[Observation],
    *,
    mode: ClusterMode = "auto",
    embed: EmbedFn | None = None,
    similarity: float = 0.9,
    nli: Callable[[str, str], bool] | None = None,
) -> list[str]:
    """A meaning-class label per observation.

    ``answer``: the extracted final answer (number or option letter; unparsable responses
    are singletons); ``embedding``: greedy clusters at cosine >= ``similarity``; ``nli``:
    greedy bidirectional entailment; ``text``: identical whitespace-normalised text;
    ``score``: the score itself. ``auto`` = ``answer`` when the dataset has a final answer,
    else ``nli`` / ``embedding`` when given, else ``text``. Rows without a response always
    fall back to their score as the class.
    """
    if mode == "auto":
        kind = answer_kind(rows[0].dataset) if rows else None
        if kind is not None:
            mode = "answer"
        elif nli is not None:
            mode = "nli"
        elif embed is not None:
            mode = "embedding"
        else:
            mode = "text"
    labels = [f"score:{float(obs.score or 0.0)}" for obs in rows]
    with_text = [i for i, obs in enumerate(rows) if obs.response]
    texts = [str(rows[i].response) for i in with_text]
    if mode == "score" or not texts:
        return labels
    if mode == "answer":
        kind = answer_kind(rows[0].dataset) or "number"
        groups = answer_labels(extracted_answers(texts, kind))
    elif mode == "text":
        groups = text_labels(texts)
    elif mode == "embedding":
        if embed is None:
            raise ValueError("cluster mode 'embedding' needs an embed function")
        groups = embedding_labels(embed(texts), similarity)
    elif mode == "nli":
        if nli is None:
            raise ValueError("cluster mode 'nli' needs an NLI equivalence, e.g. NliEquivalence")
        clusters = greedy_clusters(len(texts), lambda i, j: nli(texts[i], texts[j]))
        groups = [f"nli:{c}" for c in clusters]
    else:
        raise ValueError(f"unknown cluster mode {mode!r}")
    for i, group in zip(with_text, groups, strict=True):
        labels[i] = group
    return labels


def semantic_entropy(
    labels: Sequence[str], estimator: Literal["paper", "discrete"] = "paper"
) -> float:
    """Semantic entropy of one query-model pair from its meaning-class labels.

    ``paper`` (the default here): eq. 2 of the Confidence-Driven Router; ``discrete``:
    -sum_i p(C_i) log p(C_i). One implementation, shared with the cascade:
    :func:`router_models.cascade.semantic_entropy`.
    """
    return _semantic_entropy(labels, estimator)


def _se_delta(se_strong: float, se_weak: float) -> float:
    """Normalised SE difference (eq. 3); inf when only the strong model is certain."""
    if se_strong > 0:
        return abs(se_strong - se_weak) / se_strong
    return math.inf if se_weak > 0 else 0.0


def semantic_entropy_labels(
    observations: Iterable[Observation],
    weak: str,
    strong: str,
    *,
    tau: float = DEFAULT_TAU,
    mode: ClusterMode = "auto",
    embed: EmbedFn | None = None,
    similarity: float = 0.9,
    nli: Callable[[str, str], bool] | None = None,
    estimator: Literal["paper", "discrete"] = "paper",
    tie_target: float = 0.0,
    costs: Mapping[str, float] | None = None,
) -> LabelSet:
    """Semantic-entropy preference labels (Confidence-Driven Router, eq. 3-4).

    delta = |SE_s - SE_w| / SE_s; if delta > tau the model with lower SE wins (strong -> 1,
    weak -> 0), else a tie (``tie_target``). SE_s = 0 gives delta = inf unless SE_w = 0 too
    (then a tie). Weight 1 for every query.
    """
    pairs = pair_observations(observations, weak, strong)
    options: dict[str, Any] = {"mode": mode, "embed": embed, "similarity": similarity, "nli": nli}
    target = np.empty(len(pairs))
    entropies = np.empty((len(pairs), 2))
    for i, pair in enumerate(pairs):
        se_w = semantic_entropy(cluster_responses(pair.weak, **options), estimator)
        se_s = semantic_entropy(cluster_responses(pair.strong, **options), estimator)
        entropies[i] = se_w, se_s
        target[i] = float(se_s < se_w) if _se_delta(se_s, se_w) > tau else tie_target
    weak_stats, strong_stats, cost_source = pair_stats(pairs, costs)
    params: dict[str, Any] = {
        "tau": tau,
        "mode": mode,
        "similarity": similarity,
        "estimator": estimator,
        "tie_target": tie_target,
        "cost_source": cost_source,
    }
    extra = {"se_weak": entropies[:, 0], "se_strong": entropies[:, 1]}
    stats = (weak_stats, strong_stats)
    weight = np.ones(len(pairs))
    return label_set_from_pairs("semantic-entropy", pairs, target, weight, stats, params, extra)
