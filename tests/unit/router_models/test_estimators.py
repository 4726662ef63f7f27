"""Router estimators learn planted patterns, follow sklearn's contract and match their ONNX."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from router_models.estimators import (
    KNNRouter,
    MatrixFactorizationRouter,
    MLPRouter,
    SWRankingRouter,
)
from router_models.estimators.base import unit_rows
from router_models.export_onnx import load_router_scores, router_session
from router_models.registry import ROUTERS, accepts_query_length, make_router

torch.set_num_threads(1)

# Embedding-only routers; the length-aware one has its own tests (test_length_aware.py).
KINDS = sorted(kind for kind, cls in ROUTERS.items() if not accepts_query_length(cls))
# Small but not toy settings: every fit below takes well under a second on one core.
FAST: dict[str, dict[str, Any]] = {
    "knn": {},
    "mlp": {"hidden_layer_sizes": (32, 16), "max_iter": 60, "learning_rate": 5e-3},
    "mf": {"n_factors": 8, "max_iter": 60, "learning_rate": 1e-2},
    "sw_ranking": {},
}
PARITY_ATOL = 1e-5


def make(kind: str, **params: Any) -> Any:
    return make_router(kind, **{"random_state": 0, **FAST[kind], **params})


def planted(n: int = 300, d: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings around two centres; queries near the second centre need the cloud."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((2, d)))
    group = rng.integers(0, 2, n)
    X = unit_rows(centres[group] + 0.35 * rng.standard_normal((n, d)))
    return X.astype(np.float32), group.astype(np.float64)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = planted(400, seed=0)
    return X[:300], y[:300], X[300:], y[300:]


@pytest.fixture(scope="module")
def fitted(data: tuple[np.ndarray, ...]) -> dict[str, Any]:
    X, y, _, _ = data
    return {kind: make(kind).fit(X, y) for kind in KINDS}


# --- learning ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_learns_planted_pattern(kind: str, fitted: dict[str, Any], data: Any) -> None:
    _, _, X_test, y_test = data
    scores = fitted[kind].predict(X_test)
    assert roc_auc_score(y_test, scores) > 0.95
    # The cloud cluster scores higher on average, by a clear margin.
    assert scores[y_test == 1].mean() - scores[y_test == 0].mean() > 0.2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rate", [0.2, 0.8])
def test_follows_soft_targets(kind: str, rate: float) -> None:
    X, _ = planted(200, seed=1)
    y = np.full(X.shape[0], rate)
    scores = make(kind).fit(X, y).predict(X)
    assert abs(scores.mean() - rate) < 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_sample_weight_shifts_scores(kind: str) -> None:
    # Every query is seen twice, once needing the cloud and once not; weights decide.
    X, _ = planted(150, seed=2)
    X2 = np.vstack([X, X])
    y2 = np.concatenate([np.ones(len(X)), np.zeros(len(X))])
    weight = np.concatenate([np.full(len(X), 3.0), np.ones(len(X))])
    plain = make(kind).fit(X2, y2).predict(X).mean()
    weighted = make(kind).fit(X2, y2, sample_weight=weight).predict(X).mean()
    assert abs(plain - 0.5) < 0.05
    assert abs(weighted - 0.75) < 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_scores_are_probabilities(kind: str, fitted: dict[str, Any]) -> None:
    rng = np.random.default_rng(3)
    X = np.vstack([unit_rows(rng.standard_normal((50, 24))), 10 * rng.standard_normal((5, 24))])
    scores = fitted[kind].predict(X)
    assert scores.shape == (55,)
    assert scores.dtype == np.float64
    assert np.all((scores >= 0.0) & (scores <= 1.0))


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_model(kind: str, data: Any) -> None:
    X, y, X_test, _ = data
    first = make(kind, max_points=100) if kind in {"knn", "sw_ranking"} else make(kind)
    second = clone(first)
    np.testing.assert_array_equal(first.fit(X, y).predict(X_test), second.fit(X, y).predict(X_test))


@pytest.mark.parametrize("kind", ["mlp", "mf"])
def test_seed_changes_trained_model(kind: str, data: Any) -> None:
    X, y, X_test, _ = data
    a = make(kind, random_state=0).fit(X, y).predict(X_test)
    b = make(kind, random_state=1).fit(X, y).predict(X_test)
    assert not np.allclose(a, b)


@pytest.mark.parametrize("kind", ["mlp", "mf"])
def test_early_stopping_keeps_the_best_epoch(kind: str, data: Any) -> None:
    X, y, _, _ = data
    est = make(kind, max_iter=200, n_iter_no_change=3, tol=0.0).fit(X, y)
    assert est.n_iter_ < 200
    assert len(est.validation_scores_) == est.n_iter_
    assert np.argmin(est.validation_scores_) == est.n_iter_ - 1 - 3


# --- sklearn contract ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_clone_and_params(kind: str, fitted: dict[str, Any]) -> None:
    est = fitted[kind]
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    assert not hasattr(copy, "n_features_in_")
    copy.set_params(random_state=7)
    assert copy.get_params()["random_state"] == 7
    assert est.get_params()["random_state"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_unfitted_and_bad_input(kind: str, fitted: dict[str, Any], data: Any) -> None:
    X, y, _, _ = data
    with pytest.raises(NotFittedError):
        make(kind).predict(X)
    with pytest.raises(NotFittedError):
        make(kind).to_onnx()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make(kind).fit(X, y * 2.0)
    with pytest.raises(ValueError, match="non-negative"):
        make(kind).fit(X, y, sample_weight=-np.ones(len(y)))
    with pytest.raises(ValueError, match="features"):
        fitted[kind].predict(X[:, :5])


def test_make_router_rejects_unknown_parameter() -> None:
    with pytest.raises(ValueError, match="bad parameters"):
        make_router("knn", n_trees=3)


# sklearn's generic checks draw arbitrary real targets; these subclasses map them into [0, 1]
# and back, so that the checks exercise the routers' sklearn plumbing unchanged.
class _UnitTargetMixin:
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
        y = np.asarray(y)
        if y.dtype == object:
            with contextlib.suppress(TypeError, ValueError):
                y = y.astype(np.float64)
        if y.dtype.kind not in "fiu" or y.size == 0 or not np.all(np.isfinite(y)):
            return super().fit(X, y, sample_weight)  # type: ignore[misc]  # let the router reject it
        self.lo_, self.hi_ = float(np.min(y)), float(np.max(y))
        unit = (y - self.lo_) / max(self.hi_ - self.lo_, 1e-12)
        return super().fit(X, unit, sample_weight)  # type: ignore[misc]

    def predict(self, X: Any) -> Any:
        scores = super().predict(X)  # type: ignore[misc]
        return self.lo_ + scores * (self.hi_ - self.lo_)


class CheckedKNN(_UnitTargetMixin, KNNRouter):
    pass


class CheckedMLP(_UnitTargetMixin, MLPRouter):
    pass


class CheckedMF(_UnitTargetMixin, MatrixFactorizationRouter):
    pass


class CheckedSW(_UnitTargetMixin, SWRankingRouter):
    pass


def _expected_failures(estimator: Any) -> dict[str, str]:
    if isinstance(estimator, MLPRouter | MatrixFactorizationRouter):
        return {
            "check_sample_weight_equivalence_on_dense_data": (
                "minibatch Adam: repeating a row changes the batches, as for sklearn's SGD models"
            )
        }
    return {}


@parametrize_with_checks(
    [
        CheckedKNN(),
        CheckedMLP(hidden_layer_sizes=(8, 4), max_iter=5, random_state=0),
        CheckedMF(n_factors=4, max_iter=5, random_state=0),
        CheckedSW(),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible(estimator: Any, check: Any) -> None:
    check(estimator)


# --- ONNX parity ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_matches_predict(kind: str, fitted: dict[str, Any], data: Any) -> None:
    est = fitted[kind]
    session = router_session(est.to_onnx(), intra_op_num_threads=1)
    _, _, X_test, _ = data
    for batch in (X_test[:1], X_test[:37], X_test):
        onnx_scores = load_router_scores(session, batch)
        assert onnx_scores.shape == (len(batch),)
        np.testing.assert_allclose(onnx_scores, est.predict(batch), atol=PARITY_ATOL, rtol=0)


@pytest.mark.parametrize(
    "est",
    [
        KNNRouter(n_neighbors=5, weights="similarity"),
        KNNRouter(n_neighbors=500),  # more neighbours than stored points
        SWRankingRouter(similarity="absolute", gamma=50.0),
    ],
    ids=["knn-similarity", "knn-k-above-n", "sw-absolute"],
)
def test_onnx_matches_predict_for_variants(est: Any, data: Any) -> None:
    X, y, X_test, _ = data
    est.fit(X, y)
    np.testing.assert_allclose(
        load_router_scores(est.to_onnx(), X_test), est.predict(X_test), atol=PARITY_ATOL, rtol=0
    )


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_graph_is_small_and_moderate(kind: str, fitted: dict[str, Any]) -> None:
    model = fitted[kind].to_onnx({"k": "v"})
    assert model.opset_import[0].version == 17
    assert model.ByteSize() < 5_000_000
    assert {p.key: p.value for p in model.metadata_props} == {"k": "v"}


def test_to_onnx_rejects_non_string_metadata(fitted: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        fitted["knn"].to_onnx({"dars.embedding_dim": 384})  # type: ignore[dict-item]


# --- router specifics ----------------------------------------------------------------------


def test_knn_caps_and_merges_stored_points(data: Any) -> None:
    X, y, _, _ = data
    assert KNNRouter(max_points=50, random_state=0).fit(X, y).embeddings_.shape == (50, 24)
    doubled = KNNRouter().fit(np.vstack([X, X]), np.concatenate([y, 1 - y]))
    assert doubled.embeddings_.shape[0] == len(X)
    np.testing.assert_allclose(doubled.targets_, 0.5)


def test_knn_uses_nearest_neighbours_only() -> None:
    X = unit_rows(np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99], [0.05, 1.0]]))
    y = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    est = KNNRouter(n_neighbors=2).fit(X, y)
    np.testing.assert_allclose(est.predict([[1.0, 0.02], [0.02, 1.0]]), [1.0, 0.0], atol=1e-9)


def test_sw_far_query_gets_the_global_rate() -> None:
    rng = np.random.default_rng(4)
    X = np.hstack([unit_rows(np.abs(rng.standard_normal((80, 7)))), np.zeros((80, 1))])
    y = rng.uniform(size=80)
    weight = rng.uniform(0.5, 2.0, size=80)
    far = np.eye(8)[[7]]  # orthogonal to every training query
    for similarity in ("relative", "absolute"):
        est = SWRankingRouter(similarity=similarity).fit(X, y, sample_weight=weight)
        np.testing.assert_allclose(est.predict(far), np.average(y, weights=weight), atol=1e-9)
    # A query opposite to all training data: every weight vanishes but the prior's.
    opposite = -np.ones((1, 8))
    est = SWRankingRouter().fit(X, y, sample_weight=weight)
    np.testing.assert_allclose(est.predict(opposite), np.average(y, weights=weight), atol=1e-6)


def test_sw_two_models_is_similarity_weighted_mean() -> None:
    rng = np.random.default_rng(5)
    X = unit_rows(rng.standard_normal((40, 6)))
    y = rng.uniform(size=40)
    est = SWRankingRouter(gamma=10.0, prior_strength=0.5).fit(X, y)
    q = unit_rows(rng.standard_normal((1, 6)))
    cosine = (X @ q.T).ravel()
    w = 10.0 ** (1.0 + cosine / cosine.max())
    prior = 0.5 * 10.0
    expected = (w @ y + prior * y.mean()) / (w.sum() + prior)
    np.testing.assert_allclose(est.predict(q), [expected], rtol=1e-6)


def _multi_model_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three models; model 2 beats model 0 on the second cluster only, model 1 is middling."""
    X, group = planted(600, d=16, seed=seed)
    rng = np.random.default_rng(seed)
    pairs = np.array([rng.choice(3, size=2, replace=False) for _ in range(len(X))])
    quality = np.stack([1.0 - group, np.full(len(X), 0.5), group], axis=1)
    rows = np.arange(len(X))
    diff = quality[rows, pairs[:, 0]] - quality[rows, pairs[:, 1]]
    y = np.clip(0.5 + 0.45 * diff, 0.0, 1.0)
    return X, y, pairs, group


