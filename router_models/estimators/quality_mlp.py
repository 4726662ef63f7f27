"""Multi-layer perceptron quality router: two ReLU layers and K sigmoid outputs."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from sklearn.base import BaseEstimator, RegressorMixin

from router_models.estimators.base import (
    TORCH_PARAMETER_CONSTRAINTS,
    FloatArray,
    GraphBuilder,
    TorchRouterMixin,
    check_hidden_layer_sizes,
    mlp_logits,
    sigmoid,
)
from router_models.estimators.quality_base import QualityRouterMixin

__all__ = ["MLPQualityRouter"]


class MLPQualityRouter(QualityRouterMixin, TorchRouterMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Two-hidden-layer perceptron with one sigmoid output per model (masked, weighted BCE).

    Parameters
    ----------
    hidden_layer_sizes : tuple of two int, default=(128, 64)
        Widths of the two ReLU layers.
    alpha, learning_rate, batch_size, max_iter, validation_fraction, n_iter_no_change, tol,
    random_state
        As for :class:`router_models.estimators.MLPRouter` (defaults 1e-4, 1e-3, 128, 200,
        0.1, 10, 1e-4, None).

    Attributes
    ----------
    coefs_ : list of ndarray
        Weight matrices ``[n_in, n_out]`` of the three layers (the last has K columns).
    intercepts_ : list of ndarray
        Their biases.
    n_models_ : int
        K.
    n_iter_, loss_curve_, validation_scores_
        As for the other torch routers.
    n_features_in_ : int
        Embedding dimension.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "hidden_layer_sizes": [tuple, list],
        **TORCH_PARAMETER_CONSTRAINTS,
    }

    def __init__(
        self,
        *,
        hidden_layer_sizes: tuple[int, int] = (128, 64),
        alpha: float = 1e-4,
        learning_rate: float = 1e-3,
        batch_size: int = 128,
        max_iter: int = 200,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        random_state: Any = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Self:
        """Train with Adam and early stopping; keep the weights as numpy arrays."""
        self._validate_params()
        sizes = check_hidden_layer_sizes(self.hidden_layer_sizes)
        X, Y, weight = self._validate_quality_fit(X, y, sample_weight)
        # start at each model's mean quality
        self._fit_perceptron(X, Y, weight, sizes, output_bias=self._mean_logits())
        return self

    def predict(self, X: Any) -> FloatArray:
        """Predicted mean quality of each model, ``[n, K]``."""
        logits = mlp_logits(self._validate_predict(X), self.coefs_, self.intercepts_)
        return self._shape_output(sigmoid(logits))

    def _build_onnx(self, g: GraphBuilder, embedding: str, output: str) -> None:
        g.op("Sigmoid", g.mlp_logits(embedding, self.coefs_, self.intercepts_), output=output)
