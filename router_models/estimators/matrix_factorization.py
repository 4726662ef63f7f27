"""Matrix-factorisation router: a bilinear model-by-query score, compared Bradley-Terry style.

As in RouteLLM's ``MFModel``: a query embedding ``q`` is projected (``P q``), multiplied
element-wise with the unit-norm latent vector ``v_m`` of a model, and read out by ``w``:
``s(m, q) = w . (v_m * P q) + b_m``. The chance that model ``a`` beats model ``b`` on ``q`` is
``sigmoid(s(a, q) - s(b, q))``. Unlike RouteLLM, the per-model bias ``b_m`` is optional (on by
default): it carries the overall gap between two models, which otherwise has to hide in the
direction of the mean embedding. With a single edge/cloud pair this is a low-rank logistic
model; with several model pairs (``pairs``) the shared projection learns from all of them.
For a fixed strong/weak pair the score collapses to ``sigmoid(q . beta + c)``, which is what
the ONNX file computes.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar, Self

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval

from router_models.estimators.base import (
    TORCH_PARAMETER_CONSTRAINTS,
    FloatArray,
    GraphBuilder,
    TorchRouterMixin,
    check_pairs,
    float32_values,
    seed_from,
    sigmoid,
    torch_seeded,
    unit_rows,
)

__all__ = ["MatrixFactorizationRouter"]


class MatrixFactorizationRouter(TorchRouterMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """RouteLLM-style bilinear router, fitted with weighted soft-target BCE on model pairs.

    Parameters
    ----------
    n_factors : int, default=64
        Latent dimension of the projection and the model vectors.
    fit_bias : bool, default=True
        Learn a per-model offset ``b_m``.
    n_models : int or None, default=None
        Number of models; ``None`` infers it from ``pairs`` and the two indices below.
    strong_index, weak_index : int, default=1, 0
        Models compared by ``predict`` and in the ONNX file: the score is the chance that
        ``strong_index`` beats ``weak_index``.
    alpha : float, default=1e-5
        L2 penalty (Adam weight decay).
    learning_rate : float, default=3e-3
        Adam step size.
    batch_size : int, default=256
        Rows per step.
    max_iter : int, default=100
        Most epochs.
    validation_fraction : float, default=0.1
        Seeded share of rows held out for early stopping.
    n_iter_no_change : int, default=10
        Epochs without improvement before stopping; the best weights are kept.
    tol : float, default=1e-4
        Smallest validation-loss improvement that counts.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, split and shuffling.

    Attributes
    ----------
    projection_ : ndarray of shape (n_factors, n_features_in_)
        ``P``.
    model_embeddings_ : ndarray of shape (n_models_, n_factors)
        Unit-norm ``v_m``.
    classifier_ : ndarray of shape (n_factors,)
        ``w``.
    model_bias_ : ndarray of shape (n_models_,)
        ``b_m`` (zeros when ``fit_bias=False``).
    n_models_ : int
        Number of models.
    n_iter_, loss_curve_, validation_scores_
        As in :class:`~router_models.estimators.mlp.MLPRouter`.
    n_features_in_ : int
        Embedding dimension.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_factors": [Interval(Integral, 1, None, closed="left")],
        "fit_bias": ["boolean"],
        "n_models": [Interval(Integral, 2, None, closed="left"), None],
        "strong_index": [Interval(Integral, 0, None, closed="left")],
        "weak_index": [Interval(Integral, 0, None, closed="left")],
        **TORCH_PARAMETER_CONSTRAINTS,
    }

    def __init__(
        self,
        *,
        n_factors: int = 64,
        fit_bias: bool = True,
        n_models: int | None = None,
        strong_index: int = 1,
        weak_index: int = 0,
        alpha: float = 1e-5,
        learning_rate: float = 3e-3,
        batch_size: int = 256,
        max_iter: int = 100,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        random_state: Any = None,
    ) -> None:
        self.n_factors = n_factors
        self.fit_bias = fit_bias
        self.n_models = n_models
        self.strong_index = strong_index
        self.weak_index = weak_index
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: Any, y: Any, sample_weight: Any = None, *, pairs: Any = None) -> Self:
        """Fit on comparisons: in row ``i``, ``pairs[i, 0]`` beats ``pairs[i, 1]`` w.p. ``y[i]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query embeddings (a query may appear in several rows, one per pair).
        y : array-like of shape (n_samples,)
            Soft targets in ``[0, 1]``.
        sample_weight : array-like of shape (n_samples,), optional
            Row weights.
        pairs : array-like of int, shape (n_samples, 2), optional
            Model indices per row; ``None`` means ``(strong_index, weak_index)`` everywhere,
            so that ``y`` is the probability that the strong model is needed.
        """
        import torch

        self._validate_params()
        X, y, weight = self._validate_fit(X, y, sample_weight)
        index, self.n_models_ = check_pairs(
            pairs, X.shape[0], self.n_models, self.strong_index, self.weak_index
        )
        seed = seed_from(self.random_state)
        with torch_seeded(seed):
            projection = torch.nn.Linear(X.shape[1], self.n_factors, bias=False)
            models = torch.nn.Embedding(self.n_models_, self.n_factors)
            classifier = torch.nn.Linear(self.n_factors, 1, bias=False)
        bias = torch.nn.Embedding(self.n_models_, 1)
        torch.nn.init.zeros_(bias.weight)
        bias.weight.requires_grad_(self.fit_bias)
        net = torch.nn.ModuleDict(
            {"projection": projection, "models": models, "classifier": classifier, "bias": bias}
        )
        model_index = torch.from_numpy(index.astype(np.int64))

        def score(projected: torch.Tensor, model: torch.Tensor) -> torch.Tensor:
            latent = torch.nn.functional.normalize(models(model), p=2.0, dim=1)
            logit: torch.Tensor = classifier(latent * projected) + bias(model)
            return logit.reshape(-1)

        def logits(x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
            projected = projection(x)
            pair = model_index[at]
            return score(projected, pair[:, 0]) - score(projected, pair[:, 1])

        self._fit_bce(net, logits, X, y, weight, seed=seed)
        with torch.no_grad():
            self.projection_ = float32_values(projection.weight.numpy())
            latent = models.weight.numpy().astype(np.float64)
            self.model_embeddings_ = float32_values(unit_rows(latent))
            self.classifier_ = float32_values(classifier.weight.numpy().reshape(-1))
            self.model_bias_ = float32_values(bias.weight.numpy().reshape(-1))
        return self

    def _model_scores(self, X: FloatArray) -> FloatArray:
        """``s(m, q)`` for every query (rows) and model (columns)."""
        projected = X @ self.projection_.T
        out: FloatArray = (
            projected[:, None, :] * self.model_embeddings_[None, :, :]
        ) @ self.classifier_ + self.model_bias_
        return out

    def predict_pairwise(self, X: Any, model_a: int, model_b: int) -> FloatArray:
        """Probability that ``model_a`` beats ``model_b`` on each query."""
        X = self._validate_predict(X)
        for model in (model_a, model_b):
            if not 0 <= model < self.n_models_:
                raise ValueError(f"model index {model} is outside 0..{self.n_models_ - 1}")
        scores = self._model_scores(X)
        return sigmoid(scores[:, model_a] - scores[:, model_b])

    def predict(self, X: Any) -> FloatArray:
        """Probability that the strong model is needed (beats the weak one), per query."""
        return self.predict_pairwise(X, self.strong_index, self.weak_index)

    def _build_onnx(self, g: GraphBuilder, embedding: str, output: str) -> None:
        s, w = self.strong_index, self.weak_index
        direction = self.classifier_ * (self.model_embeddings_[s] - self.model_embeddings_[w])
        beta = self.projection_.T @ direction
        offset = self.model_bias_[s] - self.model_bias_[w]
        logit = g.op(
            "Add", g.op("MatMul", embedding, g.const(beta[:, None], "beta")), g.const(offset)
        )
        g.to_vector(g.op("Sigmoid", logit), output=output)
