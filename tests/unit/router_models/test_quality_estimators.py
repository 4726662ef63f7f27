"""K-model quality routers: planted per-model skills, masked cells, sklearn checks, ONNX parity."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from router_models.estimators import KNNQualityRouter, MFQualityRouter, MLPQualityRouter
from router_models.estimators.base import unit_rows
from router_models.export_onnx import load_router_quality, router_session
from router_models.registry import QUALITY_ROUTERS, is_quality_router, make_router, router_kind

torch.set_num_threads(1)

KINDS = sorted(QUALITY_ROUTERS)
FAST: dict[str, dict[str, Any]] = {
    "knn_quality": {},
    "mf_quality": {"n_factors": 8, "max_iter": 80, "learning_rate": 1e-2},
    "mlp_quality": {"hidden_layer_sizes": (32, 16), "max_iter": 80, "learning_rate": 5e-3},
}
PARITY_ATOL = 1e-5


def make(kind: str, **params: Any) -> Any:
    return make_router(kind, **{"random_state": 0, **FAST[kind], **params})


def planted(n: int = 400, d: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three topics; model k is good (0.9) on topic k, poor (0.1) elsewhere; 25% cells missing."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((3, d)))
    topic = rng.integers(0, 3, n)
    X = unit_rows(centres[topic] + 0.3 * rng.standard_normal((n, d)))
    Y = np.where(np.arange(3)[None, :] == topic[:, None], 0.9, 0.1)
    Y[rng.random(Y.shape) < 0.25] = np.nan
    return X.astype(np.float32), Y


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, Y = planted(500)
    return X[:400], Y[:400], X[400:], Y[400:]


@pytest.fixture(scope="module")
def fitted(data: Any) -> dict[str, Any]:
    X, Y, _, _ = data
    return {kind: make(kind).fit(X, Y) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_each_router_finds_the_best_model_per_topic(kind: str, fitted: Any, data: Any) -> None:
    _, _, X_test, Y_test = data
    predicted = fitted[kind].predict(X_test)
    assert predicted.shape == (len(X_test), 3)
    assert np.all((predicted >= 0) & (predicted <= 1))
    topic = np.nanargmax(np.nan_to_num(Y_test, nan=0.5), axis=1)
    assert np.mean(predicted.argmax(axis=1) == topic) > 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_matches_predict(kind: str, fitted: Any, data: Any) -> None:
    est = fitted[kind]
    session = router_session(est.to_onnx(), intra_op_num_threads=1)
    _, _, X_test, _ = data
    for batch in (X_test[:1], X_test[:37], X_test):
        quality = load_router_quality(session, batch)
        assert quality.shape == (len(batch), 3)
        np.testing.assert_allclose(quality, est.predict(batch), atol=PARITY_ATOL, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_cells_carry_no_weight(kind: str, data: Any) -> None:
    """Any value in a missing cell is ignored: NaN and a zero weight fit the same router."""
    X, Y, X_test, _ = data
    noise = np.where(np.isnan(Y), np.random.default_rng(1).random(Y.shape), Y)
    weight = np.where(np.isnan(Y), 0.0, 1.0)
    a = make(kind).fit(X, Y).predict(X_test)
    b = make(kind).fit(X, noise, sample_weight=weight).predict(X_test)
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_cell_weights_move_the_prediction(kind: str) -> None:
    """Two conflicting labels of one query: the heavier one wins for that model only."""
    X = unit_rows(np.random.default_rng(0).standard_normal((2, 6))).repeat(20, axis=0)
    Y = np.tile([[1.0, 0.5], [0.0, 0.5]], (20, 1))
    first_heavy = np.tile([[9.0, 1.0], [1.0, 1.0]], (20, 1))
    second_heavy = np.tile([[1.0, 1.0], [9.0, 1.0]], (20, 1))
    extra = {"n_neighbors": 40} if kind == "knn_quality" else {}
    hi = make(kind, **extra).fit(X, Y, sample_weight=first_heavy)
    lo = make(kind, **extra).fit(X, Y, sample_weight=second_heavy)
    assert hi.predict(X[:1])[0, 0] > 0.6 > 0.4 > lo.predict(X[:1])[0, 0]


@pytest.mark.parametrize("kind", KINDS)
def test_unfitted_and_bad_input(kind: str, fitted: Any, data: Any) -> None:
    X, Y, _, _ = data
    with pytest.raises(NotFittedError):
        make(kind).predict(X)
    with pytest.raises(NotFittedError):
        make(kind).to_onnx()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make(kind).fit(X, Y * 2.0)
    with pytest.raises(ValueError, match="non-negative"):
        make(kind).fit(X, Y, sample_weight=-np.ones(len(Y)))
    with pytest.raises(ValueError, match="no observed"):
        make(kind).fit(X, np.column_stack([Y[:, 0], np.full(len(Y), np.nan)]))
    with pytest.raises(ValueError, match="shape"):
        make(kind).fit(X, Y, sample_weight=np.ones((len(Y), 2)))
    with pytest.raises(ValueError, match="features"):
        fitted[kind].predict(X[:, :5])


def test_registry_knows_the_quality_routers() -> None:
    assert KINDS == ["knn_quality", "mf_quality", "mlp_quality"]
    for kind in KINDS:
        est = make_router(kind)
        assert router_kind(est) == kind and is_quality_router(est)
    assert not is_quality_router(make_router("knn"))


# sklearn's generic checks draw arbitrary real targets; map them into [0, 1] and back.
class _UnitTargetMixin:
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
        y = np.asarray(y) if y is not None else y
        if y is not None and y.dtype == object:
            with contextlib.suppress(TypeError, ValueError):
                y = y.astype(np.float64)
        if y is None or y.dtype.kind not in "fiu" or y.size == 0 or not np.all(np.isfinite(y)):
            return super().fit(X, y, sample_weight)  # type: ignore[misc]
        self.lo_, self.hi_ = float(np.min(y)), float(np.max(y))
        unit = (y - self.lo_) / max(self.hi_ - self.lo_, 1e-12)
        return super().fit(X, unit, sample_weight)  # type: ignore[misc]

    def predict(self, X: Any) -> Any:
        quality = super().predict(X)  # type: ignore[misc]  # raises NotFittedError first
        return self.lo_ + quality * (self.hi_ - self.lo_)


class CheckedKNNQuality(_UnitTargetMixin, KNNQualityRouter):
    pass


class CheckedMFQuality(_UnitTargetMixin, MFQualityRouter):
    pass


class CheckedMLPQuality(_UnitTargetMixin, MLPQualityRouter):
    pass


def _expected_failures(estimator: Any) -> dict[str, str]:
    if isinstance(estimator, MLPQualityRouter | MFQualityRouter):
        return {
            "check_sample_weight_equivalence_on_dense_data": (
                "minibatch Adam: repeating a row changes the batches, as for sklearn's SGD models"
            )
        }
    return {}


@parametrize_with_checks(
    [
        CheckedKNNQuality(),
        CheckedMFQuality(n_factors=4, max_iter=5, random_state=0),
        CheckedMLPQuality(hidden_layer_sizes=(8, 4), max_iter=5, random_state=0),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible(estimator: Any, check: Any) -> None:
    check(estimator)
