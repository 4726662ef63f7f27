"""The length-aware router: beats its base and length alone on a planted pattern, matches its
two-input ONNX graph, follows sklearn's parameter conventions, and runs through the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from app.scoring import load_router_model
from router_models.contract import (
    DEFAULT_EMBEDDING_MODEL_ID,
    INPUT_NAME,
    LENGTH_INPUT_NAME,
    OUTPUT_NAME,
    query_lengths,
)
from router_models.estimators import LengthAwareRouter
from router_models.estimators.base import unit_rows
from router_models.estimators.length_aware import fit_logistic
from router_models.evaluate import truth_from_observations
from router_models.export_onnx import (
    RouterExportError,
    check_router_model,
    load_router_scores,
    router_session,
)
from router_models.features import Embedder
from router_models.observations import Observation
from router_models.pipeline import build_labels, evaluate_models, export_router, train_router
from router_models.registry import make_router, router_kind

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

torch.set_num_threads(1)

PARITY_ATOL = 1e-5
BASES = ["sw_ranking", "knn"]


def planted(n: int, seed: int, d: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings around two centres and log-uniform lengths; the need for the cloud rises
    with both the second centre and the length (additively in the logit)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(np.random.default_rng(99).standard_normal((2, d)))
    group = rng.integers(0, 2, n)
    X = unit_rows(centres[group] + 0.35 * rng.standard_normal((n, d))).astype(np.float32)
    log_length = rng.uniform(np.log(20.0), np.log(3000.0), n)
    standard = (log_length - log_length.mean()) / log_length.std()
    need = 1.0 / (1.0 + np.exp(-(2.5 * (2 * group - 1) + 2.5 * standard)))
    return X, np.round(np.exp(log_length)), need


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    X, length, need = planted(500, seed=0)
    X_test, length_test, need_test = planted(300, seed=1)
    return {
        "X": X,
        "length": length,
        "y": need,
        "X_test": X_test,
        "length_test": length_test,
        "truth": (need_test > 0.5).astype(int),
    }


@pytest.fixture(scope="module")
def fitted(data: dict[str, np.ndarray]) -> dict[str, LengthAwareRouter]:
    return {
        base: LengthAwareRouter(base_router=base).fit(
            data["X"], data["y"], query_length=data["length"]
        )
        for base in BASES
    }


# --- learning ------------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
def test_beats_its_base_and_length_alone(
    base: str, fitted: dict[str, LengthAwareRouter], data: dict[str, np.ndarray]
) -> None:
    router = fitted[base]
    stacked = router.predict(data["X_test"], query_length=data["length_test"])
    alone = make_router(base, random_state=0).fit(data["X"], data["y"]).predict(data["X_test"])

    auc = {
        "stacked": roc_auc_score(data["truth"], stacked),
        "base": roc_auc_score(data["truth"], alone),
        "length": roc_auc_score(data["truth"], data["length_test"]),
    }

    assert auc["stacked"] > max(auc["base"], auc["length"]) + 0.05, auc
    assert auc["stacked"] > 0.95, auc
    assert np.all((stacked >= 0.0) & (stacked <= 1.0))
    assert router.coef_[0] > 0 and router.coef_[1] > 0  # both signals point the right way


def test_fit_logistic_recovers_planted_coefficients() -> None:
    rng = np.random.default_rng(3)
    features = np.column_stack([rng.standard_normal((4000, 2)), np.ones(4000)])
    truth = np.array([1.5, -0.7, 0.3])
    y = 1.0 / (1.0 + np.exp(-(features @ truth)))

    theta, steps = fit_logistic(features, y, np.ones(4000), alpha=0.0)

    np.testing.assert_allclose(theta, truth, atol=1e-6)
    assert steps < 20
    shrunk, _ = fit_logistic(features, y, np.ones(4000), alpha=1.0)
    assert np.all(np.abs(shrunk[:2]) < np.abs(theta[:2]))


def test_length_only_matters_through_the_head(data: dict[str, np.ndarray]) -> None:
    router = LengthAwareRouter(base_router="knn").fit(
        data["X"], data["y"], query_length=data["length"]
    )
    X = np.repeat(data["X_test"][:1], 3, axis=0)

    scores = router.predict(X, query_length=[10.0, 300.0, 4000.0])

    assert scores[0] < scores[1] < scores[2]


# --- ONNX parity ---------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
def test_onnx_matches_predict(
    base: str, fitted: dict[str, LengthAwareRouter], data: dict[str, np.ndarray]
) -> None:
    router = fitted[base]
    model = router.to_onnx({"k": "v"})
    session = router_session(model, intra_op_num_threads=1)

    assert [i.name for i in model.graph.input] == [INPUT_NAME, LENGTH_INPUT_NAME]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    check_router_model(model, require_metadata=False)
    for n in (1, 37, len(data["X_test"])):
        X, length = data["X_test"][:n], data["length_test"][:n]
        onnx_scores = load_router_scores(session, X, query_length=length)
        assert onnx_scores.shape == (n,)
        np.testing.assert_allclose(
            onnx_scores, router.predict(X, query_length=length), atol=PARITY_ATOL, rtol=0
        )


def test_onnx_needs_the_length(fitted: dict[str, LengthAwareRouter]) -> None:
    session = router_session(fitted["knn"].to_onnx(), intra_op_num_threads=1)
    with pytest.raises(ValueError, match="needs 'query_length'"):
        load_router_scores(session, np.zeros((1, 16), dtype=np.float32))


def test_an_unknown_extra_input_breaks_the_contract() -> None:
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", [INPUT_NAME], [OUTPUT_NAME], axes=[1], keepdims=0)],
        "extra",
        [
            helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("n_tokens", TensorProto.FLOAT, ["batch"]),
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(RouterExportError, match=r"inputs \['embedding', 'n_tokens'\]"):
        check_router_model(model, require_metadata=False)
    model.graph.input[1].name = LENGTH_INPUT_NAME
    model.graph.input[1].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(RouterExportError, match="float32"):
        check_router_model(model, require_metadata=False)


# --- sklearn conventions -------------------------------------------------------------------


def test_clone_and_params(fitted: dict[str, LengthAwareRouter]) -> None:
    router = LengthAwareRouter(
        base_router="knn", base_params={"n_neighbors": 5}, validation_fraction=0.4, random_state=7
    )
    params = router.get_params()

    assert params == {
        "alpha": 1e-3,
        "base_params": {"n_neighbors": 5},
        "base_router": "knn",
        "random_state": 7,
        "validation_fraction": 0.4,
    }
    copy = clone(fitted["knn"])
    assert copy.get_params() == fitted["knn"].get_params()
    assert not hasattr(copy, "base_")
    assert router_kind(router) == "length_aware"


def test_same_seed_same_model_other_seed_other_split(data: dict[str, np.ndarray]) -> None:
    def fit(seed: int) -> np.ndarray:
        router = LengthAwareRouter(base_router="knn", random_state=seed)
        router.fit(data["X"], data["y"], query_length=data["length"])
        return router.predict(data["X_test"], query_length=data["length_test"])

    np.testing.assert_array_equal(fit(3), fit(3))
    assert not np.array_equal(fit(3), fit(4))


def test_base_params_reach_the_base(data: dict[str, np.ndarray]) -> None:
    router = LengthAwareRouter(base_router="knn", base_params={"n_neighbors": 3, "max_points": 50})
    router.fit(data["X"], data["y"], query_length=data["length"])

    assert router.base_.n_neighbors == 3
    assert router.base_.embeddings_.shape[0] == 50
    assert router.base_.random_state is not None  # seeded from the router's random_state


def test_bad_input(fitted: dict[str, LengthAwareRouter], data: dict[str, np.ndarray]) -> None:
    X, y, length = data["X"], data["y"], data["length"]
    with pytest.raises(NotFittedError):
        LengthAwareRouter().predict(X, query_length=length)
    with pytest.raises(TypeError):
        LengthAwareRouter().fit(X, y)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="shape"):
        LengthAwareRouter().fit(X, y, query_length=length[:-1])
    with pytest.raises(ValueError, match="non-negative"):
        LengthAwareRouter().fit(X, y, query_length=-length)
    with pytest.raises(ValueError, match="unknown router"):
        LengthAwareRouter(base_router="bert").fit(X, y, query_length=length)
    with pytest.raises(ValueError, match="cannot be split"):
        LengthAwareRouter().fit(X[:1], y[:1], query_length=length[:1])
    with pytest.raises(ValueError, match="features"):
        fitted["knn"].predict(X[:, :5], query_length=length)


# --- pipeline: labels -> train -> evaluate -> export -> service load -----------------------

WEAK, STRONG = "edge-small", "cloud-large"
CITIES = ["France", "Japan", "Italy", "Spain", "Canada", "Egypt", "Kenya", "Chile", "Peru",
          "Norway", "Greece", "India", "Brazil", "Mexico", "Poland", "Sweden"]  # fmt: skip


def _rows() -> list[Observation]:
    """Short capital questions both models answer; long word problems only the strong one."""
    queries = []
    for i, city in enumerate(CITIES):
        queries.append((f"city-{i:02d}", f"What is the capital of {city}?", (5, 5)))
        story = (
            f"Tom has {3 + i} boxes with {7 + 2 * i} apples each. He gives {2 + i % 5} apples "
            f"to each of his {2 + i % 3} neighbours and sells a third of the rest at the market "
            f"in {city}. How many apples does Tom have left at the end of the day?"
        )
        queries.append((f"math-{i:02d}", story, (1, 5)))
    rows = []
    for n, (query_id, prompt, (k_weak, k_strong)) in enumerate(queries):
        split = "test" if (n // 2) % 4 == 3 else "train"
        for model, k in ((WEAK, k_weak), (STRONG, k_strong)):
            for variant in range(2):
                for sample in range(3):
                    rows.append(
                        Observation(
                            dataset="mix", split=split, query_id=query_id, prompt=prompt,
                            model=model, score=float((variant * 3 + sample + n) % 6 < k),
                            variant_id=variant, sample_id=sample, response=None, meta={},
                        )
                    )  # fmt: skip
    return rows


def test_pipeline_round_trip(encoder: SentenceTransformer, tmp_path: Path) -> None:
    embed = Embedder(encoder=encoder, cache_dir=tmp_path / "cache", progress=False, device="cpu")
    rows = _rows()
    train = [o for o in rows if o.split == "train"]
    truth = truth_from_observations([o for o in rows if o.split == "test"], WEAK, STRONG)
    labels = build_labels(train, weak=WEAK, strong=STRONG, scheme="dars", seed=0)

    params: dict[str, Any] = {"base_router": "knn", "base_params": {"n_neighbors": 3}}
    router = train_router(labels, embed, kind="length_aware", params=params, seed=0)
    reports = {r.name: r for r in evaluate_models(truth, embed, routers={"la": router})}
    path = export_router(router, tmp_path / "router.onnx", calibration_prompts=truth.prompts,
                         embedder=embed, cloud_share=0.5)  # fmt: skip

    assert router.params["random_state"] == 0
    assert reports["la"].apgr == pytest.approx(reports["oracle"].apgr)
    prompts = list(truth.prompts)
    X = embed(prompts)
    expected = router.predict_prompts(prompts, X)
    np.testing.assert_allclose(
        load_router_scores(path, X, query_length=query_lengths(prompts)), expected, atol=1e-5
    )
    served = load_router_model(
        path, expected_embedding_model=DEFAULT_EMBEDDING_MODEL_ID, expected_dim=X.shape[1],
        providers="cpu", intra_op_threads=1,
    )  # fmt: skip
    assert served.uses_query_length
    assert served.router_kind == "length_aware"
    np.testing.assert_allclose(served.score(X, query_lengths(prompts)), expected, atol=1e-5)
    onnx_reports = evaluate_models(truth, embed, onnx_files={"la": path}, baselines=False)
    assert onnx_reports[0].apgr == pytest.approx(reports["la"].apgr)
    with pytest.raises(ValueError, match="needs query_length"):
        router.predict(X)
    assert onnx.load(str(path)).graph.input[1].name == LENGTH_INPUT_NAME
