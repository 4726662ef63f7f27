"""Matrix-factorisation quality router: a projected query embedding times learned model vectors.

EmbedLLM / RouteLLM-style bilinear model over K models: ``q_k(x) = sigmoid(v_k . (P x) + b_k)``
with a shared projection ``P`` (``n_factors x dim``), one learned embedding ``v_k`` and offset
``b_k`` per model. Unlike the pairwise :class:`MatrixFactorizationRouter`, it predicts each
model's mean quality directly (masked, weighted soft-target cross-entropy on the observed
cells), so a model that answered few queries still shares the projection with the others.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar, Self

from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval

from router_models.estimators.base import (
    TORCH_PARAMETER_CONSTRAINTS,
    FloatArray,
    GraphBuilder,
    TorchRouterMixin,
    float32_values,
    seed_from,
    sigmoid,
    torch_seeded,
)
from router_models.estimators.quality_base import QualityRouterMixin

__all__ = ["MFQualityRouter"]


class MFQualityRouter(QualityRouterMixin, TorchRouterMixin, RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Bilinear query-by-model quality router over K models.

    Parameters
    ----------
    n_factors : int, default=32
        Latent dimension of the projection and the model embeddings.
    alpha : float, default=1e-5
        L2 penalty (Adam weight decay).
    learning_rate : float, default=3e-3
        Adam step size.
    batch_size : int, default=256
        Rows per step.
    max_iter : int, default=100
        Most epochs.
    validation_fraction : float, default=0.1
        Seeded share of rows held out for early stopping (none below 10 rows).
    n_iter_no_change : int, default=10
        Epochs without improvement before stopping; the best epoch's weights are kept.
    tol : float, default=1e-4
        Smallest validation-loss improvement that counts.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, split and shuffling.

    Attributes
    ----------
    projection_ : ndarray of shape (n_features_in_, n_factors)
        ``P`` transposed.
    model_embeddings_ : ndarray of shape (n_models_, n_factors)
        ``v_k``.
    model_bias_ : ndarray of shape (n_models_,)
        ``b_k``.
    n_models_ : int
        K.
    n_iter_, loss_curve_, validation_scores_
        As for the other torch routers.
    n_features_in_ : int
        Embedding dimension.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_factors": [Interval(Integral, 1, None, closed="left")],
        **TORCH_PARAMETER_CONSTRAINTS,
    }

    def __init__(
        self,
        *,
        n_factors: int = 32,
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
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Self:
        """Masked, weighted soft-target cross-entropy with Adam and early stopping."""
        import torch

        self._validate_params()
        X, Y, weight = self._validate_quality_fit(X, y, sample_weight)
        seed = seed_from(self.random_state)
        with torch_seeded(seed):
            projection = torch.nn.Linear(X.shape[1], int(self.n_factors), bias=False)
            models = torch.nn.Linear(int(self.n_factors), self.n_models_)
        with torch.no_grad():  # start at each model's mean quality
            models.bias.copy_(torch.from_numpy(self._mean_logits()))
        net = torch.nn.Sequential(projection, models)
        self._fit_bce(net, lambda x, _: net(x), X, Y, weight, seed=seed)
        self.projection_ = float32_values(projection.weight.detach().numpy().T)
        self.model_embeddings_ = float32_values(models.weight.detach().numpy())
        self.model_bias_ = float32_values(models.bias.detach().numpy())
        return self

    def predict(self, X: Any) -> FloatArray:
        """Predicted mean quality of each model, ``[n, K]``."""
        X = self._validate_predict(X)
        logits = (X @ self.projection_) @ self.model_embeddings_.T + self.model_bias_
        return self._shape_output(sigmoid(logits))

    def _build_onnx(self, g: GraphBuilder, embedding: str, output: str) -> None:
        latent = g.op("MatMul", embedding, g.const(self.projection_, "P"))
        logits = g.op(
            "Add",
            g.op("MatMul", latent, g.const(self.model_embeddings_.T, "V")),
            g.const(self.model_bias_, "b"),
        )
        g.op("Sigmoid", logits, output=output)
