"""Multi-layer perceptron router: two ReLU layers and a sigmoid, trained on soft targets."""

from __future__ import annotations

import itertools
from numbers import Integral, Real
from typing import Any, ClassVar, Self

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval

from router_models.estimators.base import (
    FloatArray,
    GraphBuilder,
    RouterMixin,
    fit_torch,
    float32_values,
    seed_from,
    sigmoid,
)

__all__ = ["MLPRouter"]


class MLPRouter(RouterMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
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
        "alpha": [Interval(Real, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
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
        import torch

        self._validate_params()
        sizes = tuple(self.hidden_layer_sizes)
        if len(sizes) != 2 or not all(isinstance(s, Integral) and s >= 1 for s in sizes):
            raise ValueError("hidden_layer_sizes must be two positive integers")
        X, y, weight = self._validate_fit(X, y, sample_weight)
        seed = seed_from(self.random_state)
        widths = [X.shape[1], *sizes, 1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers: list[torch.nn.Module] = []
            for n_in, n_out in itertools.pairwise(widths):
                layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
            net = torch.nn.Sequential(*layers[:-1])
        inputs = torch.from_numpy(X.astype(np.float32))
        targets = torch.from_numpy(y.astype(np.float32))
        weights = torch.from_numpy(weight.astype(np.float32))

        def loss_sum(rows: Any) -> tuple[torch.Tensor, torch.Tensor]:
            index = torch.from_numpy(rows)
            logits = net(inputs[index]).reshape(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, targets[index], weight=weights[index], reduction="sum"
            )
            return loss, weights[index].sum()

        result = fit_torch(
            net,
            loss_sum,
            X.shape[0],
            seed=seed,
            learning_rate=self.learning_rate,
            alpha=self.alpha,
            batch_size=self.batch_size,
            max_iter=self.max_iter,
            validation_fraction=self.validation_fraction,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
        )
        linear = [m for m in net if isinstance(m, torch.nn.Linear)]
        self.coefs_ = [float32_values(m.weight.detach().numpy().T) for m in linear]
        self.intercepts_ = [float32_values(m.bias.detach().numpy()) for m in linear]
        self.n_iter_ = result.n_iter
        self.loss_curve_ = list(result.train_loss)
        self.validation_scores_ = list(result.validation_loss)
        return self

    def _logits(self, X: Any) -> FloatArray:
        h = self._validate_predict(X)
        for coef, intercept in zip(self.coefs_[:-1], self.intercepts_[:-1], strict=True):
            h = np.maximum(h @ coef + intercept, 0.0)
        out: FloatArray = (h @ self.coefs_[-1] + self.intercepts_[-1]).reshape(-1)
        return out

    def predict(self, X: Any) -> FloatArray:
        """Probability that the strong model is needed, per query."""
        return sigmoid(self._logits(X))

    def _build_onnx(self, g: GraphBuilder, embedding: str, output: str) -> None:
        h = embedding
        last = len(self.coefs_) - 1
        for i, (coef, intercept) in enumerate(zip(self.coefs_, self.intercepts_, strict=True)):
            h = g.op("Add", g.op("MatMul", h, g.const(coef, "W")), g.const(intercept, "b"))
            if i < last:
                h = g.op("Relu", h)
        g.to_vector(g.op("Sigmoid", h), output=output)
