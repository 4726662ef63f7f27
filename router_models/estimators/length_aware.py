"""Length-aware router: an embedding router's score stacked with the query length.

A unit-norm sentence embedding carries no length, yet on real data routing by prompt length
alone beats every embedding-only router (GSM8K: the longest prompts are the hard ones). This
router keeps a registry router (``base_router``) for what the text is about and lets a
three-parameter logistic head weigh its score against the length:

``score = sigmoid(a * logit(clip(base)) + b * (log1p(length) - center) / scale + c)``

The head is fitted on base scores the base never saw (a seeded held-out part), so that it
learns how far to trust them out of sample; the base is then refitted on every row. The ONNX
file takes the contract's optional second input ``query_length``.
"""

from __future__ import annotations

import inspect
from numbers import Real
from typing import Any, ClassVar, Self

import numpy as np
import onnx
from onnx import TensorProto, helper
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from router_models.contract import LENGTH_INPUT_NAME
from router_models.estimators.base import (
    FloatArray,
    GraphBuilder,
    RouterMixin,
    float32_values,
    seed_from,
    sigmoid,
)
from router_models.estimators.kinds import EMBEDDING_ROUTERS, make_from_table

__all__ = ["LengthAwareRouter", "check_query_length", "fit_logistic"]

# Base scores are clipped before the logit: no base score is taken as certain, and the float32
# rounding of a score near 0 or 1 cannot blow up in the logit (ONNX parity stays < 1e-5).
_SCORE_CLIP = 1e-3
_NEWTON_TOL = 1e-12
_NEWTON_MAX_ITER = 100


def check_query_length(query_length: Any, n_samples: int) -> FloatArray:
    """``query_length`` as a float64 vector of ``n_samples`` finite, non-negative counts."""
    if query_length is None:
        raise ValueError("query_length is required: the number of characters of each query")
    length = np.asarray(query_length, dtype=np.float64)
    if length.shape != (n_samples,):
        raise ValueError(f"query_length must have shape ({n_samples},), has {length.shape}")
    if not np.all(np.isfinite(length)) or np.any(length < 0.0):
        raise ValueError("query_length must be finite and non-negative")
    return length


def fit_logistic(
    features: FloatArray,
    y: FloatArray,
    weight: FloatArray,
    alpha: float,
    *,
    max_iter: int = _NEWTON_MAX_ITER,
) -> tuple[FloatArray, int]:
    """Weighted soft-target logistic regression by damped Newton steps (deterministic).

    Minimises the weighted mean cross-entropy plus ``alpha / 2 * |w|^2``; the last column of
    ``features`` is the intercept's, which is not penalised. Returns the coefficients and the
    number of Newton steps.
    """
    total = float(weight.sum())
    n_coef = features.shape[1]
    penalty = np.diag([alpha] * (n_coef - 1) + [1e-10])

    def objective(theta: FloatArray) -> float:
        z = features @ theta
        data = float(np.sum(weight * (np.logaddexp(0.0, z) - y * z))) / total
        return data + 0.5 * float(theta @ penalty @ theta)

    theta = np.zeros(n_coef)
    steps = 0
    for steps in range(1, max_iter + 1):  # noqa: B007  # the count is returned
        p = sigmoid(features @ theta)
        gradient = features.T @ (weight * (p - y)) / total + penalty @ theta
        hessian = (features.T * (weight * p * (1.0 - p))) @ features / total + penalty
        step = np.linalg.solve(hessian, gradient)
        decrement = float(gradient @ step)
        if decrement < _NEWTON_TOL:
            break
        current, size = objective(theta), 1.0
        while objective(theta - size * step) > current - 1e-4 * size * decrement and size > 1e-8:
            size /= 2.0
        theta = theta - size * step
    return theta, steps


def _logit(score: FloatArray) -> FloatArray:
    lo, hi = float32_values([_SCORE_CLIP, 1.0 - _SCORE_CLIP])
    clipped = np.clip(score, lo, hi)
    out: FloatArray = np.log(clipped) - np.log(1.0 - clipped)
    return out


