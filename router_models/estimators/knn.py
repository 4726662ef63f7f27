"""k-nearest-neighbour router: the mean target of the most similar training queries."""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from router_models.estimators.base import (
    KNN_PARAMETER_CONSTRAINTS,
    FloatArray,
    GraphBuilder,
    RouterMixin,
    nearest_neighbours,
    neighbour_mean,
    neighbour_points,
    similarity_scale,
)

__all__ = ["KNNRouter", "merge_duplicates"]


def merge_duplicates(
    X: FloatArray, y: FloatArray, weight: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One row per distinct embedding: weighted mean target, summed weight.

    Identical embeddings (the same query seen several times) would otherwise tie in the
    top-k search, where numpy and onnxruntime may break ties differently.
    """
    unique, inverse = np.unique(X, axis=0, return_inverse=True)
    group = inverse.reshape(-1)
    total = np.bincount(group, weights=weight, minlength=unique.shape[0]).astype(np.float64)
    hits = np.bincount(group, weights=weight * y, minlength=unique.shape[0])
    mean: FloatArray = np.divide(hits, total, out=np.full_like(total, 0.5), where=total > 0)
    return unique.astype(np.float64), mean, total


def _neighbour_weights(similarity: FloatArray, weight: FloatArray, scheme: str) -> FloatArray:
    """Weight of each neighbour: its sample weight, times ``(1 + cos) / 2`` for ``similarity``."""
    return weight * similarity_scale(similarity) if scheme == "similarity" else weight


class KNNRouter(RouterMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Cosine k-nearest-neighbour router (weighted mean of the neighbours' soft targets).

    Parameters
    ----------
    n_neighbors : int, default=10
        Neighbours averaged per query (fewer if fewer training points are stored).
    weights : {"uniform", "similarity"}, default="uniform"
        ``uniform``: neighbours count by their sample weight only; ``similarity``: also by
        ``(1 + cosine) / 2``.
    max_points : int or None, default=2000
        Most training points kept (a seeded subsample); they are stored in the ONNX file.
    random_state : int, RandomState instance or None, default=None
        Seed of the subsample.

    Attributes
    ----------
    embeddings_ : ndarray of shape (n_points, n_features_in_)
        Stored unit-norm training embeddings (duplicates merged).
    targets_ : ndarray of shape (n_points,)
        Their (weighted mean) soft targets.
    point_weights_ : ndarray of shape (n_points,)
        Their summed sample weights.
    global_rate_ : float
        Weighted mean target; the answer when every neighbour weight is zero.
    n_features_in_ : int
        Embedding dimension.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> y = np.array([1.0, 1.0, 0.0, 0.0])
    >>> KNNRouter(n_neighbors=2).fit(X, y).predict([[1.0, 0.05]]).round(2)
    array([1.])
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = KNN_PARAMETER_CONSTRAINTS

    def __init__(
        self,
        *,
        n_neighbors: int = 10,
        weights: str = "uniform",
        max_points: int | None = 2000,
        random_state: Any = None,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.max_points = max_points
        self.random_state = random_state

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Self:
        """Store (a subsample of) the unit-norm training embeddings and their targets."""
        self._validate_params()
        X, y, weight = self._validate_fit(X, y, sample_weight)
        self.global_rate_ = float(np.average(y, weights=weight))
        seen = weight > 0  # a zero-weight point must not take a neighbour's place
        self.embeddings_, self.targets_, self.point_weights_ = neighbour_points(
            merge_duplicates, X, y, weight, seen, self.max_points, self.random_state
        )
        return self

    def predict(self, X: Any) -> FloatArray:
        """Probability that the strong model is needed, per query."""
        top_sim, top = nearest_neighbours(
            self._validate_predict(X), self.embeddings_, self.n_neighbors
        )
        w = _neighbour_weights(top_sim, self.point_weights_[top], self.weights)
        return neighbour_mean(w, self.targets_[top], self.global_rate_)

    def _build_onnx(self, g: GraphBuilder, embedding: str, output: str) -> None:
        top_sim, top = g.nearest_neighbours(embedding, self.embeddings_, self.n_neighbors)
        w = g.op("Gather", g.const(self.point_weights_, "weights"), top)
        if self.weights == "similarity":
            w = g.op("Mul", w, g.similarity_scale(top_sim))
        targets = g.op("Gather", g.const(self.targets_, "targets"), top)
        g.neighbour_mean(w, targets, self.global_rate_, output)
