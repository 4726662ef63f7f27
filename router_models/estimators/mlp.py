"""Multi-layer perceptron router: two ReLU layers and a sigmoid, trained on soft targets."""

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

__all__ = ["MLPRouter"]


class MLPRouter(TorchRouterMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Two-hidden-layer perceptron on the embedding, trained with weighted soft-target BCE.

    Parameters
    ----------
    hidden_layer_sizes : tuple of two int, default=(128, 64)
        Widths of the two ReLU layers.
    alpha : float, default=1e-4
        L2 penalty (Adam weight decay).
    learning_rate : float, default=1e-3
        Adam step size.
    batch_size : int, default=128
        Rows per step.
    max_iter : int, default=200
        Most epochs.
    validation_fraction : float, default=0.1
        Seeded share of rows held out for early stopping (none below 10 rows).
    n_iter_no_change : int, default=10
        Epochs without a validation improvement larger than ``tol`` before stopping; the
        best epoch's weights are kept.
    tol : float, default=1e-4
        Smallest validation-loss improvement that counts.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, split and shuffling; fixed seed, same model.

    Attributes
    ----------
    coefs_ : list of ndarray
        Weight matrices ``[n_in, n_out]`` of the three layers.
    intercepts_ : list of ndarray
        Their biases.
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Training loss per epoch.
    validation_scores_ : list of float
        Validation loss per epoch (training loss when there is no split).
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
        X, y, weight = self._validate_fit(X, y, sample_weight)
        self._fit_perceptron(X, y, weight, sizes)
        return self

    def _logits(self, X: Any) -> FloatArray:
        return mlp_logits(self._validate_predict(X), self.coefs_, self.intercepts_).reshape(-1)

    def predict(self, X: Any) -> FloatArray:
        """Probability that the strong model is needed, per query."""
        return sigmoid(self._logits(X))

    def _build_onnx(self, g: GraphBuilder, embedding: str, output: str) -> None:
        logits = g.mlp_logits(embedding, self.coefs_, self.intercepts_)
        g.to_vector(g.op("Sigmoid", logits), output=output)
