"""Similarity-weighted (SW) ranking router: a Bradley-Terry fit per query, weighted by similarity.

Following RouteLLM and the Confidence-Driven router paper (arXiv 2502.11021, Eqs. 5-8), every
training comparison ``i`` gets the weight ``gamma ** (1 + S_i)`` for a query ``q``, where
``S_i`` is the cosine similarity of ``q`` and training query ``q_i`` divided by the largest
cosine of ``q`` to any training query (``similarity="relative"``, as RouteLLM's
``get_weightings`` computes it; the paper's Eq. 6 also divides by a maximum over the training
set, written over ``q_i``'s neighbours, which would be 1 with ``q_i`` itself) or the raw cosine
(``"absolute"``). The Bradley-Terry strengths ``xi`` maximise the weighted
(soft-label) log-likelihood, and the score is ``P(strong beats weak) = sigmoid(xi_s - xi_w)``.

Nothing is refitted per request in a costly way: the weighted win and comparison counts are
two matrix products, and the BT maximum is found with Hunter's MM iteration
``pi_i <- W_i / sum_j N_ij / (pi_i + pi_j)`` (same optimum as the logistic fit). For two
models one step is the closed form, the weighted mean of the soft labels. A prior of
``prior_strength`` pseudo-comparisons at the global rates keeps a query that resembles no
training query near the global answer.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar, Self

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions

from router_models.estimators.base import (
    EPS,
    FloatArray,
    GraphBuilder,
    RouterMixin,
    check_pairs,
    cosine_to,
    float32_values,
    subsample_indices,
    unit_rows,
)

__all__ = ["SWRankingRouter", "bradley_terry_win_probability"]

_PREDICT_CHUNK = 512


def bradley_terry_win_probability(
    wins: FloatArray, comparisons: FloatArray, strong: int, weak: int, n_iter: int
) -> FloatArray:
    """``P(strong beats weak)`` under the BT strengths fitted by ``n_iter`` MM steps.

    Parameters
    ----------
    wins : ndarray of shape (n_queries, n_models)
        Weighted (soft) wins of each model.
    comparisons : ndarray of shape (n_queries, n_models, n_models)
        Symmetric weighted comparison counts, zero diagonal.
    """
    n_models = wins.shape[1]
    strength = np.full((1, n_models), 1.0 / n_models)
    for _ in range(n_iter):
        pair_sum = strength[:, :, None] + strength[:, None, :] + EPS
        strength = wins / (np.sum(comparisons / pair_sum, axis=2) + EPS)
        strength = strength / (np.sum(strength, axis=1, keepdims=True) + EPS)
    out: FloatArray = (strength[:, strong] + EPS) / (
        strength[:, strong] + strength[:, weak] + 2 * EPS
    )
    return out


class SWRankingRouter(RouterMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Similarity-weighted Bradley-Terry router (RouteLLM ``sw_ranking``), exportable to ONNX.

    Parameters
    ----------
    gamma : float, default=10.0
        Base of the weights ``gamma ** (1 + S)``; larger is more local.
    similarity : {"relative", "absolute"}, default="relative"
        ``relative``: cosine divided by the query's best cosine to the training set (paper and
        RouteLLM); ``absolute``: the cosine itself.
    prior_strength : float, default=1.0
        Pseudo-comparisons at the global rates, each weighing as much as a training
        comparison of similarity 0 (``gamma``).
    n_models : int or None, default=None
        Number of models; ``None`` infers it from ``pairs``.
    strong_index, weak_index : int, default=1, 0
        Models compared by ``predict`` and in the ONNX file.
    max_iter : int, default=100
        MM steps when there are more than two models (one step is exact for two).
    max_points : int or None, default=2000
        Most training queries stored (a seeded subsample; the global prior uses all).
    random_state : int, RandomState instance or None, default=None
        Seed of the subsample.

    Attributes
    ----------
    embeddings_ : ndarray of shape (n_points, n_features_in_)
        Stored unit-norm distinct training queries.
    wins_ : ndarray of shape (n_points, n_models_)
        Weighted soft wins per stored query and model.
    comparisons_ : ndarray of shape (n_points, n_models_ * n_models_)
        Weighted comparison counts per stored query (flattened symmetric matrix).
    prior_wins_, prior_comparisons_ : ndarray
        Global counts scaled to ``prior_strength * gamma`` comparisons.
    n_models_ : int
        Number of models.
    n_iter_ : int
        MM steps per query (1 for two models).
    n_features_in_ : int
        Embedding dimension.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> SWRankingRouter().fit(X, [1.0, 0.0]).predict(X).round(3)  # (100 + 5) / (100 + 10 + 10)
    array([0.875, 0.125])
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "gamma": [Interval(Real, 1, None, closed="neither")],
        "similarity": [StrOptions({"relative", "absolute"})],
        "prior_strength": [Interval(Real, 0, None, closed="neither")],
        "n_models": [Interval(Integral, 2, None, closed="left"), None],
        "strong_index": [Interval(Integral, 0, None, closed="left")],
        "weak_index": [Interval(Integral, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "max_points": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        gamma: float = 10.0,
        similarity: str = "relative",
        prior_strength: float = 1.0,
        n_models: int | None = None,
        strong_index: int = 1,
        weak_index: int = 0,
        max_iter: int = 100,
        max_points: int | None = 2000,
        random_state: Any = None,
    ) -> None:
        self.gamma = gamma
        self.similarity = similarity
        self.prior_strength = prior_strength
        self.n_models = n_models
        self.strong_index = strong_index
        self.weak_index = weak_index
        self.max_iter = max_iter
        self.max_points = max_points
        self.random_state = random_state

    def fit(self, X: Any, y: Any, sample_weight: Any = None, *, pairs: Any = None) -> Self:
        """Count weighted soft wins per distinct training query.

        Row ``i`` says model ``pairs[i, 0]`` beats ``pairs[i, 1]`` with probability ``y[i]``;
        ``pairs=None`` means ``(strong_index, weak_index)`` on every row.
        """
        self._validate_params()
        X, y, weight = self._validate_fit(X, y, sample_weight)
        index, m = check_pairs(pairs, X.shape[0], self.n_models, self.strong_index, self.weak_index)
        seen = weight > 0  # a zero-weight query must not set the similarity scale
        X, y, weight, index = X[seen], y[seen], weight[seen], index[seen]
        points, query = np.unique(unit_rows(X), axis=0, return_inverse=True)
        query = query.reshape(-1)
        wins = np.zeros((points.shape[0], m))
        np.add.at(wins, (query, index[:, 0]), weight * y)
        np.add.at(wins, (query, index[:, 1]), weight * (1.0 - y))
        comparisons = np.zeros((points.shape[0], m * m))
        np.add.at(comparisons, (query, index[:, 0] * m + index[:, 1]), weight)
        np.add.at(comparisons, (query, index[:, 1] * m + index[:, 0]), weight)
        scale = self.prior_strength * self.gamma / weight.sum()
        keep = subsample_indices(points.shape[0], self.max_points, self.random_state)
        self.n_models_ = m
        self.n_iter_ = self._n_steps()
        self.embeddings_ = float32_values(points[keep])
        self.wins_ = float32_values(wins[keep])
        self.comparisons_ = float32_values(comparisons[keep])
        self.prior_wins_ = float32_values(wins.sum(axis=0) * scale)
        self.prior_comparisons_ = float32_values(comparisons.sum(axis=0) * scale)
        return self

    def _n_steps(self) -> int:
        return 1 if self.n_models_ == 2 else self.max_iter

    def _weights(self, X: FloatArray) -> FloatArray:
        cosine = cosine_to(X, self.embeddings_)
        if self.similarity == "relative":
            cosine = cosine / np.maximum(cosine.max(axis=1, keepdims=True), EPS)
        out: FloatArray = np.exp((1.0 + cosine) * np.log(self.gamma))
        return out

    def predict(self, X: Any) -> FloatArray:
        """Probability that the strong model beats the weak one, per query."""
        X = self._validate_predict(X)
        m = self.n_models_
        out = np.empty(X.shape[0])
        for start in range(0, X.shape[0], _PREDICT_CHUNK):
            weights = self._weights(X[start : start + _PREDICT_CHUNK])
            wins = weights @ self.wins_ + self.prior_wins_
            comparisons = weights @ self.comparisons_ + self.prior_comparisons_
            out[start : start + weights.shape[0]] = bradley_terry_win_probability(
                wins,
                comparisons.reshape(-1, m, m),
                self.strong_index,
                self.weak_index,
                self.n_iter_,
            )
        return out

    def _build_onnx(self, g: GraphBuilder, embedding: str, output: str) -> None:
        m = self.n_models_
        cosine = g.cosine_to(embedding, self.embeddings_)
        if self.similarity == "relative":
            best = g.op("ReduceMax", cosine, axes=[1], keepdims=1)
            cosine = g.op("Div", cosine, g.op("Max", best, g.const(EPS)))
        exponent = g.op("Mul", g.op("Add", cosine, g.const(1.0)), g.const(np.log(self.gamma)))
        weights = g.op("Exp", exponent)
        wins = g.op(
            "Add", g.op("MatMul", weights, g.const(self.wins_, "wins")), g.const(self.prior_wins_)
        )
        flat = g.op(
            "Add",
            g.op("MatMul", weights, g.const(self.comparisons_, "comparisons")),
            g.const(self.prior_comparisons_),
        )
        comparisons = g.op("Reshape", flat, g.const([-1, m, m], dtype=np.int64))
        as_column = g.const([-1, m, 1], dtype=np.int64)
        as_row = g.const([-1, 1, m], dtype=np.int64)
        axis1, axis2 = g.const([1], dtype=np.int64), g.const([2], dtype=np.int64)
        eps = g.const(EPS)
        strength = g.const(np.full((1, m), 1.0 / m))
        for _ in range(self.n_iter_):
            pair_sum = g.op(
                "Add",
                g.op(
                    "Add", g.op("Reshape", strength, as_column), g.op("Reshape", strength, as_row)
                ),
                eps,
            )
            denominator = g.op("ReduceSum", g.op("Div", comparisons, pair_sum), axis2, keepdims=0)
            strength = g.op("Div", wins, g.op("Add", denominator, eps))
            total = g.op("ReduceSum", strength, axis1, keepdims=1)
            strength = g.op("Div", strength, g.op("Add", total, eps))
        strong = g.op("Gather", strength, g.const(self.strong_index, dtype=np.int64), axis=1)
        weak = g.op("Gather", strength, g.const(self.weak_index, dtype=np.int64), axis=1)
        numerator = g.op("Add", strong, eps)
        both = g.op("Add", g.op("Add", strong, weak), g.const(2 * EPS))
        g.op("Div", numerator, both, output=output)
