"""k-nearest-neighbour quality router: each model's weighted mean quality over the neighbours."""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from router_models.estimators.base import (
    KNN_PARAMETER_CONSTRAINTS,
    FloatArray,
    GraphBuilder,
    float32_values,
    nearest_neighbours,
    neighbour_mean,
    neighbour_points,
    similarity_scale,
)
from router_models.estimators.quality_base import QualityRouterMixin

__all__ = ["KNNQualityRouter", "merge_duplicate_rows"]


def merge_duplicate_rows(
    X: FloatArray, Y: FloatArray, weight: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One row per distinct embedding: per-cell weighted mean quality and summed cell weight.

    Identical embeddings would tie in the top-k search, where numpy and onnxruntime may
    break ties differently.
    """
    unique, inverse = np.unique(X, axis=0, return_inverse=True)
    group = inverse.reshape(-1)
    total = np.zeros((unique.shape[0], Y.shape[1]))
    mass = np.zeros_like(total)
    np.add.at(total, group, weight)
    np.add.at(mass, group, weight * Y)
    mean: FloatArray = np.divide(mass, total, out=np.zeros_like(total), where=total > 0)
    return unique.astype(np.float64), mean, total


class KNNQualityRouter(QualityRouterMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Cosine kNN over K models: per model, the neighbours' mean quality weighted by cell weight.

    A neighbour that never saw model k (weight 0 in that cell) does not count for k; when no
    neighbour saw k, the prediction is k's mean over the training set.

    Parameters
    ----------
    n_neighbors : int, default=10
        Neighbours averaged per query (fewer if fewer points are stored).
    weights : {"uniform", "similarity"}, default="uniform"
        ``similarity`` also weights each neighbour by ``(1 + cosine) / 2``.
    max_points : int or None, default=2000
        Most training points kept (a seeded subsample); they are stored in the ONNX file.
    random_state : int, RandomState instance or None, default=None
        Seed of the subsample.

    Attributes
    ----------
    embeddings_ : ndarray of shape (n_points, n_features_in_)
        Stored unit-norm training embeddings (duplicates merged).
    targets_ : ndarray of shape (n_points, n_models_)
        Their per-model mean qualities (0 where missing).
    cell_weights_ : ndarray of shape (n_points, n_models_)
        Their per-cell weights (0 where missing).
    column_means_ : ndarray of shape (n_models_,)
        Weighted mean quality per model: the fallback.
    n_models_ : int
        K.
    n_features_in_ : int
        Embedding dimension.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> Y = np.array([[1.0, 0.0], [1.0, np.nan], [0.0, 1.0], [0.0, 1.0]])
    >>> KNNQualityRouter(n_neighbors=2).fit(X, Y).predict([[1.0, 0.05]]).round(2)
    array([[1., 0.]])
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
        """Store (a subsample of) the unit-norm embeddings with their per-model cells."""
        self._validate_params()
        X, Y, weight = self._validate_quality_fit(X, y, sample_weight)
        self.column_means_ = float32_values(self.column_means_)
        seen = weight.sum(axis=1) > 0  # a point with no weighted cell must not take a place
        self.embeddings_, self.targets_, self.cell_weights_ = neighbour_points(
            merge_duplicate_rows, X, Y, weight, seen, self.max_points, self.random_state
        )
        return self

    def predict(self, X: Any) -> FloatArray:
        """Predicted mean quality of each model, ``[n, K]``."""
        top_sim, top = nearest_neighbours(
            self._validate_predict(X), self.embeddings_, self.n_neighbors
        )
        w = self.cell_weights_[top]  # [n, k, K]
        if self.weights == "similarity":
            w = w * similarity_scale(top_sim)[:, :, None]
        return self._shape_output(neighbour_mean(w, self.targets_[top], self.column_means_))

    def _build_onnx(self, g: GraphBuilder, embedding: str, output: str) -> None:
        top_sim, top = g.nearest_neighbours(embedding, self.embeddings_, self.n_neighbors)
        w = g.op("Gather", g.const(self.cell_weights_, "cell_weights"), top, axis=0)
        if self.weights == "similarity":
            scale = g.similarity_scale(top_sim)
            w = g.op("Mul", w, g.op("Unsqueeze", scale, g.const([2], dtype=np.int64)))
        targets = g.op("Gather", g.const(self.targets_, "targets"), top, axis=0)
        g.neighbour_mean(w, targets, self.column_means_, output)
