"""What routers over K models share: masked targets, per-cell weights, the v2 ONNX envelope.

A quality router's ``predict`` returns, per query embedding, the predicted mean quality in
``[0, 1]`` of each of K models (``[n, K]``), so the service can pick the model of highest
utility ``q_k - lambda * c_k``. Training targets are per-cell means with missing cells as NaN
(a model that never answered a query); a missing cell gets weight 0, so every loss is masked.
Per-cell weights (``sample_weight`` of shape ``[n, K]``) typically come from observation
counts: the soft-target cross-entropy of a mean over n binary outcomes, weighted by n, is the
sum of the n outcomes' cross-entropies.

Following scikit-learn's multi-output convention, a router fitted on a 1-D target (K = 1)
predicts a 1-D array; the ONNX file always has ``quality`` ``[batch, K]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper
from sklearn.utils.validation import check_is_fitted, validate_data

from router_models.contract import INPUT_NAME, QUALITY_OUTPUT_NAME
from router_models.estimators.base import FloatArray, GraphBuilder, RouterMixin, router_model

__all__ = ["QualityRouterMixin", "check_quality_targets"]


def check_quality_targets(
    Y: Any, sample_weight: Any, n_samples: int
) -> tuple[FloatArray, FloatArray, bool]:
    """``(Y [n, K] with NaN -> 0, cell weights [n, K] with 0 where missing, was_1d)``.

    Raises ``ValueError`` for targets outside ``[0, 1]``, infinite targets, negative or
    non-finite weights, a wrong shape, or a model (column) without any weighted cell.
    """
    if Y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    raw = np.asarray(Y, dtype=np.float64)
    was_1d = raw.ndim == 1
    targets = raw.reshape(-1, 1) if was_1d else raw
    if targets.ndim != 2 or targets.shape[0] != n_samples or targets.shape[1] < 1:
        raise ValueError(f"y must have shape ({n_samples},) or ({n_samples}, K)")
    observed = ~np.isnan(targets)
    if np.any(np.isinf(targets)):
        raise ValueError("y must be finite or NaN (a missing cell)")
    if np.any(targets[observed] < 0.0) or np.any(targets[observed] > 1.0):
        raise ValueError("y must hold mean qualities in [0, 1] (NaN for a missing cell)")
    if sample_weight is None:
        weight = np.ones_like(targets)
    else:
        weight = np.asarray(sample_weight, dtype=np.float64)
        if weight.ndim == 1 and weight.shape == (n_samples,):
            weight = np.repeat(weight[:, None], targets.shape[1], axis=1)
        if weight.shape != targets.shape:
            raise ValueError(f"sample_weight must have shape ({n_samples},) or {targets.shape}")
        if not np.all(np.isfinite(weight)) or np.any(weight < 0.0):
            raise ValueError("sample_weight must be finite and non-negative")
    weight = np.where(observed, weight, 0.0)
    if weight.sum() <= 0.0:
        raise ValueError("Sample weights must contain at least one non-zero number")
    empty = np.flatnonzero(weight.sum(axis=0) <= 0.0)
    if empty.size:
        raise ValueError(f"model column(s) {empty.tolist()} have no observed, weighted cell")
    return np.where(observed, targets, 0.0), weight, was_1d


class QualityRouterMixin(RouterMixin):
    """Input checks and contract-v2 ONNX export of the routers that predict K qualities.

    Subclasses implement ``_build_onnx(builder, embedding, output)`` with a ``[batch, K]``
    float32 output and set ``n_models_`` in ``fit``.
    """

    n_models_: int
    column_means_: FloatArray
    _fit_1d: bool

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _validate_quality_fit(
        self, X: Any, Y: Any, sample_weight: Any
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Check ``X`` and the masked targets; set ``n_models_`` and ``column_means_``."""
        if Y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None"
            )
        X = validate_data(self, X, dtype=np.float64, reset=True)
        Y, weight, self._fit_1d = check_quality_targets(Y, sample_weight, X.shape[0])
        self.n_models_ = int(Y.shape[1])
        self.column_means_ = np.sum(weight * Y, axis=0) / np.sum(weight, axis=0)
        return X, Y, weight

    def _mean_logits(self) -> FloatArray:
        """Logit of each model's (clipped) mean quality: the initial output bias of torch fits."""
        means = np.clip(self.column_means_, 1e-3, 1.0 - 1e-3)
        out: FloatArray = np.log(means / (1.0 - means))
        return out

    def _shape_output(self, quality: FloatArray) -> FloatArray:
        """``[n, K]``, or ``[n]`` for a router fitted on a 1-D target."""
        out: FloatArray = quality[:, 0] if self._fit_1d else quality
        return out

    def to_onnx(self, metadata: Mapping[str, str] | None = None) -> onnx.ModelProto:
        """The fitted router as a contract-v2 ONNX model: ``embedding`` to ``quality`` [batch, K].

        ``metadata`` comes from ``export_onnx.build_quality_metadata``.
        """
        check_is_fitted(self)
        builder = GraphBuilder()
        self._build_onnx(builder, INPUT_NAME, QUALITY_OUTPUT_NAME)
        dim = int(self.n_features_in_)  # type: ignore[attr-defined]
        output = helper.make_tensor_value_info(
            QUALITY_OUTPUT_NAME, TensorProto.FLOAT, ["batch", self.n_models_]
        )
        return router_model(self, builder, self._onnx_inputs(dim), [output], metadata)