@pytest.mark.parametrize("kind", ["mf", "sw_ranking"])
def test_multi_model_pairs(kind: str) -> None:
    X, y, pairs, group = _multi_model_data(6)
    est = make(kind, n_models=3, strong_index=2, weak_index=0).fit(
        X[:500], y[:500], pairs=pairs[:500]
    )
    scores = est.predict(X[500:])
    assert roc_auc_score(group[500:], scores) > 0.95
    np.testing.assert_allclose(
        load_router_scores(est.to_onnx(), X[500:]), scores, atol=PARITY_ATOL, rtol=0
    )


def test_mf_pairwise_is_antisymmetric() -> None:
    X, y, pairs, _ = _multi_model_data(7)
    est = make("mf").fit(X, y, pairs=pairs)
    ab = est.predict_pairwise(X[:20], 0, 2)
    np.testing.assert_allclose(ab + est.predict_pairwise(X[:20], 2, 0), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        est.predict_pairwise(X[:2], 0, 3)


def test_pairs_are_validated() -> None:
    X, y, pairs, _ = _multi_model_data(8)
    with pytest.raises(ValueError, match="different"):
        SWRankingRouter().fit(X, y, pairs=np.zeros_like(pairs))
    with pytest.raises(ValueError, match="shape"):
        SWRankingRouter().fit(X, y, pairs=pairs[:10])
    with pytest.raises(ValueError, match="n_models"):
        SWRankingRouter(n_models=2).fit(X, y, pairs=pairs)


def test_sw_general_form_is_weighted_bradley_terry_mle() -> None:
    """The MM iteration reaches the optimum of the paper's Eq. 7 (weighted soft-label BCE)."""
    X, y, pairs, _ = _multi_model_data(9)
    weight = np.random.default_rng(9).uniform(0.5, 2.0, size=len(y))
    est = SWRankingRouter(n_models=3, strong_index=2, weak_index=0, max_iter=300)
    est.fit(X, y, sample_weight=weight, pairs=pairs)
    query = X[:1].astype(np.float64)
    cosine = unit_rows(X.astype(np.float64)) @ unit_rows(query).ravel()
    w = weight * 10.0 ** (1.0 + cosine / cosine.max())
    prior = weight * 10.0 / weight.sum()  # prior_strength=1 comparison of weight gamma

    def loss(xi: np.ndarray) -> float:
        z = xi[pairs[:, 0]] - xi[pairs[:, 1]]
        bce = y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)
        return float(np.sum((w + prior) * bce))

    xi = minimize(loss, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    expected = 1.0 / (1.0 + np.exp(-(xi[2] - xi[0])))
    np.testing.assert_allclose(est.predict(query), [expected], atol=1e-6)
