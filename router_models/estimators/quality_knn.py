"""k-nearest-neighbour quality router: each model's weighted mean quality over the neighbours."""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions

from router_models.estimators.base import (
    EPS,
    FloatArray,
    GraphBuilder,
    cosine_to,
    float32_values,
    subsample_indices,
    unit_rows,
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

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "weights": [StrOptions({"uniform", "similarity"})],
        "max_points": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }

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
        points, targets, totals = merge_duplicate_rows(unit_rows(X[seen]), Y[seen], weight[seen])
        keep = subsample_indices(points.shape[0], self.max_points, self.random_state)
        self.embeddings_ = float32_values(points[keep])
        self.targets_ = float32_values(targets[keep])
        self.cell_weights_ = float32_values(totals[keep])
        return self

    def _k(self) -> int:
        return min(int(self.n_neighbors), int(self.embeddings_.shape[0]))

    def predict(self, X: Any) -> FloatArray:
        """Predicted mean quality of each model, ``[n, K]``."""
        X = self._validate_predict(X)
        similarity = cosine_to(X, self.embeddings_)
        k = self._k()
        top: npt.NDArray[np.intp] = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        w = self.cell_weights_[top]  # [n, k, K]
        if self.weights == "similarity":
            top_sim = np.take_along_axis(similarity, top, axis=1)
            w = w * ((1.0 + top_sim) * 0.5)[:, :, None]
        numerator = np.sum(w * self.targets_[top], axis=1) + EPS * self.column_means_
        return self._shape_output(numerator / (np.sum(w, axis=1) + EPS))

    def _build_onnx(self, g: GraphBuilder, embedding: str, output: str) -> None:
        similarity = g.cosine_to(embedding, self.embeddings_)
        k = g.const([self._k()], dtype=np.int64)
        top_sim, top = g.op_multi("TopK", [similarity, k], 2, axis=1, largest=1, sorted=1)
        w = g.op("Gather", g.const(self.cell_weights_, "cell_weights"), top, axis=0)
        if self.weights == "similarity":
            scale = g.op("Mul", g.op("Add", g.const(1.0), top_sim), g.const(0.5))
            w = g.op("Mul", w, g.op("Unsqueeze", scale, g.const([2], dtype=np.int64)))
        hits = g.op("Mul", w, g.op("Gather", g.const(self.targets_, "targets"), top, axis=0))
        axis = g.const([1], dtype=np.int64)
        numerator = g.op(
            "Add",
            g.op("ReduceSum", hits, axis, keepdims=0),
            g.const(EPS * self.column_means_),
        )
        denominator = g.op("Add", g.op("ReduceSum", w, axis, keepdims=0), g.const(EPS))
        g.op("Div", numerator, denominator, output=output)