class LengthAwareRouter(RouterMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """A registry router's score and the query length, stacked by a logistic head.

    Parameters
    ----------
    base_router : str, default="sw_ranking"
        Kind of the embedding router (``knn``, ``mlp``, ``mf``, ``sw_ranking``).
    base_params : dict or None, default=None
        Its constructor keywords. ``random_state`` defaults to a seed drawn from this
        router's ``random_state`` when the base takes one.
    validation_fraction : float, default=0.3
        Share of the rows (seeded) held out from the first base fit to fit the head on.
    alpha : float, default=1e-3
        L2 penalty of the two head weights (the intercept is free).
    random_state : int, RandomState instance or None, default=0
        Seed of the held-out split and of the base router.

    Attributes
    ----------
    base_ : estimator
        The base router refitted on every row.
    coef_ : ndarray of shape (2,)
        Head weights of ``logit(clipped base score)`` and of the standardised
        ``log1p(length)``.
    intercept_ : float
        Head intercept.
    length_center_, length_scale_ : float
        Weighted mean and standard deviation of ``log1p(length)`` over the training rows.
    n_iter_ : int
        Newton steps of the head fit.
    n_features_in_ : int
        Embedding dimension.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]] * 20)
    >>> length = np.tile([20.0, 20.0, 900.0, 900.0], 10)
    >>> y = (length > 100).astype(float)
    >>> router = LengthAwareRouter(base_router="knn").fit(X, y, query_length=length)
    >>> router.predict([[1.0, 0.0], [1.0, 0.0]], query_length=[20.0, 900.0]).round(1)
    array([0., 1.])
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "base_router": [str],
        "base_params": [dict, None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        base_router: str = "sw_ranking",
        base_params: dict[str, Any] | None = None,
        *,
        validation_fraction: float = 0.3,
        alpha: float = 1e-3,
        random_state: Any = 0,
    ) -> None:
        self.base_router = base_router
        self.base_params = base_params
        self.validation_fraction = validation_fraction
        self.alpha = alpha
        self.random_state = random_state

    def _make_base(self, seed: int) -> Any:
        params = dict(self.base_params or {})
        kind = EMBEDDING_ROUTERS.get(self.base_router)
        if kind is not None and "random_state" in inspect.signature(kind).parameters:
            params.setdefault("random_state", seed)
        return make_from_table(EMBEDDING_ROUTERS, self.base_router, **params)

    def _features(self, base_score: FloatArray, length: FloatArray) -> FloatArray:
        standard = (np.log1p(length) - self.length_center_) / self.length_scale_
        return np.column_stack([_logit(base_score), standard, np.ones_like(standard)])

    def fit(self, X: Any, y: Any, sample_weight: Any = None, *, query_length: Any) -> Self:
        """Fit the base on a seeded part, the head on the rest, then the base on all rows."""
        self._validate_params()
        X, y, weight = self._validate_fit(X, y, sample_weight)
        length = check_query_length(query_length, X.shape[0])
        seed = seed_from(self.random_state)
        n = X.shape[0]
        n_val = round(self.validation_fraction * n)
        if not 1 <= n_val < n:
            raise ValueError(f"{n} rows cannot be split into a base part and a head part")
        order = np.random.default_rng(seed).permutation(n)
        head_rows, base_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
        if weight[head_rows].sum() <= 0.0:
            raise ValueError("the held-out rows for the head have zero total weight")
        log_length = np.log1p(length)
        center = np.average(log_length, weights=weight)
        spread = np.sqrt(np.average((log_length - center) ** 2, weights=weight))
        self.length_center_ = float(float32_values(center))
        self.length_scale_ = float(float32_values(spread if spread > 1e-6 else 1.0))

        held_out = self._make_base(seed).fit(X[base_rows], y[base_rows], weight[base_rows])
        features = self._features(held_out.predict(X[head_rows]), length[head_rows])
        theta, self.n_iter_ = fit_logistic(
            features, y[head_rows], weight[head_rows], float(self.alpha)
        )
        theta = float32_values(theta)
        self.coef_, self.intercept_ = theta[:2], float(theta[2])
        self.base_ = self._make_base(seed).fit(X, y, sample_weight=weight)
        return self

    def predict(self, X: Any, *, query_length: Any) -> FloatArray:
        """Probability that the strong model is needed, per query and its length."""
        X = self._validate_predict(X)
        length = check_query_length(query_length, X.shape[0])
        features = self._features(np.asarray(self.base_.predict(X), dtype=np.float64), length)
        out: FloatArray = sigmoid(features[:, :2] @ self.coef_ + self.intercept_)
        return out

    def score(self, X: Any, y: Any, sample_weight: Any = None, *, query_length: Any) -> float:
        """R^2 of the scores against ``y`` (scikit-learn's regressor score)."""
        predicted = self.predict(X, query_length=query_length)
        return float(r2_score(y, predicted, sample_weight=sample_weight))

    def _onnx_inputs(self, dim: int) -> list[onnx.ValueInfoProto]:
        return [
            *super()._onnx_inputs(dim),
            helper.make_tensor_value_info(LENGTH_INPUT_NAME, TensorProto.FLOAT, ["batch"]),
        ]

    def _build_onnx(self, g: GraphBuilder, embedding: str, output: str) -> None:
        check_is_fitted(self)
        base_score = "base_score"  # the builder's own names all end in _<n>: no clash
        self.base_._build_onnx(g, embedding, base_score)
        lo, hi = float32_values([_SCORE_CLIP, 1.0 - _SCORE_CLIP])
        clipped = g.op("Clip", base_score, g.const(lo), g.const(hi))
        logit = g.op("Sub", g.op("Log", clipped), g.op("Log", g.op("Sub", g.const(1.0), clipped)))
        length = g.op("Max", LENGTH_INPUT_NAME, g.const(0.0))
        log_length = g.op("Log", g.op("Add", length, g.const(1.0)))
        standard = g.op(
            "Div",
            g.op("Sub", log_length, g.const(self.length_center_)),
            g.const(self.length_scale_),
        )
        z = g.op(
            "Add",
            g.op(
                "Add",
                g.op("Mul", logit, g.const(self.coef_[0])),
                g.op("Mul", standard, g.const(self.coef_[1])),
            ),
            g.const(self.intercept_),
        )
        g.op("Sigmoid", z, output=output)
